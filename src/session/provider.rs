//! The per-user provider API: what a [`TokenExchangeSigner`] signs with, and its
//! builder.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::refresh::{ExchangeStats, Shared, Subject};
use super::replicas::SessionStore;
use super::{BoxFuture, DEFAULT_REFRESH_MARGIN, OciSession, SubjectTokenSource};
use crate::clock::{Clock, SystemClock};
use crate::credentials::{Credentials, CredentialsProvider};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::TokenExchange;
use crate::key::KeyPool;
use crate::secret::SecretString;
use crate::signer::{Signer, TokenExchangeSigner};

/// The credentials provider of a [`TokenExchangeSigner`]: one user's subject token,
/// current [`OciSession`] and its refresh. Built through
/// [`TokenExchangeSigner::builder`]; its methods are reachable from the signer.
///
/// - **Lazy**: building it does no I/O; the first use exchanges.
/// - **Refreshed in time**: a session is replaced `refresh_margin` (default 5
///   minutes, at most half the UPST's lifetime) before its UPST expires.
/// - **One refresh at a time**: concurrent callers wait for the same exchange; it
///   runs in its own task, so a caller that gives up does not cancel it for the
///   others; its outcome is handed to every waiter.
/// - **Transient failures fall back**: when a refresh fails with a retryable error
///   (429, 5xx, timeout, transport) while the previous session's UPST is still
///   valid, that session is used, and for 10 s (of clock time; a clock that moves
///   back ends the wait) no new attempt is made. Any other failure is returned.
/// - **Refused tokens are remembered**: a non-retryable exchange failure (for
///   example `invalid_grant`) is returned as is, without a new exchange, for 30 s
///   to every call with the same subject token.
/// - **Never past the subject token's expiry**: once the user's token has expired,
///   every call fails with an error whose `is_reauth_required()` is true, without a
///   network call.
/// - **Atomic**: sessions are immutable and replaced whole, so a request is always
///   signed with a key and key id that belong together.
#[derive(Clone)]
pub struct SessionProvider {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (session, refreshing) = self.shared.snapshot();
        f.debug_struct("SessionProvider")
            .field("session", &session)
            .field("refreshing", &refreshing)
            .finish_non_exhaustive()
    }
}

impl SessionProvider {
    fn new(
        subject: Subject,
        exchange: TokenExchange,
        pool: KeyPool,
        clock: Arc<dyn Clock>,
        margin: Duration,
        stats: Arc<ExchangeStats>,
        replicas: Option<Arc<SessionStore>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(
                subject, exchange, pool, clock, margin, stats, replicas,
            )),
        }
    }

    /// The provider the cache creates for one token.
    pub(crate) fn for_cached_token(
        token: Arc<SecretString>,
        exchange: TokenExchange,
        pool: KeyPool,
        clock: Arc<dyn Clock>,
        margin: Duration,
        stats: Arc<ExchangeStats>,
        replicas: Option<Arc<SessionStore>>,
    ) -> Self {
        Self::new(
            Subject::Token(token),
            exchange,
            pool,
            clock,
            margin,
            stats,
            replicas,
        )
    }

    /// The subject token this provider was made for, unless it reads a source.
    pub(crate) fn subject_token(&self) -> Option<&SecretString> {
        match &self.shared.subject {
            Subject::Token(token) => Some(token),
            Subject::Source(_) => None,
        }
    }

    /// The current session, exchanging first if there is none or it is due for
    /// refresh. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// The exchange's errors ([`ErrorKind::SubjectTokenExpired`] once the user's
    /// token has expired, ...), shared by every caller waiting on the same refresh;
    /// a remembered refusal of the same token within the last 30 s.
    pub async fn session(&self) -> Result<Arc<OciSession>> {
        self.shared.session().await
    }

    /// The current session if there is one that is not due for refresh, without
    /// any I/O.
    #[must_use]
    pub fn current_session(&self) -> Option<Arc<OciSession>> {
        self.shared.current_session()
    }

    /// Forgets the current session, so the next use exchanges again.
    pub fn invalidate(&self) {
        self.shared.invalidate();
    }

    /// OCI refused (401) a request signed with `session`. Drops it so the next use
    /// exchanges anew, and returns `true`, unless `session` itself replaced a
    /// refused one less than a minute ago: then another exchange would not help
    /// (clock skew, a policy or signing problem), so nothing is dropped and the
    /// answer is `false`. This bounds 401-driven exchanges to one a minute. When
    /// many requests signed with the same session get 401 at once, they cause one
    /// new exchange, not one each.
    #[must_use = "`false` means a retry with new credentials will not help"]
    pub fn session_refused(&self, session: &Arc<OciSession>) -> bool {
        self.shared.session_refused(session)
    }

    /// The clock this provider uses.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }
}

impl CredentialsProvider for SessionProvider {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        Box::pin(async move { Ok(Credentials::from_session(self.session().await?)) })
    }

    /// See [`SessionProvider::session_refused`]; credentials that are not a
    /// session of this provider are not renewed.
    fn refused(&self, used: &Credentials) -> bool {
        used.session()
            .is_some_and(|session| self.session_refused(session))
    }

    fn now(&self) -> SystemTime {
        self.shared.clock.now()
    }
}

/// Builds a [`TokenExchangeSigner`].
#[derive(Debug)]
pub struct TokenExchangeSignerBuilder {
    exchange: TokenExchange,
    subject: Option<SecretString>,
    source: Option<Arc<dyn SubjectTokenSource>>,
    pool: Option<KeyPool>,
    clock: Option<Arc<dyn Clock>>,
    margin: Duration,
}

impl TokenExchangeSignerBuilder {
    pub(crate) fn new(exchange: TokenExchange) -> Self {
        Self {
            exchange,
            subject: None,
            source: None,
            pool: None,
            clock: None,
            margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// The user's access token (a JWT).
    #[must_use]
    pub fn subject_token(mut self, token: impl Into<SecretString>) -> Self {
        self.subject = Some(token.into());
        self
    }

    /// Where to get the user's current access token on each exchange.
    #[must_use]
    pub fn subject_token_source(mut self, source: Arc<dyn SubjectTokenSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// The pool session keys come from (default: a private pool of 2).
    #[must_use]
    pub fn key_pool(mut self, pool: KeyPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// How long before the UPST's expiry a session is replaced (default 5 minutes;
    /// capped at half the UPST's lifetime).
    #[must_use]
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The clock for expiry decisions and signature dates (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the signer. No I/O happens until it is used.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] unless exactly one of a subject token and a
    /// subject token source was given.
    pub fn build(self) -> Result<TokenExchangeSigner> {
        let subject = match (self.subject, self.source) {
            (Some(token), None) => Subject::Token(Arc::new(token)),
            (None, Some(source)) => Subject::Source(source),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "give exactly one of a subject token and a subject token source",
                ));
            }
        };
        Ok(Signer::from_provider(SessionProvider::new(
            subject,
            self.exchange,
            self.pool.unwrap_or_default(),
            self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            self.margin,
            Arc::default(),
            None,
        )))
    }
}
