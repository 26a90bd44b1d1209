//! The refresh state machine of one user's signer: the current session, the one
//! refresh in flight, the fallback after a transient failure, the memory of a
//! refused token, and the 401 guard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::replicas::SessionStore;
use super::{OciSession, SubjectTokenSource};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{TokenExchange, check_subject};
use crate::key::KeyPool;
use crate::secret::SecretString;

/// A session whose UPST expires within this is not used as a fallback (nor taken
/// from the shared store).
pub(super) const EXPIRY_SKEW: Duration = Duration::from_secs(30);
/// After a transient refresh failure (429, 5xx, timeout, transport), a still-valid
/// session is used this long before the next attempt.
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// A token the identity domain refused for good (a 4xx answer other than 429:
/// `invalid_grant`, `invalid_client`, ...) is not sent again for this long: the
/// remembered error is returned instead, so a burst of requests with a refused
/// token costs one key and one exchange. Failures that say nothing about the token
/// (a garbage answer, a session bound to another key) fail the call that met them
/// and are not remembered.
pub(crate) const REFUSED_TOKEN_MEMORY: Duration = Duration::from_secs(30);
/// A session made because OCI refused the previous one is not replaced again for
/// a 401 within this time: a second refusal is not a stale session.
const FORCED_REFRESH_GUARD: Duration = Duration::from_secs(60);

/// Whether `now` is within `window` after `since`. A clock that moved back before
/// `since` ends the window: a clock step can shorten it, never stretch it.
fn within(now: SystemTime, since: SystemTime, window: Duration) -> bool {
    now.duration_since(since).is_ok_and(|age| age < window)
}

/// Exchange outcomes, shared by the signers of one cache.
#[derive(Debug, Default)]
pub(crate) struct ExchangeStats {
    pub(crate) exchanges: AtomicU64,
    pub(crate) failures: AtomicU64,
}

#[derive(Clone)]
pub(super) enum Subject {
    Token(Arc<SecretString>),
    Source(Arc<dyn SubjectTokenSource>),
}

type Outcome = Option<Result<Arc<OciSession>>>;

/// A non-retryable exchange failure and the token it was for.
struct Refusal {
    token: Arc<SecretString>,
    error: Error,
    at: SystemTime,
}

#[derive(Default)]
struct State {
    current: Option<Arc<OciSession>>,
    inflight: Option<watch::Receiver<Outcome>>,
    /// When the last refresh failed transiently (cleared by any other outcome).
    transient_failure_at: Option<SystemTime>,
    /// The last non-retryable exchange failure (cleared by a success).
    refusal: Option<Refusal>,
    /// The next session replaces one that OCI refused.
    forced_next: bool,
    /// The session OCI refused last (cleared by a success): a forced refresh must
    /// not take it back from the shared store.
    refused: Option<Arc<OciSession>>,
}

pub(super) struct Shared {
    pub(super) subject: Subject,
    exchange: TokenExchange,
    pool: KeyPool,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) margin: Duration,
    stats: Arc<ExchangeStats>,
    /// Where replicas share sessions, if they do.
    replicas: Option<Arc<SessionStore>>,
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(
        subject: Subject,
        exchange: TokenExchange,
        pool: KeyPool,
        clock: Arc<dyn Clock>,
        margin: Duration,
        stats: Arc<ExchangeStats>,
        replicas: Option<Arc<SessionStore>>,
    ) -> Self {
        Self {
            subject,
            exchange,
            pool,
            clock,
            margin,
            stats,
            replicas,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// For `Debug`: the current session and whether a refresh runs.
    pub(super) fn snapshot(&self) -> (Option<Arc<OciSession>>, bool) {
        let state = self.state();
        (state.current.clone(), state.inflight.is_some())
    }

    /// The remembered refusal of `token`, if it is recent.
    fn remembered_refusal(&self, token: &SecretString, now: SystemTime) -> Option<Error> {
        let state = self.state();
        let refusal = state.refusal.as_ref()?;
        (within(now, refusal.at, REFUSED_TOKEN_MEMORY)
            && refusal.token.expose_secret() == token.expose_secret())
        .then(|| refusal.error.clone())
    }

    /// One exchange: the current subject token, checked locally; a fresh key; the
    /// exchange; the new session.
    async fn refresh(&self) -> Result<Arc<OciSession>> {
        let subject = match &self.subject {
            Subject::Token(token) => Arc::clone(token),
            Subject::Source(source) => Arc::new(source.subject_token().await?),
        };
        let now = self.clock.now();
        let claims = check_subject(subject.expose_secret(), now)?;
        if let Some(error) = self.remembered_refusal(&subject, now) {
            tracing::debug!(
                error_kind = ?error.kind(),
                http_status = error.http_status(),
                "refused token remembered; no new exchange"
            );
            return Err(error);
        }
        let forced = std::mem::take(&mut self.state().forced_next);
        tracing::debug!(forced, "session refresh started");
        let result = match &self.replicas {
            Some(replicas) => {
                let refused = if forced {
                    self.state().refused.clone()
                } else {
                    None
                };
                let refused_upst = refused.as_ref().map(|s| s.upst().token());
                replicas
                    .refresh(self, &subject, &claims, forced, refused_upst)
                    .await
            }
            None => {
                self.exchange_with_fresh_key(&subject, &claims, forced)
                    .await
            }
        };
        if result.is_err() && forced {
            // The replacement for a refused session is still owed: the next
            // session made is the one the 401 guard must know about.
            self.state().forced_next = true;
        }
        result
    }

    pub(super) async fn exchange_with_fresh_key(
        &self,
        subject: &Arc<SecretString>,
        claims: &crate::jwt::Claims,
        forced: bool,
    ) -> Result<Arc<OciSession>> {
        let key = self.pool.take().await?;
        let result = self.exchange.exchange(subject, key.public_key()).await;
        let counter = if result.is_ok() {
            &self.stats.exchanges
        } else {
            &self.stats.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let upst = match result {
            Ok(upst) => upst,
            Err(error) => {
                if error.kind() == ErrorKind::ExchangeRejected && !error.is_retryable() {
                    self.state().refusal = Some(Refusal {
                        token: Arc::clone(subject),
                        error: error.clone(),
                        at: self.clock.now(),
                    });
                }
                return Err(error);
            }
        };
        Ok(Arc::new(OciSession::new(
            upst,
            key,
            self.clock.now(),
            self.margin,
            claims.time("exp"),
            forced,
        )?))
    }

    /// The current session, exchanging first if there is none or it is due for
    /// refresh. See `TokenExchangeSigner::session`.
    pub(super) async fn session(self: &Arc<Self>) -> Result<Arc<OciSession>> {
        let now = self.clock.now();
        let (mut outcome, fallback, guard) = {
            let mut state = self.state();
            // A session inside the refresh margin whose UPST is still valid: what
            // callers get if the refresh fails transiently.
            let fallback = state
                .current
                .as_ref()
                .filter(|s| s.usable_at(now, EXPIRY_SKEW))
                .cloned();
            if let Some(session) = &state.current
                && now < session.refresh_at()
            {
                return Ok(Arc::clone(session));
            }
            // Just after a transient failure, keep using the valid session rather
            // than make every caller wait for another attempt.
            if let (Some(failed_at), Some(valid)) = (state.transient_failure_at, &fallback)
                && within(now, failed_at, FAILURE_BACKOFF)
            {
                tracing::trace!("refresh backing off; still-valid session used");
                return Ok(Arc::clone(valid));
            }
            let (outcome, guard) = match &state.inflight {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    state.inflight = Some(rx.clone());
                    // Made before the task, so that a task that never runs (a
                    // runtime shutting down) still ends the refresh when dropped.
                    let guard = RefreshGuard {
                        shared: Arc::clone(self),
                        tx: Some(tx),
                    };
                    (rx, Some(guard))
                }
            };
            (outcome, fallback, guard)
        };
        if let Some(mut guard) = guard {
            // In its own task: a caller that is cancelled does not cancel it. Spawned
            // outside the state lock: dropping an unrun task locks it.
            tokio::spawn(async move {
                let result = guard.shared.refresh().await;
                guard.finish(result);
            });
        }
        let result = loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                break result;
            }
            if outcome.changed().await.is_err() {
                // Unreachable while `RefreshGuard` works: it always sends a result.
                // Should it ever happen, the dead refresh must not stay in flight.
                let mut state = self.state();
                if state
                    .inflight
                    .as_ref()
                    .is_some_and(|rx| rx.same_channel(&outcome))
                {
                    state.inflight = None;
                }
                drop(state);
                break outcome.borrow().clone().unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Internal,
                        "session refresh ended without a result",
                    ))
                });
            }
        };
        match (result, fallback) {
            // A transient failure while the old UPST is still valid: use it. Any
            // other failure (reauthentication, configuration) is the answer.
            // Checked again now: the refresh may have taken long.
            (Err(e), Some(valid))
                if e.is_retryable() && valid.usable_at(self.clock.now(), EXPIRY_SKEW) =>
            {
                tracing::debug!(
                    error_kind = ?e.kind(),
                    "refresh failed transiently; still-valid session used"
                );
                Ok(valid)
            }
            (result, _) => result,
        }
    }

    pub(super) fn current_session(&self) -> Option<Arc<OciSession>> {
        let now = self.clock.now();
        self.state()
            .current
            .as_ref()
            .filter(|s| now < s.refresh_at())
            .cloned()
    }

    pub(super) fn invalidate(&self) {
        self.state().current = None;
    }

    /// Forgets `session` if it is still the current one.
    pub(super) fn invalidate_session(&self, session: &Arc<OciSession>) {
        let mut state = self.state();
        if state
            .current
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, session))
        {
            state.current = None;
            state.forced_next = true;
            state.refused = Some(Arc::clone(session));
        }
    }

    pub(super) fn session_refused(&self, session: &Arc<OciSession>) -> bool {
        let now = self.clock.now();
        // A clock that moved back ends the guard: a clock step never stretches it.
        if session.forced() && within(now, session.obtained_at(), FORCED_REFRESH_GUARD) {
            tracing::info!("401 for a session that replaced a refused one; not renewed again");
            return false;
        }
        tracing::info!("401 from OCI; session dropped for renewal");
        self.invalidate_session(session);
        true
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
    fn finish(&mut self, result: Result<Arc<OciSession>>) {
        let Some(tx) = self.tx.take() else { return };
        {
            let now = self.shared.clock.now();
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
                    tracing::info!(
                        forced = session.forced(),
                        expires_in_s = session
                            .expires_at()
                            .duration_since(now)
                            .map_or(0, |d| d.as_secs()),
                        "session refreshed"
                    );
                    state.current = Some(Arc::clone(session));
                    state.transient_failure_at = None;
                    state.refusal = None;
                    state.refused = None;
                }
                Err(error) => {
                    let retryable = error.is_retryable();
                    let fallback = retryable
                        && state
                            .current
                            .as_ref()
                            .is_some_and(|s| s.usable_at(now, EXPIRY_SKEW));
                    tracing::warn!(
                        error_kind = ?error.kind(),
                        http_status = error.http_status(),
                        retryable,
                        reauth_required = error.is_reauth_required(),
                        fallback,
                        oauth_error = error.oauth_error(),
                        opc_request_id = error.opc_request_id(),
                        "session refresh failed"
                    );
                    state.transient_failure_at = retryable.then_some(now);
                    if !retryable {
                        // Refused for good (reauthentication, ...): the old session
                        // must not come back as a later transient failure's fallback.
                        state.current = None;
                    }
                }
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
