//! One user's sessions: the immutable [`OciSession`] (this file), the refresh state
//! machine (`refresh`), and the per-user provider API (`provider`).

mod provider;
mod refresh;
mod replicas;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::exchange::Upst;
use crate::key::SigningKey;
use crate::secret::SecretString;
use crate::signing::{KeyId, SignableRequest, SigningOutput, SigningParams, sign};

pub use provider::{SessionProvider, TokenExchangeSignerBuilder};
pub(crate) use refresh::ExchangeStats;
pub(crate) use replicas::{DEFAULT_LOCK_TTL, DEFAULT_STORE_TIMEOUT, SessionStore, StoreStats};
// Where the crate's MCP adapter finds the per-user signer type.
#[cfg(feature = "mcp")]
pub(crate) use crate::signer::TokenExchangeSigner;

/// Default refresh margin: a session is renewed this long before its UPST expires
/// (as the Go and Java SDKs), capped at half the UPST's lifetime.
pub(crate) const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A boxed, sendable future (crate-internal shorthand; public signatures spell it
/// out).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a signer gets the user's current access token, when it can change (for
/// example a token store updated on each request). Most code passes the token
/// itself instead.
pub trait SubjectTokenSource: Send + Sync + fmt::Debug {
    /// The user's current access token.
    fn subject_token(&self) -> Pin<Box<dyn Future<Output = Result<SecretString>> + Send + '_>>;
}

/// A UPST and the private key it is bound to, immutable: one OCI session of one
/// user. (Named so it does not collide with rmcp's or a web framework's sessions.)
///
/// A request is always signed with one `OciSession`'s key and key id together, so
/// they match even while a refresh replaces the signer's current session.
pub struct OciSession {
    upst: Upst,
    key: SigningKey,
    key_id: KeyId,
    obtained_at: SystemTime,
    refresh_at: SystemTime,
    /// The subject token's `exp`: the session is never used past it.
    subject_expires_at: Option<SystemTime>,
    /// Made because OCI refused the previous session (see `session_refused`).
    forced: bool,
}

impl OciSession {
    /// `obtained_at` is the local time of the exchange: the lifetime is measured on
    /// the local clock, so a clock that disagrees with the domain's cannot put
    /// `refresh_at` in the past (which would exchange on every call). The session
    /// is due no later than the subject token's `exp`, whatever the UPST says.
    pub(crate) fn new(
        upst: Upst,
        key: SigningKey,
        obtained_at: SystemTime,
        margin: Duration,
        subject_expires_at: Option<SystemTime>,
        forced: bool,
    ) -> Result<Self> {
        let key_id = KeyId::session_token(upst.token().expose_secret())?;
        let lifetime = upst.expires_at().duration_since(obtained_at).map_err(|_| {
            Error::new(
                ErrorKind::MalformedResponse,
                "session token expired before it arrived; check this machine's clock",
            )
        })?;
        let mut refresh_at = upst.expires_at() - margin.min(lifetime / 2);
        if let Some(subject_exp) = subject_expires_at {
            refresh_at = refresh_at.min(subject_exp);
        }
        Ok(Self {
            upst,
            key,
            key_id,
            obtained_at,
            refresh_at,
            subject_expires_at,
            forced,
        })
    }

    /// The session token and its claims.
    #[must_use]
    pub fn upst(&self) -> &Upst {
        &self.upst
    }

    /// The user's OCID.
    #[must_use]
    pub fn user_ocid(&self) -> &str {
        self.upst.user_ocid()
    }

    /// The tenancy's OCID, when the token names it.
    #[must_use]
    pub fn tenancy_ocid(&self) -> Option<&str> {
        self.upst.tenancy_ocid()
    }

    /// When the UPST expires.
    #[must_use]
    pub fn expires_at(&self) -> SystemTime {
        self.upst.expires_at()
    }

    /// When the signer will replace this session.
    #[must_use]
    pub fn refresh_at(&self) -> SystemTime {
        self.refresh_at
    }

    /// The key id (`ST$<upst>`).
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Signing parameters with this session's key and key id, for [`sign`].
    #[must_use]
    pub fn signing_params(&self, time: SystemTime) -> SigningParams<'_> {
        SigningParams::new(&self.key, &self.key_id, time)
    }

    /// Signs `request` with this session.
    ///
    /// # Errors
    /// As [`sign`].
    pub fn sign(&self, request: &SignableRequest<'_>, time: SystemTime) -> Result<SigningOutput> {
        sign(request, &self.signing_params(time))
    }

    pub(crate) fn obtained_at(&self) -> SystemTime {
        self.obtained_at
    }

    /// Whether this session may still sign at `now`, `skew` before its UPST
    /// expires and never past the subject token's `exp`: what a fallback must be.
    pub(crate) fn usable_at(&self, now: SystemTime, skew: std::time::Duration) -> bool {
        now.checked_add(skew).is_some_and(|t| t < self.expires_at())
            && self.subject_expires_at.is_none_or(|exp| now < exp)
    }

    pub(crate) fn forced(&self) -> bool {
        self.forced
    }
}

impl fmt::Debug for OciSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciSession")
            .field("upst", &self.upst)
            .field("key", &self.key)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}
