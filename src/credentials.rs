//! What signs a request: a key and its key id ([`Credentials`]), where they come
//! from ([`CredentialsProvider`]: a session, a fixed [`ApiKey`], ...), and the
//! `~/.oci/config` file format.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::key::SigningKey;
use crate::session::{BoxFuture, OciSession};
use crate::signing::{KeyId, SigningParams};

#[derive(Clone)]
enum Repr {
    Session(Arc<OciSession>),
    Fixed(Arc<(SigningKey, KeyId)>),
}

/// A key and the key id that names it, ready to sign. Cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    repr: Repr,
}

impl Credentials {
    /// Fixed credentials: an API key, or a session token obtained elsewhere.
    #[must_use]
    pub fn new(key: SigningKey, key_id: KeyId) -> Self {
        Self {
            repr: Repr::Fixed(Arc::new((key, key_id))),
        }
    }

    /// A token-exchange session's credentials.
    #[must_use]
    pub fn from_session(session: Arc<OciSession>) -> Self {
        Self {
            repr: Repr::Session(session),
        }
    }

    /// Signing parameters for a request signed at `time`.
    #[must_use]
    pub fn signing_params(&self, time: SystemTime) -> SigningParams<'_> {
        match &self.repr {
            Repr::Session(session) => session.signing_params(time),
            Repr::Fixed(pair) => SigningParams::new(&pair.0, &pair.1, time),
        }
    }

    /// The key id.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        match &self.repr {
            Repr::Session(session) => session.key_id(),
            Repr::Fixed(pair) => &pair.1,
        }
    }

    /// The token-exchange session these credentials come from, if any.
    #[must_use]
    pub fn session(&self) -> Option<&Arc<OciSession>> {
        match &self.repr {
            Repr::Session(session) => Some(session),
            Repr::Fixed(_) => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", self.key_id())
            .finish_non_exhaustive()
    }
}

/// Anything that provides signing credentials and the time to sign at: a user's
/// [`SessionProvider`](crate::SessionProvider), an [`ApiKey`], a
/// [`Signer`](crate::Signer) (delegating to its own provider), or your own.
pub trait CredentialsProvider: Send + Sync + fmt::Debug {
    /// The credentials for the next request.
    fn credentials(&self) -> Pin<Box<dyn Future<Output = Result<Credentials>> + Send + '_>>;

    /// OCI refused (401) a request signed with `used`. Return `true` if asking for
    /// credentials again may help (the provider has dropped `used`).
    fn refused(&self, used: &Credentials) -> bool;

    /// The time to date signatures with, from the provider's [`Clock`].
    fn now(&self) -> SystemTime;
}

/// A fixed API key (or a session token from `oci session authenticate`) as a
/// [`CredentialsProvider`]; see [`ApiKeySigner`](crate::ApiKeySigner).
#[derive(Clone)]
pub struct ApiKey {
    credentials: Credentials,
    region: Option<String>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", self.credentials.key_id())
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// `key` named by `key_id`, dated by the system clock.
    #[must_use]
    pub fn new(key: SigningKey, key_id: KeyId) -> Self {
        Self {
            credentials: Credentials::new(key, key_id),
            region: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Dates signatures with `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reads `profile` of an OCI configuration file in the SDKs' format (default
    /// path `~/.oci/config`; `DEFAULT` values apply to every profile): `user`,
    /// `fingerprint`, `key_file`, `tenancy`, `region`, and `security_token_file`
    /// (then the key id is `ST$<token>`, as for `oci session authenticate`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a missing file, profile or entry; the key's
    /// own errors ([`ErrorKind::EncryptedKey`] when a `pass_phrase` is needed, ...).
    pub fn from_config_file(path: Option<&Path>, profile: &str) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => expand_home("~/.oci/config"),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("cannot read oci config {}", path.display()),
            )
            .with_source(e)
        })?;
        let entries = parse_profile(&text, profile)?;
        let get = |name: &'static str| {
            entries.get(name).map(String::as_str).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("oci config profile lacks '{name}'"),
                )
            })
        };
        if entries.contains_key("pass_phrase") {
            return Err(Error::new(
                ErrorKind::EncryptedKey,
                "oci config names a key pass phrase; encrypted keys are not supported, decrypt the key file",
            ));
        }
        let key_path = expand_home(get("key_file")?);
        let pem = std::fs::read_to_string(&key_path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("cannot read key file {}", key_path.display()),
            )
            .with_source(e)
        })?;
        let key = SigningKey::from_pem(&pem)?;
        let key_id = match entries.get("security_token_file") {
            Some(token_file) => {
                let token_path = expand_home(token_file);
                let token = std::fs::read_to_string(&token_path).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        "cannot read the security token file",
                    )
                    .with_source(e)
                })?;
                KeyId::session_token(&token)?
            }
            None => KeyId::api_key(get("tenancy")?, get("user")?, get("fingerprint")?)?,
        };
        let mut api_key = Self::new(key, key_id);
        api_key.region = entries.get("region").cloned();
        Ok(api_key)
    }

    /// The profile's `region`, if any.
    #[must_use]
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The key id.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        self.credentials.key_id()
    }
}

impl CredentialsProvider for ApiKey {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        Box::pin(std::future::ready(Ok(self.credentials.clone())))
    }

    /// A fixed key cannot be renewed: no retry.
    fn refused(&self, _used: &Credentials) -> bool {
        false
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

/// `~/` at the start becomes `$HOME/`, as the SDKs do.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The entries of `profile`, over those of `DEFAULT`.
fn parse_profile(text: &str, profile: &str) -> Result<HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "oci config has a line that is not 'key=value' in a [profile]",
            ));
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    let mut entries = sections.get("DEFAULT").cloned().unwrap_or_default();
    match sections.get(profile) {
        Some(own) => entries.extend(own.clone()),
        None => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("oci config has no profile '{profile}'"),
            ));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_inherit_default() {
        let text = "# comment\n[DEFAULT]\nregion = us-ashburn-1\nuser=u0\n\n[work]\nuser = u1\n; other\nkey_file=~/k.pem\n";
        let work = parse_profile(text, "work").expect("profile");
        assert_eq!(work.get("user").map(String::as_str), Some("u1"));
        assert_eq!(work.get("region").map(String::as_str), Some("us-ashburn-1"));
        assert!(parse_profile(text, "missing").is_err());
        assert!(parse_profile("user=x\n", "DEFAULT").is_err());
    }
}
