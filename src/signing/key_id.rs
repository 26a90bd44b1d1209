//! The `keyId` of an OCI signature.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;

/// Prefix of a session-token key id (`ST$<token>`, no separator).
const SESSION_PREFIX: &str = "ST$";

/// The `keyId` an OCI signature names: an API key (`<tenancy>/<user>/<fingerprint>`)
/// or a session token (`ST$<token>`).
///
/// A session-token key id carries a bearer credential, so `Debug` shows it as
/// `ST$[redacted]` and the raw value is reachable only through
/// [`KeyId::expose_secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyId {
    value: SecretString,
    session: bool,
}

fn check_part(part: &str, what: &'static str) -> Result<()> {
    if part.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidKeyId,
            format!("{what} is empty"),
        ));
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(Error::new(
            ErrorKind::InvalidKeyId,
            format!("{what} contains a character not allowed in a key id"),
        ));
    }
    Ok(())
}

impl KeyId {
    /// An API-key id: `<tenancy ocid>/<user ocid>/<key fingerprint>`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKeyId`] if a part is empty, contains `/` (tenancy and
    /// user), a quote, a backslash, white space or a non-ASCII character.
    pub fn api_key(tenancy: &str, user: &str, fingerprint: &str) -> Result<Self> {
        check_part(tenancy, "tenancy ocid")?;
        check_part(user, "user ocid")?;
        check_part(fingerprint, "key fingerprint")?;
        if tenancy.contains('/') || user.contains('/') {
            return Err(Error::new(
                ErrorKind::InvalidKeyId,
                "tenancy or user ocid contains '/'",
            ));
        }
        Ok(Self {
            value: SecretString::new(format!("{tenancy}/{user}/{fingerprint}")),
            session: false,
        })
    }

    /// A session-token id: `ST$<token>`. Surrounding white space (such as the newline
    /// at the end of a token file) is trimmed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKeyId`] if the token is empty or contains a quote,
    /// backslash, inner white space or a non-ASCII character.
    pub fn session_token(token: &str) -> Result<Self> {
        let token = token.trim();
        check_part(token, "session token")?;
        Ok(Self {
            value: SecretString::new(format!("{SESSION_PREFIX}{token}")),
            session: true,
        })
    }

    /// Parses a key id as it appears in a signature: `ST$...` or `a/b/c`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKeyId`] if it is neither form.
    pub fn parse(key_id: &str) -> Result<Self> {
        if let Some(token) = key_id.strip_prefix(SESSION_PREFIX) {
            if token.trim() != token {
                return Err(Error::new(
                    ErrorKind::InvalidKeyId,
                    "session token key id has surrounding white space",
                ));
            }
            return Self::session_token(token);
        }
        let mut parts = key_id.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(u), Some(f)) => Self::api_key(t, u, f),
            _ => Err(Error::new(
                ErrorKind::InvalidKeyId,
                "key id is neither 'ST$<token>' nor '<tenancy>/<user>/<fingerprint>'",
            )),
        }
    }

    /// Whether this is a session-token (`ST$`) key id.
    #[must_use]
    pub fn is_session_token(&self) -> bool {
        self.session
    }

    /// The session token of an `ST$` key id.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        if self.session {
            self.value.expose_secret().strip_prefix(SESSION_PREFIX)
        } else {
            None
        }
    }

    /// The key id as sent in the `Authorization` header. For a session token this
    /// contains the token: do not log it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        self.value.expose_secret()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.session {
            f.write_str("KeyId(\"ST$[redacted]\")")
        } else {
            f.debug_tuple("KeyId")
                .field(&self.value.expose_secret())
                .finish()
        }
    }
}
