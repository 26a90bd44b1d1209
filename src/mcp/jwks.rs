//! The identity domain's signing keys: OIDC discovery, the JWKS, and their cache.
//!
//! Fetches run in their own task, never under a lock a validation waits on: a
//! caller that gives up (client gone, outer timeout) does not cancel the fetch nor
//! erase the record of the attempt, so the refetch limit holds, and tokens naming a
//! known key keep validating while the domain is slow.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use url::Url;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::is_loopback;

/// Keys older than this are fetched again (in the background) on the next request,
/// so keys removed from the JWKS stop being trusted.
const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// Largest discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS (OCI identity domains publish one or two); later
/// ones are ignored, so a document cannot make a validator hold thousands.
pub(super) const MAX_KEYS: usize = 64;
/// Longest wait for one document.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shorter refetch interval (or the refetch interval, if shorter) that applies
/// after a failed fetch, and to a token that says it was issued after the keys in
/// hand were fetched: a key the domain rolled to since, or during an outage, is
/// fetched within seconds, not a whole refetch interval later. Tokens that predate
/// the keys (and whose kid the keys lack) still cost at most one fetch per refetch
/// interval; forged ones claiming to be newer, at most one per this interval.
pub(super) const SHORT_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Why no key is available for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Miss {
    /// The keys are known and trusted, none has this `kid`, the last fetch
    /// succeeded, and the token does not say it was issued after it started.
    Unknown,
    /// No trusted keys (never fetched, or older than the maximum age), or the
    /// `kid` may name a key published since the keys in hand were fetched: the last
    /// fetch failed, or the token says it was issued after that fetch started.
    Unavailable,
}

/// What the cache is configured with.
pub(super) struct JwksSettings {
    pub(super) domain_url: Url,
    pub(super) http: reqwest::Client,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) refetch_interval: Duration,
    pub(super) max_key_age: Duration,
    /// Clock-skew allowance: how far ahead of now a token's `iat` may be and still
    /// count as newer than the keys.
    pub(super) leeway: Duration,
}

#[derive(Default)]
struct Keys {
    issuer: Option<String>,
    by_kid: HashMap<String, DecodingKey>,
    /// When the keys in hand were fetched (the attempt's start).
    fetched_at: Option<SystemTime>,
    /// Last fetch attempt, recorded before it starts.
    attempted_at: Option<SystemTime>,
    /// A fetch task is running.
    fetching: bool,
    /// The last fetch that ended failed.
    failed: bool,
    /// Bumped by every successful fetch: a validation remembered with the keys of
    /// an older generation is checked again (its key may have been withdrawn).
    generation: u64,
}

/// The cached keys of one identity domain.
pub(super) struct KeyCache {
    settings: JwksSettings,
    keys: Mutex<Keys>,
    /// Bumped when a fetch ends (successful or not).
    fetched: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("domain_url", &self.settings.domain_url.as_str())
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    pub(super) fn new(settings: JwksSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            keys: Mutex::new(Keys::default()),
            fetched: tokio::sync::watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key for `kid` (without a kid, only an unambiguous single key), the
    /// issuer and the keys' generation. Known keys are answered at once (stale ones refreshed in the
    /// background); an unknown kid waits for a fetch, at most one per refetch
    /// interval ([`SHORT_REFETCH_INTERVAL`] after a failed fetch, or when
    /// `issued_at`, the token's unverified `iat`, read only on a miss, is later
    /// than the keys in hand).
    pub(super) async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        issued_at: impl FnOnce() -> Option<SystemTime>,
    ) -> std::result::Result<(DecodingKey, String, u64), Miss> {
        if let Some(found) = self.known(kid) {
            return Ok(found);
        }
        let issued_at = issued_at();
        let mut fetched = {
            let mut keys = self.lock();
            let now = self.settings.clock.now();
            if let Some(found) = self
                .trusted(&keys, now)
                .then(|| lookup(&keys, kid))
                .flatten()
            {
                // Fetched meanwhile.
                return Ok(found);
            }
            let newer = issued_after(&keys, issued_at, now, self.settings.leeway);
            let short = keys.failed || newer;
            let start = self.start_fetch(&mut keys, now, short);
            if start.is_none() && !keys.fetching {
                // Rate-limited: answer from what is known, without asking the domain.
                return Err(self.miss(&keys, now, newer));
            }
            // Subscribed under the lock: the fetch cannot end before this.
            let fetched = self.fetched.subscribe();
            drop(keys);
            // Spawned outside the lock: a task dropped unrun (runtime shutting down)
            // takes the lock to end the fetch.
            if let Some(fetch) = start {
                fetch.spawn(now);
            }
            fetched
        };
        // The fetch runs in its own task: dropping this future does not cancel it.
        let _ = fetched.changed().await;
        let keys = self.lock();
        let now = self.settings.clock.now();
        match self
            .trusted(&keys, now)
            .then(|| lookup(&keys, kid))
            .flatten()
        {
            Some(found) => Ok(found),
            None => {
                let newer = issued_after(&keys, issued_at, now, self.settings.leeway);
                Err(self.miss(&keys, now, newer))
            }
        }
    }

    /// A trusted key named `kid`, starting the hourly refresh when it is due.
    fn known(self: &Arc<Self>, kid: Option<&str>) -> Option<(DecodingKey, String, u64)> {
        let mut keys = self.lock();
        let now = self.settings.clock.now();
        let found = self
            .trusted(&keys, now)
            .then(|| lookup(&keys, kid))
            .flatten()?;
        let start = refresh_due(&keys, now)
            .then(|| self.start_fetch(&mut keys, now, false))
            .flatten();
        drop(keys);
        if let Some(fetch) = start {
            fetch.spawn(now);
        }
        Some(found)
    }

    /// Whether a validation made with `kid`'s key in `generation` still stands: no
    /// fetch has replaced the keys since, `kid` still names a key, and the keys
    /// are trusted (younger than the maximum age). Starts the hourly refresh when
    /// it is due, as [`KeyCache::key_for`] does. No signature work.
    pub(super) fn still_trusts(self: &Arc<Self>, kid: Option<&str>, generation: u64) -> bool {
        let mut keys = self.lock();
        let now = self.settings.clock.now();
        let stands = keys.generation == generation
            && self.trusted(&keys, now)
            && key_of(&keys, kid).is_some()
            && keys.issuer.is_some();
        let start = (stands && refresh_due(&keys, now))
            .then(|| self.start_fetch(&mut keys, now, false))
            .flatten();
        drop(keys);
        if let Some(fetch) = start {
            fetch.spawn(now);
        }
        stands
    }

    /// Whether the keys in hand are younger than the maximum age.
    fn trusted(&self, keys: &Keys, now: SystemTime) -> bool {
        // A clock that moved back before the fetch does not extend the keys' trust.
        keys.fetched_at.is_some_and(|at| {
            now.duration_since(at)
                .is_ok_and(|age| age < self.settings.max_key_age)
        })
    }

    fn miss(&self, keys: &Keys, now: SystemTime, newer: bool) -> Miss {
        if self.trusted(keys, now) && !keys.by_kid.is_empty() && !keys.failed && !newer {
            Miss::Unknown
        } else {
            Miss::Unavailable
        }
    }

    /// Claims a fetch unless one is running or the last attempt was within the
    /// refetch interval ([`SHORT_REFETCH_INTERVAL`] if `short`: for an unknown
    /// kid after a failed fetch, or on a token newer than the keys; the hourly
    /// refresh keeps the whole interval, so a domain that is down costs known keys
    /// one attempt per interval); records the attempt first. The caller spawns the
    /// claimed fetch once it has released the lock.
    fn start_fetch(
        self: &Arc<Self>,
        keys: &mut Keys,
        now: SystemTime,
        short: bool,
    ) -> Option<FetchDone> {
        let interval = if short {
            self.settings.refetch_interval.min(SHORT_REFETCH_INTERVAL)
        } else {
            self.settings.refetch_interval
        };
        let recent = keys
            .attempted_at
            .is_some_and(|at| now.duration_since(at).is_ok_and(|since| since < interval));
        if keys.fetching || recent {
            return None;
        }
        keys.attempted_at = Some(now);
        keys.fetching = true;
        Some(FetchDone(Arc::clone(self)))
    }

    async fn refresh(&self, attempted_at: SystemTime) {
        let domain = self.settings.domain_url.host_str().unwrap_or_default();
        let started = tokio::time::Instant::now();
        tracing::debug!(domain, "jwks fetch started");
        let outcome = self.fetch().await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok((issuer, by_kid)) => {
                tracing::info!(domain, keys = by_kid.len(), latency_ms, "jwks fetched");
                let mut keys = self.lock();
                keys.issuer = Some(issuer);
                keys.by_kid = by_kid;
                keys.fetched_at = Some(attempted_at);
                keys.generation = keys.generation.wrapping_add(1);
                keys.failed = false;
            }
            Err(error) => {
                tracing::warn!(domain, latency_ms, error = %error, "jwks fetch failed");
                self.lock().failed = true;
            }
        }
    }

    async fn fetch(&self) -> Result<(String, HashMap<String, DecodingKey>)> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.domain_url.as_str().trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let bad = || {
            Error::new(
                ErrorKind::MalformedResponse,
                "discovery document lacks issuer or jwks_uri",
            )
        };
        let issuer = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let jwks = self.get_json(&jwks_uri).await?;
        let by_kid = usable_keys(jwks.get("keys").and_then(Value::as_array));
        Ok((issuer, by_kid))
    }

    async fn get_json(&self, url: &str) -> Result<Map<String, Value>> {
        let failed = || {
            Error::new(
                ErrorKind::Transport,
                "cannot fetch an identity domain document",
            )
        };
        let parsed = Url::parse(url).map_err(|_| failed())?;
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && is_loopback(parsed.host()))
        {
            return Err(failed());
        }
        let response = self
            .settings
            .http
            .get(parsed.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| failed().with_source(e.without_url()))?;
        // A caller's client may follow redirects: only the URL asked for counts.
        if !response.status().is_success() || response.url() != &parsed {
            return Err(failed());
        }
        let bytes = crate::http_util::read_body_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| match e {
                crate::http_util::BodyError::Transport(e) => failed().with_source(e),
                crate::http_util::BodyError::TooLarge => failed(),
            })?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(failed()),
        }
    }
}

/// The first [`MAX_KEYS`] usable keys of a JWKS's `keys`, by kid; one warning
/// when entries beyond them are ignored (they are not parsed).
fn usable_keys(entries: Option<&Vec<Value>>) -> HashMap<String, DecodingKey> {
    let mut by_kid = HashMap::new();
    let mut entries = entries.into_iter().flatten();
    // Each key on its own: one key of an unknown type does not hide the others.
    for entry in entries.by_ref() {
        if let Some((kid, key)) = crate::jwt::verification_key(entry) {
            by_kid.insert(kid, key);
            if by_kid.len() >= MAX_KEYS {
                break;
            }
        }
    }
    let ignored = entries.count();
    if ignored > 0 {
        tracing::warn!(
            kept = by_kid.len(),
            ignored,
            "jwks lists more keys than are kept; the rest are ignored"
        );
    }
    by_kid
}

/// Ends a fetch, however its task ends: clears the flag and wakes the waiters.
struct FetchDone(Arc<KeyCache>);

impl FetchDone {
    /// Runs the claimed fetch in its own task; dropping the task ends the fetch.
    fn spawn(self, attempted_at: SystemTime) {
        tokio::spawn(async move {
            let cache = Arc::clone(&self.0);
            cache.refresh(attempted_at).await;
            drop(self);
        });
    }
}

impl Drop for FetchDone {
    fn drop(&mut self) {
        self.0.lock().fetching = false;
        self.0
            .fetched
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}

/// Whether a token issued at `issued_at` (its unverified `iat`) says it was issued
/// no earlier than the second the fetch of the keys in hand started (whole
/// seconds, as `iat` is: a key rolled in that second may be missing from them), and
/// not implausibly late (after `now` plus `leeway`: a forged far-future `iat` gets
/// no shorter refetch interval and no 503).
fn issued_after(
    keys: &Keys,
    issued_at: Option<SystemTime>,
    now: SystemTime,
    leeway: Duration,
) -> bool {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let latest = now.checked_add(leeway).unwrap_or(now);
    issued_at
        .is_some_and(|iat| iat <= latest && keys.fetched_at.is_none_or(|at| secs(iat) >= secs(at)))
}

/// Whether the keys in hand are due for their hourly refresh (made in the
/// background while they still answer). A clock that moved back before the fetch
/// makes them not due.
fn refresh_due(keys: &Keys, now: SystemTime) -> bool {
    keys.fetched_at
        .and_then(|at| now.duration_since(at).ok())
        .is_some_and(|age| age >= REFRESH_AFTER)
}

/// The key for `kid` (without a kid, only an unambiguous single key) and the issuer.
fn lookup(keys: &Keys, kid: Option<&str>) -> Option<(DecodingKey, String, u64)> {
    let key = key_of(keys, kid)?;
    Some((key.clone(), keys.issuer.clone()?, keys.generation))
}

fn key_of<'k>(keys: &'k Keys, kid: Option<&str>) -> Option<&'k DecodingKey> {
    match kid {
        Some(kid) => keys.by_kid.get(kid),
        None if keys.by_kid.len() == 1 => keys.by_kid.values().next(),
        None => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(kid: &str) -> Value {
        let pem = include_str!("../../fixtures/keys/rsa2048-pkcs8.pem");
        let key = crate::SigningKey::from_pem(pem).unwrap();
        let public = key.public_key();
        serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                           "n": public.jwk_n(), "e": public.jwk_e()})
    }

    #[test]
    fn a_jwks_of_ten_thousand_keys_keeps_the_first_sixty_four() {
        let one = key("k");
        let entries: Vec<Value> = (0..10_000)
            .map(|i| {
                let mut k = one.clone();
                k["kid"] = Value::String(format!("k{i}"));
                k
            })
            .collect();
        let kept = usable_keys(Some(&entries));
        assert_eq!(kept.len(), MAX_KEYS);
        assert!(kept.contains_key("k0") && kept.contains_key("k63"));
        assert!(!kept.contains_key("k64"));
    }

    #[test]
    fn unusable_entries_do_not_count_against_the_cap() {
        let mut entries = vec![serde_json::json!({"kty": "EC"}); 100];
        entries.push(key("late"));
        let kept = usable_keys(Some(&entries));
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("late"));
    }
}
