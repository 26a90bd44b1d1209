//! How the client authenticates itself to the token endpoint.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;

/// How the client authenticates itself to the token endpoint.
///
/// The identity domain's default is HTTP Basic with the OAuth client's id and
/// secret ([`ClientSecretBasic`]). The Go and Java SDKs can also authenticate with
/// an OCI request signature (instance principal); implement this trait for that.
pub trait ClientAuthentication: Send + Sync + fmt::Debug {
    /// Adds the client's credentials to the token request (headers, or form fields
    /// appended to `form`), before it is sent.
    ///
    /// # Errors
    /// Any error stops the exchange and is returned to the caller.
    fn authenticate(
        &self,
        headers: &mut http::HeaderMap,
        form: &mut Vec<(String, String)>,
    ) -> Result<()>;

    /// The secret strings this authentication sends, in every form they take on the
    /// wire (for HTTP Basic: the secret, the base64 credential and the header
    /// value). If the identity domain echoes any of them in its `error` or
    /// `error_description`, the exchange replaces it with `[redacted]` before the
    /// text reaches an [`Error`]. Default: none.
    fn secrets(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// HTTP Basic client authentication: `Authorization: Basic base64(id ":" secret)`,
/// standard padded base64 of the UTF-8 bytes, without form-encoding first (as every
/// OCI SDK does).
#[derive(Clone)]
pub struct ClientSecretBasic {
    header: http::HeaderValue,
    /// The client secret, to scrub from the domain's error text.
    secret: SecretString,
    /// `Basic <base64>`; its suffix after `Basic ` is the base64 credential.
    encoded: Zeroizing<String>,
}

/// The scheme prefix of [`ClientSecretBasic`]'s header value.
const BASIC: &str = "Basic ";

impl ClientSecretBasic {
    /// Credentials of an OAuth client of the identity domain.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] if the id is empty or contains `:`, or the secret
    /// is empty.
    pub fn new(client_id: &str, client_secret: &SecretString) -> Result<Self> {
        if client_id.is_empty()
            || client_id.contains(':')
            || client_id.chars().any(char::is_control)
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "client id must be non-empty, without ':' or control characters",
            ));
        }
        if client_secret.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "client secret is empty",
            ));
        }
        let credentials = Zeroizing::new(format!("{client_id}:{}", client_secret.expose_secret()));
        let encoded = Zeroizing::new(format!(
            "{BASIC}{}",
            STANDARD.encode(credentials.as_bytes())
        ));
        let mut header = http::HeaderValue::from_str(&encoded).map_err(|_| {
            Error::new(
                ErrorKind::InvalidConfig,
                "client credentials are not encodable",
            )
        })?;
        header.set_sensitive(true);
        Ok(Self {
            header,
            secret: client_secret.clone(),
            encoded,
        })
    }
}

impl fmt::Debug for ClientSecretBasic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecretBasic([redacted])")
    }
}

impl ClientAuthentication for ClientSecretBasic {
    fn authenticate(
        &self,
        headers: &mut http::HeaderMap,
        _form: &mut Vec<(String, String)>,
    ) -> Result<()> {
        headers.insert(http::header::AUTHORIZATION, self.header.clone());
        Ok(())
    }

    fn secrets(&self) -> Vec<&str> {
        let base64 = self.encoded.strip_prefix(BASIC).unwrap_or_default();
        vec![self.secret.expose_secret(), base64, self.encoded.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_plain_base64_of_id_colon_secret() {
        let auth = ClientSecretBasic::new("client", &SecretString::new("s3cr=t+/")).expect("valid");
        let mut headers = http::HeaderMap::new();
        auth.authenticate(&mut headers, &mut Vec::new())
            .expect("ok");
        assert_eq!(headers["authorization"], "Basic Y2xpZW50OnMzY3I9dCsv");
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{auth:?}").contains("Y2xp"));
        assert!(!format!("{auth:?}").contains("s3cr"));
        assert_eq!(
            auth.secrets(),
            [
                "s3cr=t+/",
                "Y2xpZW50OnMzY3I9dCsv",
                "Basic Y2xpZW50OnMzY3I9dCsv"
            ]
        );
    }
}
