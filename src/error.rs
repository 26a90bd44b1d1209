//! The crate's one error type.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

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
    /// A token presents the id (`iss`, `jti`) of a different cached token; it gets an
    /// error, never that token's signer.
    SubjectTokenConflict,
    /// An internal task ended without a result (a bug or a runtime shutting down).
    Internal,
    /// A valid bearer token lacks a scope the server requires.
    InsufficientScope,
    /// A configuration value is invalid (domain URL, client id, timeouts, ...); found
    /// when building, before any network use.
    InvalidConfig,
    /// The subject token (the user's JWT) is not a readable JWT; checked locally.
    SubjectTokenMalformed,
    /// The subject token has expired: the user must log in again. Checked locally,
    /// before any network call.
    SubjectTokenExpired,
    /// The identity domain refused the exchange; see [`Error::http_status`],
    /// [`Error::oauth_error`] and [`Error::opc_request_id`].
    ExchangeRejected,
    /// The identity domain answered something that is not a valid token response (or
    /// the session token is bound to a key other than the one sent).
    MalformedResponse,
    /// The connection to the identity domain failed.
    Transport,
    /// The identity domain did not answer in time.
    Timeout,
    /// A [`Store`](crate::Store) failed, is unreachable or is full.
    Storage,
    /// An encrypted value (a Fernet token) was refused: not a Fernet token, made with
    /// another key, tampered with, expired, or dated in the future.
    Decrypt,
}

/// The error returned by every fallible function of this crate.
///
/// Messages are lowercase, name the failing part, and never contain tokens, secrets,
/// keys or signatures.
///
/// Cloning is cheap; a refresh that fails hands the same error to every waiter.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    http: Option<Box<HttpDetails>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// What an HTTP error response said, minus anything secret.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpDetails {
    pub(crate) status: Option<u16>,
    pub(crate) oauth_error: Option<String>,
    pub(crate) oauth_error_description: Option<String>,
    pub(crate) opc_request_id: Option<String>,
    pub(crate) retry_after: Option<std::time::Duration>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            http: None,
            source: None,
        }
    }

    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(crate) fn with_http(mut self, details: HttpDetails) -> Self {
        self.http = Some(Box::new(details));
        self
    }

    /// A failure of a [`Store`](crate::Store) implementation ([`ErrorKind::Storage`],
    /// retryable): how your own store reports that it cannot answer now. The
    /// message is shown in logs and error chains: name the operation, never a key
    /// or a value. Attach the underlying error with [`Error::with_source`].
    ///
    /// ```
    /// use oci_token_exchange::{Error, ErrorKind};
    /// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
    /// let err = Error::storage("my store get failed").with_source(io);
    /// assert_eq!(err.kind(), ErrorKind::Storage);
    /// assert!(err.is_retryable());
    /// ```
    #[must_use]
    pub fn storage(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Storage, message)
    }

    /// This error, caused by `source` (shown by [`std::error::Error::source`]).
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether repeating the same operation later may succeed: transport failures,
    /// timeouts, and exchanges refused with 429 or a 5xx status. Signing and key
    /// errors are never retryable: the same input fails the same way.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::Storage => true,
            ErrorKind::ExchangeRejected => self
                .http_status()
                .is_some_and(|s| s == 429 || (500..=599).contains(&s)),
            _ => false,
        }
    }

    /// Whether the user must log in again before this can succeed: the subject
    /// token has expired, or the identity domain answered `invalid_grant`.
    #[must_use]
    pub fn is_reauth_required(&self) -> bool {
        match self.kind {
            ErrorKind::SubjectTokenExpired => true,
            ErrorKind::ExchangeRejected => self.oauth_error() == Some("invalid_grant"),
            _ => false,
        }
    }

    /// The HTTP status of the response that caused this error, if any.
    #[must_use]
    pub fn http_status(&self) -> Option<u16> {
        self.http.as_ref().and_then(|h| h.status)
    }

    /// The OAuth `error` code of the response (RFC 6749 section 5.2), if any.
    #[must_use]
    pub fn oauth_error(&self) -> Option<&str> {
        self.http.as_ref().and_then(|h| h.oauth_error.as_deref())
    }

    /// The OAuth `error_description` of the response, if any.
    #[must_use]
    pub fn oauth_error_description(&self) -> Option<&str> {
        self.http
            .as_ref()
            .and_then(|h| h.oauth_error_description.as_deref())
    }

    /// The delay the server asked for with `Retry-After`, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.http.as_ref().and_then(|h| h.retry_after)
    }

    /// The `opc-request-id` of the response, for Oracle support.
    #[must_use]
    pub fn opc_request_id(&self) -> Option<&str> {
        self.http.as_ref().and_then(|h| h.opc_request_id.as_deref())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(http) = &self.http {
            d.field("http", http);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(http) = &self.http
            && let Some(status) = http.status
        {
            write!(f, " (http {status}")?;
            if let Some(code) = &http.oauth_error {
                write!(f, ", {code}")?;
            }
            if let Some(desc) = &http.oauth_error_description {
                write!(f, ": {desc}")?;
            }
            if let Some(id) = &http.opc_request_id {
                write!(f, ", opc-request-id {id}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
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
