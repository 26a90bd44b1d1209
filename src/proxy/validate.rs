//! Bearer validation in proxy mode: the proxy's own token -> its `jti` record ->
//! the upstream token set, refreshed at the domain when it is about to expire ->
//! the user's upstream token as [`AccessToken`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::model::{self, JTIS, JtiRecord, REVOKED, SETS, TokenSet};
use super::{Inner, upstream};
use crate::error::ErrorKind;
use crate::mcp::{AccessToken, Rejection};
use crate::secret::SecretString;

/// The upstream access token is refreshed when it expires within this margin: a
/// call in progress keeps a token that is valid for at least this long.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The collection of the cross-replica refresh locks, one per token set.
const REFRESH_LOCKS: &str = "refresh_lock";
/// The holder's work at the domain, the refresh and then the validation of the new
/// token (each under the HTTP client's 15 s total timeout), is cut off after this
/// long each...
const REFRESH_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(20);
/// ...and its store calls are tried this many times (a rotated refresh token that
/// is not stored is lost, and the login with it)...
const STORE_ATTEMPTS: u32 = 3;
/// ...so a refresh lock outlives a holder that died or stalled mid-refresh by
/// this: longer than the holder's worst case (the lock and the read, 40 s at the
/// domain, three tries each of the write and the revocation check at up to 5 s).
const REFRESH_LOCK_TTL: Duration = Duration::from_secs(90);
/// After a refresh whose new access token could not be validated, this process
/// leaves the set alone this long (the old token serves while it is valid)...
pub(super) const UNVALIDATED_BACKOFF: Duration = Duration::from_secs(10);
/// ...and this long after a refresh the domain did not answer (an error other
/// than `invalid_grant`, or the timeout): the callers queued behind it are
/// answered at once instead of each trying the domain in turn.
pub(super) const FAILED_REFRESH_BACKOFF: Duration = Duration::from_secs(5);
/// A replica waiting for another's refresh re-reads the set this often...
const REFRESH_WAIT_STEP: Duration = Duration::from_millis(50);
/// ...for at most this long in all (store calls included), then gives up for
/// this call.
const REFRESH_WAIT: Duration = Duration::from_secs(10);

/// Why no usable upstream token set is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SetError {
    /// Revoked, expired, or refused by the domain: the user must log in again.
    Gone,
    /// The store or the domain is unavailable now.
    Unavailable,
}

/// Default lifetime of a remembered positive validation.
pub(super) const DEFAULT_VALIDATION_TTL: Duration = Duration::from_secs(1);
/// Longest lifetime of a remembered validation the builder accepts: for that long
/// another replica may still accept a token revoked elsewhere.
pub(super) const MAX_VALIDATION_TTL: Duration = Duration::from_secs(60);

fn unix_time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Validates one of the proxy's access tokens (for [`BearerAuth`](crate::BearerAuth)):
/// from this replica's remembered validations when it holds one, else from the
/// store (and then remembered).
pub(crate) async fn check(inner: &Arc<Inner>, token: &str) -> Result<AccessToken, Rejection> {
    let now = inner.clock.now();
    if let Some(access) = inner.validations.get(token, now).await {
        return Ok(access);
    }
    // Taken before the store is read: an ending of a login from here on makes
    // what is read now stale.
    let epoch = inner.validations.epoch();
    let claims = inner
        .tokens
        .verify(token)
        .ok_or_else(|| Rejection::invalid("the token is not a valid token of this server"))?;
    if claims.exp <= model::unix(now) {
        return Err(Rejection::invalid("the token has expired"));
    }
    let record = model::get::<JtiRecord>(inner.store.as_ref(), JTIS, &claims.jti)
        .await
        .map_err(|_| Rejection::unavailable_because("the token store is unavailable"))?
        .ok_or_else(|| Rejection::invalid("the token has been revoked"))?;
    let set = current_set(inner, &record.set_id)
        .await
        .map_err(|e| match e {
            SetError::Gone => Rejection::invalid("the login has ended; log in again"),
            SetError::Unavailable => {
                Rejection::unavailable_because("the identity domain cannot renew the login now")
            }
        })?;
    let access = upstream_access_token(inner, &record.set_id, &set).await;
    let until = now
        .checked_add(inner.validations.ttl())
        .unwrap_or_else(|| unix_time(claims.exp))
        .min(unix_time(claims.exp))
        .min(unix_time(
            set.access_expires_at
                .saturating_sub(REFRESH_MARGIN.as_secs()),
        ));
    if now < until {
        inner
            .validations
            .insert(token, epoch, now, until, access.clone())
            .await;
    }
    Ok(access)
}

/// The user's upstream token as tools see it, parsed once per upstream token.
async fn upstream_access_token(inner: &Inner, set_id: &str, set: &TokenSet) -> AccessToken {
    if let Some(cached) = inner.parsed.get(set_id).await
        && cached.0 == set.access_token
    {
        return cached.1.clone();
    }
    // Verified when it was stored; only parsed here.
    let claims = crate::jwt::Claims::decode(
        &set.access_token,
        ErrorKind::SubjectTokenMalformed,
        "upstream token",
    )
    .map(|c| c.0)
    .unwrap_or_default();
    let token = AccessToken {
        token: SecretString::new(set.access_token.clone()),
        scopes: crate::mcp::scopes_of(&claims),
        claims: Arc::new(claims),
    };
    inner
        .parsed
        .insert(
            set_id.to_owned(),
            Arc::new((set.access_token.clone(), token.clone())),
        )
        .await;
    token
}

fn fresh(inner: &Inner, set: &TokenSet) -> bool {
    let now = model::unix(inner.clock.now());
    set.access_expires_at > now.saturating_add(REFRESH_MARGIN.as_secs())
}

/// The token set `set_id`, its access token refreshed at the domain first when it
/// expires within [`REFRESH_MARGIN`].
pub(super) async fn current_set(inner: &Arc<Inner>, set_id: &str) -> Result<TokenSet, SetError> {
    let set = model::get::<TokenSet>(inner.store.as_ref(), SETS, set_id)
        .await
        .map_err(|_| SetError::Unavailable)?
        .ok_or(SetError::Gone)?;
    if fresh(inner, &set) {
        return Ok(set);
    }
    refresh(inner, set_id).await
}

/// One refresh per set at a time in this process: callers queue on the set's lock
/// and re-read the set, so N concurrent callers cause one upstream refresh. The
/// refresh runs in its own task, so a caller that gives up does not cancel it
/// halfway (the domain may rotate the refresh token).
async fn refresh(inner: &Arc<Inner>, set_id: &str) -> Result<TokenSet, SetError> {
    let lock = {
        let mut map = inner
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(set_id.to_owned()).or_default())
    };
    let task_inner = Arc::clone(inner);
    let id = set_id.to_owned();
    let task = tokio::spawn(async move {
        let guard = Arc::clone(&lock).lock_owned().await;
        let result = refresh_locked(&task_inner, &id).await;
        drop(guard);
        let mut map = task_inner
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&id).is_some_and(|l| Arc::ptr_eq(l, &lock)) {
            map.remove(&id);
        }
        result
    });
    task.await.unwrap_or(Err(SetError::Unavailable))
}

fn refresh_locked<'a>(
    inner: &'a Inner,
    set_id: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = Result<TokenSet, SetError>> + Send + 'a>> {
    Box::pin(refresh_locked_inner(inner, set_id))
}

/// One refresh per set at a time across the replicas that share the store: a lock
/// (`put_if_absent`, [`REFRESH_LOCK_TTL`]) is taken first, and a replica that finds
/// it held re-reads the set until the holder has stored the refreshed one (bounded).
/// Without it two replicas would refresh with the same refresh token, and the domain,
/// which rotates them, would refuse the second and end the login. When the lock
/// cannot be had (the wait ran out, or the store failed), a shared store's replica
/// does not race the holder: it answers with the set while it is still valid, else
/// [`SetError::Unavailable`]; an in-process store refreshes anyway.
async fn refresh_locked_inner(inner: &Inner, set_id: &str) -> Result<TokenSet, SetError> {
    if backing_off(inner, set_id).await {
        // The answer comes from the stored set, without the domain: no store lock.
        return refresh_set(inner, set_id).await;
    }
    let store = inner.store.as_ref();
    let Ok(owner) = super::crypto::random_token() else {
        return refresh_set(inner, set_id).await;
    };
    let mut held = false;
    let deadline = tokio::time::Instant::now() + REFRESH_WAIT;
    while tokio::time::Instant::now() < deadline {
        match store
            .put_if_absent(
                REFRESH_LOCKS,
                set_id,
                owner.as_bytes().to_vec(),
                REFRESH_LOCK_TTL,
            )
            .await
        {
            Ok(true) => {
                held = true;
                break;
            }
            Ok(false) => {}
            Err(_) => break,
        }
        tokio::time::sleep(REFRESH_WAIT_STEP).await;
        let set = model::get::<TokenSet>(store, SETS, set_id)
            .await
            .map_err(|_| SetError::Unavailable)?
            .ok_or(SetError::Gone)?;
        if fresh(inner, &set) {
            return Ok(set);
        }
    }
    if !held && store.is_shared() {
        // Another replica is still refreshing (or the store fails): do not race it.
        let set = model::get::<TokenSet>(store, SETS, set_id)
            .await
            .ok()
            .flatten();
        return match set {
            Some(set) if set.access_expires_at > model::unix(inner.clock.now()) => Ok(set),
            _ => Err(SetError::Unavailable),
        };
    }
    let result = refresh_set(inner, set_id).await;
    if held {
        let _ = store
            .delete_if_equal(REFRESH_LOCKS, set_id, owner.as_bytes())
            .await;
    }
    result
}

/// Whether the set's refresh is being left alone in this process.
async fn backing_off(inner: &Inner, set_id: &str) -> bool {
    let now = inner.clock.now();
    inner
        .refresh_backoff
        .get(set_id)
        .await
        .is_some_and(|until| now < until)
}

/// Leaves the set's refresh alone in this process for `backoff` (by the injected
/// clock; the cache's own lifetime only bounds the entry's stay).
async fn back_off(inner: &Inner, set_id: &str, backoff: Duration) {
    let now = inner.clock.now();
    let until = now.checked_add(backoff).unwrap_or(now);
    inner.refresh_backoff.insert(set_id.to_owned(), until).await;
}

/// Refreshes the set at the domain unless it is fresh by now (the caller holds the
/// set's locks), or answers from the stored set while its refresh is backing off.
async fn refresh_set(inner: &Inner, set_id: &str) -> Result<TokenSet, SetError> {
    let store = inner.store.as_ref();
    let set = model::get::<TokenSet>(store, SETS, set_id)
        .await
        .map_err(|_| SetError::Unavailable)?
        .ok_or(SetError::Gone)?;
    if fresh(inner, &set) {
        return Ok(set);
    }
    let now = inner.clock.now();
    let still_valid = set.access_expires_at > model::unix(now);
    if backing_off(inner, set_id).await {
        return if still_valid {
            Ok(set)
        } else {
            Err(SetError::Unavailable)
        };
    }
    let Some(refresh_token) = set.refresh_token.as_deref() else {
        return if still_valid {
            Ok(set)
        } else {
            Err(SetError::Gone)
        };
    };
    let refreshed = tokio::time::timeout(
        REFRESH_UPSTREAM_TIMEOUT,
        inner.upstream.refresh(refresh_token),
    )
    .await;
    let tokens = match refreshed {
        Ok(Ok(tokens)) => tokens,
        Ok(Err(err)) if err.oauth_error() == Some("invalid_grant") => {
            tracing::info!(client_id = %set.client_id, outcome = "refused", error = %err, "oauth proxy upstream refresh");
            return refused(inner, set_id, refresh_token).await;
        }
        failed => {
            if let Ok(Err(err)) = failed {
                tracing::warn!(client_id = %set.client_id, outcome = "failed", error = %err, "oauth proxy upstream refresh");
            } else {
                tracing::warn!(client_id = %set.client_id, outcome = "timed_out", "oauth proxy upstream refresh");
            }
            back_off(inner, set_id, FAILED_REFRESH_BACKOFF).await;
            return if still_valid {
                Ok(set)
            } else {
                Err(SetError::Unavailable)
            };
        }
    };
    // From here the domain may have rotated the refresh token: the old one is
    // spent, so the new one is stored whatever happens to the new access token.
    let checked = tokio::time::timeout(
        REFRESH_UPSTREAM_TIMEOUT,
        inner.upstream.validate(&tokens.access_token),
    )
    .await;
    let validated = match checked {
        Ok(Ok(access)) => access
            .expires_at()
            .map(model::unix)
            .map(|expires_at| (access, expires_at)),
        Ok(Err(err)) => {
            tracing::warn!(client_id = %set.client_id, outcome = "unvalidated", error = %err, "oauth proxy upstream refresh");
            None
        }
        Err(_) => {
            tracing::warn!(client_id = %set.client_id, outcome = "unvalidated", "oauth proxy upstream refresh: validation timed out");
            None
        }
    };
    let (refresh_token, refresh_expires_at) = match tokens.refresh_token {
        Some(rt) => (
            Some(rt),
            Some(
                model::unix(now).saturating_add(
                    tokens
                        .refresh_expires_in
                        .unwrap_or(inner.upstream_refresh_lifetime.as_secs()),
                ),
            ),
        ),
        None => (set.refresh_token.clone(), set.refresh_expires_at),
    };
    // An access token that could not be checked is not used: the set keeps the
    // old one, with the new refresh token, and a call after the back-off
    // (`UNVALIDATED_BACKOFF`) refreshes again.
    let (access_token, access_expires_at) = match &validated {
        Some((_, expires_at)) => (tokens.access_token.clone(), *expires_at),
        None => (set.access_token.clone(), set.access_expires_at),
    };
    let new = TokenSet {
        access_token,
        access_expires_at,
        refresh_token,
        refresh_expires_at,
        subject: set.subject.clone(),
        client_id: set.client_id.clone(),
    };
    let ttl = model::until(now, new.expires_at());
    if let Err(err) = retried(|| model::put(store, SETS, set_id, &new, ttl)).await {
        tracing::warn!(client_id = %set.client_id, error = %err, "oauth proxy cannot store a refreshed login; the domain's rotated refresh token is lost");
        return Err(SetError::Unavailable);
    }
    // A revocation while the domain answered deleted the set; the put above must
    // not bring it back. A store that cannot tell fails closed.
    match retried(|| inner.store.get(REVOKED, set_id)).await {
        Ok(None) => {}
        revoked => {
            let _ = store.delete(SETS, set_id).await;
            inner.parsed.invalidate(set_id).await;
            inner.validations.clear();
            return Err(if revoked.is_ok() {
                SetError::Gone
            } else {
                tracing::warn!(client_id = %set.client_id, "oauth proxy cannot check a refreshed login for revocation; it ends");
                SetError::Unavailable
            });
        }
    }
    let Some((access, _)) = validated else {
        back_off(inner, set_id, UNVALIDATED_BACKOFF).await;
        return if still_valid {
            Ok(new)
        } else {
            Err(SetError::Unavailable)
        };
    };
    inner
        .parsed
        .insert(set_id.to_owned(), Arc::new((tokens.access_token, access)))
        .await;
    tracing::info!(client_id = %set.client_id, outcome = "refreshed", expires_in = upstream::secs(model::until(now, access_expires_at)), "oauth proxy upstream refresh");
    Ok(new)
}

/// `call`, tried up to [`STORE_ATTEMPTS`] times, 50 then 250 ms apart.
async fn retried<T, F, Fut>(call: F) -> crate::error::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let mut pause = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(_) if attempt < STORE_ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(5);
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

/// The domain refused `refused_token`: the login ends, unless another refresher
/// stored a rotated refresh token meanwhile (then the set is kept, and deleted
/// only while it still holds exactly the bytes that held the refused token).
async fn refused(inner: &Inner, set_id: &str, refused_token: &str) -> Result<TokenSet, SetError> {
    let store = inner.store.as_ref();
    let bytes = match store.get(SETS, set_id).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(SetError::Gone),
        Err(_) => return Err(SetError::Unavailable),
    };
    let current = model::decode::<TokenSet>(&bytes).map_err(|_| SetError::Unavailable)?;
    if current.refresh_token.as_deref() != Some(refused_token) {
        return if fresh(inner, &current) {
            Ok(current)
        } else {
            Err(SetError::Unavailable)
        };
    }
    let _ = store.delete_if_equal(SETS, set_id, &bytes).await;
    inner.parsed.invalidate(set_id).await;
    inner.validations.clear();
    Err(SetError::Gone)
}

/// Ends the token set `set_id` (revocation, a reused code or refresh token): a
/// tombstone for the set's lifetime first, so that a refresh in flight on any
/// replica deletes the set it stores again, then the set itself.
pub(super) async fn end_set(inner: &Inner, set_id: &str) -> crate::error::Result<()> {
    let store = inner.store.as_ref();
    // This replica stops answering from memory at once; the store follows.
    inner.validations.clear();
    let now = inner.clock.now();
    let ttl = match model::get::<TokenSet>(store, SETS, set_id).await {
        Ok(Some(set)) => model::until(now, set.expires_at()),
        _ => inner.upstream_refresh_lifetime,
    }
    .max(REFRESH_LOCK_TTL);
    // The set is deleted even when the tombstone cannot be written.
    let tombstone = store.put(REVOKED, set_id, b"1".to_vec(), ttl).await;
    let deleted = store.delete(SETS, set_id).await;
    inner.parsed.invalidate(set_id).await;
    // Again: a validation that read the set before the delete was made in the
    // epoch bumped above, so it is not remembered; this drops any made since.
    inner.validations.clear();
    tombstone.and(deleted)
}
