//! One user's signer: the subject token, the current session (UPST + key), and its
//! refresh.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{TokenExchange, Upst, check_subject};
use crate::key::{KeyPool, SigningKey};
use crate::secret::SecretString;
use crate::signing::{
    KeyId, SignableRequest, SigningOutput, SigningParams, sign, sign_http_request,
    sign_reqwest_request,
};

/// Default refresh margin: a session is renewed this long before its UPST expires
/// (as the Go and Java SDKs), capped at half the UPST's lifetime.
pub(crate) const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A session whose UPST expires within this is not used as a fallback.
const EXPIRY_SKEW: Duration = Duration::from_secs(30);
/// After a failed refresh, a still-valid session is used this long before the
/// next attempt.
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// A session made because OCI refused the previous one is not replaced again for
/// a 401 within this time: a second refusal is not a stale session.
const FORCED_REFRESH_GUARD: Duration = Duration::from_secs(60);

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a signer gets the user's current access token, when it can change (for
/// example a token store updated on each request). Most code passes the token
/// itself instead.
pub trait SubjectTokenSource: Send + Sync + fmt::Debug {
    /// The user's current access token.
    fn subject_token(&self) -> BoxFuture<'_, Result<SecretString>>;
}

/// A UPST and the private key it is bound to, immutable.
///
/// A request is always signed with one `Session`'s key and key id together, so they
/// match even while a refresh replaces the signer's current session.
pub struct Session {
    upst: Upst,
    key: SigningKey,
    key_id: KeyId,
    obtained_at: SystemTime,
    refresh_at: SystemTime,
    /// Made because OCI refused the previous session (see `unauthorized`).
    forced: bool,
}

impl Session {
    /// `obtained_at` is the local time of the exchange: the lifetime is measured on
    /// the local clock, so a clock that disagrees with the domain's cannot put
    /// `refresh_at` in the past (which would exchange on every call). The session
    /// is due no later than the subject token's `exp`, whatever the UPST says.
    fn new(
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
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("upst", &self.upst)
            .field("key", &self.key)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Exchange outcomes, shared by the signers of one cache.
#[derive(Debug, Default)]
pub(crate) struct ExchangeStats {
    pub(crate) exchanges: AtomicU64,
    pub(crate) failures: AtomicU64,
}

#[derive(Clone)]
enum Subject {
    Token(Arc<SecretString>),
    Source(Arc<dyn SubjectTokenSource>),
}

type Outcome = Option<Result<Arc<Session>>>;

#[derive(Default)]
struct State {
    current: Option<Arc<Session>>,
    inflight: Option<watch::Receiver<Outcome>>,
    /// When the last refresh failed (cleared by a success).
    last_failure: Option<SystemTime>,
    /// The next session replaces one that OCI refused.
    forced_next: bool,
}

struct Shared {
    subject: Subject,
    exchange: TokenExchange,
    pool: KeyPool,
    clock: Arc<dyn Clock>,
    margin: Duration,
    stats: Arc<ExchangeStats>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One exchange: the current subject token, checked locally; a fresh key; the
    /// exchange; the new session.
    async fn refresh(&self) -> Result<Arc<Session>> {
        let subject = match &self.subject {
            Subject::Token(token) => SecretString::clone(token),
            Subject::Source(source) => source.subject_token().await?,
        };
        let claims = check_subject(subject.expose_secret(), self.clock.now())?;
        let forced = std::mem::take(&mut self.state().forced_next);
        let key = self.pool.take().await?;
        let result = self.exchange.exchange(&subject, key.public_key()).await;
        let counter = if result.is_ok() {
            &self.stats.exchanges
        } else {
            &self.stats.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let upst = result?;
        Ok(Arc::new(Session::new(
            upst,
            key,
            self.clock.now(),
            self.margin,
            claims.time("exp"),
            forced,
        )?))
    }
}

/// Ends a refresh whatever happens to its task: on completion it installs the new
/// session; if the task panics or is dropped by a runtime shutting down, `Drop`
/// still clears the in-flight marker (only its own) and releases the waiters.
struct RefreshGuard {
    shared: Arc<Shared>,
    tx: Option<watch::Sender<Outcome>>,
}

impl RefreshGuard {
    fn finish(&mut self, result: Result<Arc<Session>>) {
        let Some(tx) = self.tx.take() else { return };
        {
            let mut state = self.shared.state();
            if state
                .inflight
                .as_ref()
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                state.inflight = None;
            }
            match &result {
                Ok(session) => {
                    state.current = Some(Arc::clone(session));
                    state.last_failure = None;
                }
                Err(_) => state.last_failure = Some(self.shared.clock.now()),
            }
        }
        let _ = tx.send(Some(result));
    }
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.finish(Err(Error::new(
            ErrorKind::Internal,
            "session refresh was interrupted (task panicked or runtime shut down)",
        )));
    }
}

/// Signs OCI requests as one user, exchanging the user's token for a UPST when
/// needed.
///
/// - **Lazy**: building it does no I/O; the first use exchanges.
/// - **Refreshed in time**: a session is replaced `refresh_margin` (default 5
///   minutes, at most half the UPST's lifetime) before its UPST expires.
/// - **One refresh at a time**: concurrent callers wait for the same exchange; it
///   runs in its own task, so a caller that gives up does not cancel it for the
///   others; a failure is handed to every waiter and not remembered (the next call
///   tries again).
/// - **Never past the subject token's expiry**: once the user's token has expired,
///   every call fails with an error whose `is_reauth_required()` is true, without a
///   network call.
/// - **Atomic**: sessions are immutable and replaced whole, so a request is always
///   signed with a key and key id that belong together.
#[derive(Clone)]
pub struct TokenExchangeSigner {
    shared: Arc<Shared>,
}

impl fmt::Debug for TokenExchangeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("TokenExchangeSigner")
            .field("session", &state.current)
            .field("refreshing", &state.inflight.is_some())
            .finish_non_exhaustive()
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
        Ok(TokenExchangeSigner::new(
            subject,
            self.exchange,
            self.pool.unwrap_or_default(),
            self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            self.margin,
            Arc::default(),
        ))
    }
}

impl TokenExchangeSigner {
    fn new(
        subject: Subject,
        exchange: TokenExchange,
        pool: KeyPool,
        clock: Arc<dyn Clock>,
        margin: Duration,
        stats: Arc<ExchangeStats>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                subject,
                exchange,
                pool,
                clock,
                margin,
                stats,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The signer the cache creates for one token.
    pub(crate) fn for_cached_token(
        token: Arc<SecretString>,
        exchange: TokenExchange,
        pool: KeyPool,
        clock: Arc<dyn Clock>,
        margin: Duration,
        stats: Arc<ExchangeStats>,
    ) -> Self {
        Self::new(Subject::Token(token), exchange, pool, clock, margin, stats)
    }

    /// A builder for a signer that exchanges through `exchange`.
    #[must_use]
    pub fn builder(exchange: TokenExchange) -> TokenExchangeSignerBuilder {
        TokenExchangeSignerBuilder {
            exchange,
            subject: None,
            source: None,
            pool: None,
            clock: None,
            margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// The current session, exchanging first if there is none or it is due for
    /// refresh. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// The exchange's errors ([`ErrorKind::SubjectTokenExpired`] once the user's
    /// token has expired, ...), shared by every caller waiting on the same refresh.
    pub async fn session(&self) -> Result<Arc<Session>> {
        let now = self.shared.clock.now();
        let (mut outcome, fallback) = {
            let mut state = self.shared.state();
            // A session inside the refresh margin whose UPST is still valid: what
            // callers get if the refresh fails transiently.
            let fallback = state
                .current
                .as_ref()
                .filter(|s| {
                    now.checked_add(EXPIRY_SKEW)
                        .is_some_and(|t| t < s.expires_at())
                })
                .cloned();
            if let Some(session) = &state.current {
                if now < session.refresh_at {
                    return Ok(Arc::clone(session));
                }
                // Just after a failed refresh, keep using the valid session rather
                // than make every caller wait for another attempt.
                let backing_off = state.last_failure.is_some_and(|f| {
                    now.duration_since(f).unwrap_or(Duration::ZERO) < FAILURE_BACKOFF
                });
                if backing_off && let Some(valid) = &fallback {
                    return Ok(Arc::clone(valid));
                }
            }
            let outcome = match &state.inflight {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    state.inflight = Some(rx.clone());
                    let shared = Arc::clone(&self.shared);
                    // In its own task: a caller that is cancelled does not cancel it.
                    tokio::spawn(async move {
                        let mut guard = RefreshGuard {
                            shared,
                            tx: Some(tx),
                        };
                        let result = guard.shared.refresh().await;
                        guard.finish(result);
                    });
                    rx
                }
            };
            (outcome, fallback)
        };
        let result = loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                break result;
            }
            if outcome.changed().await.is_err() {
                // Unreachable while `RefreshGuard` works: it always sends a result.
                break outcome.borrow().clone().unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Internal,
                        "session refresh ended without a result",
                    ))
                });
            }
        };
        match (result, fallback) {
            // A transient failure while the old UPST is still valid: use it.
            (Err(e), Some(valid)) if e.is_retryable() => Ok(valid),
            (result, _) => result,
        }
    }

    /// The current session if there is one that is not due for refresh, without
    /// any I/O.
    #[must_use]
    pub fn current_session(&self) -> Option<Arc<Session>> {
        let state = self.shared.state();
        state
            .current
            .as_ref()
            .filter(|s| self.shared.clock.now() < s.refresh_at)
            .cloned()
    }

    /// Forgets the current session, so the next use exchanges again (for example
    /// after OCI answered 401).
    pub fn invalidate(&self) {
        self.shared.state().current = None;
    }

    /// Forgets `session` if it is still the current one. When many requests signed
    /// with the same session get 401 at once, this makes them cause one new exchange,
    /// not one each.
    pub fn invalidate_session(&self, session: &Arc<Session>) {
        let mut state = self.shared.state();
        if state
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, session))
        {
            state.current = None;
            state.forced_next = true;
        }
    }

    /// OCI refused (401) a request signed with `session`. Drops it so the next use
    /// exchanges anew, and returns `true`, unless `session` itself replaced a
    /// refused one less than a minute ago: then another exchange would not help
    /// (clock skew, a policy or signing problem), so nothing is dropped and the
    /// answer is `false`. This bounds 401-driven exchanges to one a minute.
    #[must_use = "`false` means a retry with new credentials will not help"]
    pub fn session_refused(&self, session: &Arc<Session>) -> bool {
        let now = self.shared.clock.now();
        let age = now
            .duration_since(session.obtained_at)
            .unwrap_or(Duration::ZERO);
        if session.forced && age < FORCED_REFRESH_GUARD {
            return false;
        }
        self.invalidate_session(session);
        true
    }

    /// Signs an `http::Request` as this user and returns the session used.
    ///
    /// # Errors
    /// As [`TokenExchangeSigner::session`] and [`sign`]; the request is untouched on
    /// error.
    pub async fn sign_http<B: AsRef<[u8]>>(
        &self,
        request: &mut http::Request<B>,
    ) -> Result<Arc<Session>> {
        let session = self.session().await?;
        sign_http_request(request, &session.signing_params(self.shared.clock.now()))?;
        Ok(session)
    }

    /// Signs a `reqwest::Request` as this user and returns the session used.
    ///
    /// # Errors
    /// As [`TokenExchangeSigner::session`] and [`sign`]; the request is untouched on
    /// error.
    pub async fn sign_reqwest(&self, request: &mut reqwest::Request) -> Result<Arc<Session>> {
        let session = self.session().await?;
        sign_reqwest_request(request, &session.signing_params(self.shared.clock.now()))?;
        Ok(session)
    }

    /// The clock this signer uses.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }
}
