//! The crate's one error type.

use std::borrow::Cow;
use std::fmt;

/// What went wrong, in a form a program can match on.
///
/// New kinds may be added in minor releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key is not valid PEM, or its DER content does not parse as an RSA key.
    MalformedKey,
    /// The key is encrypted; decrypt it first (e.g. `openssl pkey -in k.pem -out plain.pem`).
    EncryptedKey,
    /// The key parses but is not usable here: not RSA, or of an unsupported size.
    UnsupportedKey,
    /// The request URL cannot be signed (no host, unsupported scheme, ...).
    InvalidUrl,
    /// A header that would be signed is malformed, duplicated or inconsistent.
    InvalidHeader,
    /// The method is not one OCI signs, or does not carry the body it was given.
    UnsupportedMethod,
    /// A `date` or `x-date` value supplied by the caller is not an HTTP-date.
    InvalidDate,
    /// The body cannot be signed: a stream with no precomputed length and SHA-256.
    UnsignableBody,
    /// A key id is malformed (empty part, quote or control character).
    InvalidKeyId,
    /// An OCI signature did not verify (server side): the message says which check failed.
    SignatureRejected,
    /// The cryptographic backend failed unexpectedly.
    Crypto,
}

/// The error returned by every fallible function of this crate.
///
/// Messages are lowercase, name the failing part, and never contain tokens, secrets,
/// keys or signatures.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether repeating the same operation later may succeed.
    ///
    /// No signing or key error is retryable: the same input fails the same way.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// Whether the user must log in again before this can succeed.
    #[must_use]
    pub fn is_reauth_required(&self) -> bool {
        false
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
