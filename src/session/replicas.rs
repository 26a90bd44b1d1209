//! OCI sessions shared across replicas through a [`Store`]: the stored form of a
//! session, and the distributed single-flight around an exchange.
//!
//! A session is stored in collection `session` under base64url(SHA-256(user
//! token)), never the token itself, until its UPST expires. Its value holds the
//! same hash, so an entry copied under another token's key is refused. Before
//! exchanging, a replica takes the lock `session-lock` (same key, `SET NX PX`, a
//! random owner); the others poll for the session the holder publishes. Any store
//! failure means a local exchange: the store saves exchanges, it never fails a
//! user's call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::OciSession;
use super::refresh::{EXPIRY_SKEW, Shared};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::Upst;
use crate::jwt::Claims;
use crate::key::SigningKey;
use crate::secret::SecretString;
use crate::store::{Store, StoreFuture};

/// The store collection of shared sessions.
pub(crate) const SESSION_COLLECTION: &str = "session";
/// The store collection of the exchange locks.
pub(crate) const LOCK_COLLECTION: &str = "session-lock";
/// Default lifetime of an exchange lock, and bound of a wait for its holder.
pub(crate) const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// Default bound of one store operation.
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause between two looks for the lock holder's session.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(200);
/// Rounds of lock contention before exchanging without the lock.
const CONTEND_ROUNDS: u32 = 3;
/// Version of the stored form.
const FORMAT: u8 = 1;

/// Store counters, shared by the signers of one cache.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    pub(crate) ops: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) shared_exchanges: AtomicU64,
}

/// The store of a cache's shared sessions and its settings.
pub(crate) struct SessionStore {
    store: Arc<dyn Store>,
    lock_ttl: Duration,
    timeout: Duration,
    pub(crate) stats: StoreStats,
    /// The last operation failed: the next success logs the recovery.
    failing: AtomicBool,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("store", &self.store)
            .field("lock_ttl", &self.lock_ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The stored form of a session (JSON; opaque bytes to the store).
#[derive(Serialize, Deserialize)]
struct Stored {
    v: u8,
    /// base64url(SHA-256(user token)): the token this session belongs to.
    sub: String,
    upst: String,
    /// base64url of the PKCS#8 DER private key.
    key: String,
    /// Local time of the exchange, in milliseconds since the Unix epoch.
    obtained_ms: u64,
}

impl Drop for Stored {
    fn drop(&mut self) {
        self.upst.zeroize();
        self.key.zeroize();
    }
}

/// What one refresh looks for in the store.
struct Lookup<'a> {
    key: String,
    subject_expires_at: Option<SystemTime>,
    /// The user token's `user_ocid` claim (identity-domain access tokens carry
    /// it): a stored UPST must be for that user.
    user_ocid: Option<&'a str>,
    forced: bool,
    /// The session OCI refused (a forced refresh must not take it back).
    refused_upst: Option<&'a SecretString>,
}

/// Why a stored session was not used.
enum Unusable {
    /// Not a session of ours: garbage, another format, another token's.
    Malformed(&'static str),
    /// A good session, but due for refresh or refused.
    Stale,
}

/// base64url(SHA-256(`token`)): the store key of a user token's session.
pub(crate) fn token_key(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

fn random_owner() -> Result<Vec<u8>> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Crypto, "no random bytes"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes).into_bytes())
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SessionStore {
    pub(crate) fn new(store: Arc<dyn Store>, lock_ttl: Duration, timeout: Duration) -> Self {
        Self {
            store,
            lock_ttl,
            timeout,
            stats: StoreStats::default(),
            failing: AtomicBool::new(false),
        }
    }

    /// One store operation: counted, bounded by the timeout, its failure logged
    /// once per outage.
    async fn op<T>(&self, future: StoreFuture<'_, T>) -> Result<T> {
        self.stats.ops.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "session store operation timed out",
            )),
        };
        match &result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("session store reachable again; sessions are shared again");
                }
            }
            Err(error) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error_kind = ?error.kind(),
                        "session store failing; replicas exchange locally until it returns"
                    );
                }
            }
        }
        result
    }

    /// A new session for `subject`: one another replica stored, else one this
    /// replica exchanges under the shared lock and stores, else (store failing,
    /// lock never won) one exchanged locally.
    pub(super) async fn refresh(
        &self,
        shared: &Shared,
        subject: &Arc<SecretString>,
        claims: &Claims,
        forced: bool,
        refused_upst: Option<&SecretString>,
    ) -> Result<Arc<OciSession>> {
        let lookup = Lookup {
            key: token_key(subject.expose_secret()),
            subject_expires_at: claims.time("exp"),
            user_ocid: claims.str("user_ocid"),
            forced,
            refused_upst,
        };
        match self.look(shared, &lookup).await {
            Ok(Some(session)) => return Ok(session),
            Ok(None) => {}
            Err(_) => {
                return shared
                    .exchange_with_fresh_key(subject, claims, forced)
                    .await;
            }
        }
        let Ok(owner) = random_owner() else {
            return shared
                .exchange_with_fresh_key(subject, claims, forced)
                .await;
        };
        for _ in 0..CONTEND_ROUNDS {
            let won = self.op(self.store.put_if_absent(
                LOCK_COLLECTION,
                &lookup.key,
                owner.clone(),
                self.lock_ttl,
            ));
            match won.await {
                Err(_) => {
                    return shared
                        .exchange_with_fresh_key(subject, claims, forced)
                        .await;
                }
                Ok(true) => {
                    return self
                        .exchange_holding_lock(shared, subject, claims, &lookup, &owner)
                        .await;
                }
                Ok(false) => match self.wait(shared, &lookup).await {
                    Err(_) => {
                        return shared
                            .exchange_with_fresh_key(subject, claims, forced)
                            .await;
                    }
                    Ok(Some(session)) => return Ok(session),
                    // The lock went without a session: contend again.
                    Ok(None) => {}
                },
            }
        }
        tracing::debug!("shared session lock never won; exchanging without it");
        let session = shared
            .exchange_with_fresh_key(subject, claims, forced)
            .await?;
        let _ = self.publish(shared, &lookup, &session).await;
        Ok(session)
    }

    /// The lock is ours: look again (the previous holder may have just finished),
    /// exchange, publish, release.
    async fn exchange_holding_lock(
        &self,
        shared: &Shared,
        subject: &Arc<SecretString>,
        claims: &Claims,
        lookup: &Lookup<'_>,
        owner: &[u8],
    ) -> Result<Arc<OciSession>> {
        let result = match self.look(shared, lookup).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) | Err(_) => {
                match shared
                    .exchange_with_fresh_key(subject, claims, lookup.forced)
                    .await
                {
                    Ok(session) => {
                        if self.publish(shared, lookup, &session).await.is_ok() {
                            self.stats.shared_exchanges.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(session)
                    }
                    Err(error) => Err(error),
                }
            }
        };
        let released = self.op(self
            .store
            .delete_if_equal(LOCK_COLLECTION, &lookup.key, owner));
        let _ = released.await;
        result
    }

    /// Waits for the lock holder's session, at most the lock's lifetime in all
    /// (store round trips included, so a slow store cannot stretch it): the
    /// session, or `None` when the lock went (or expired, or outlived the wait)
    /// without one.
    async fn wait(&self, shared: &Shared, lookup: &Lookup<'_>) -> Result<Option<Arc<OciSession>>> {
        let polls = async {
            let mut delay = POLL_FIRST;
            loop {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(POLL_MAX);
                if let Some(session) = self.look(shared, lookup).await? {
                    return Ok(Some(session));
                }
                let lock = self.op(self.store.get(LOCK_COLLECTION, &lookup.key));
                if lock.await?.is_none() {
                    // The holder publishes before it releases: one last look.
                    return self.look(shared, lookup).await;
                }
            }
        };
        // `timeout` saturates a huge lifetime instead of overflowing.
        match tokio::time::timeout(self.lock_ttl, polls).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::debug!("shared session lock outlived its wait");
                Ok(None)
            }
        }
    }

    /// The usable session the store holds for this token, if any. An entry that
    /// is not one is a miss.
    async fn look(&self, shared: &Shared, lookup: &Lookup<'_>) -> Result<Option<Arc<OciSession>>> {
        let found = self.op(self.store.get(SESSION_COLLECTION, &lookup.key));
        let Some(bytes) = found.await? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        match decode(&bytes, shared, lookup) {
            Ok(session) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    forced = lookup.forced,
                    "session taken from the shared store"
                );
                Ok(Some(Arc::new(session)))
            }
            Err(Unusable::Malformed(reason)) => {
                tracing::warn!(reason, "stored session unreadable; ignored");
                Ok(None)
            }
            Err(Unusable::Stale) => Ok(None),
        }
    }

    /// Stores `session` for the other replicas until its UPST expires.
    async fn publish(
        &self,
        shared: &Shared,
        lookup: &Lookup<'_>,
        session: &OciSession,
    ) -> Result<()> {
        let now = shared.clock.now();
        let Ok(ttl) = session.expires_at().duration_since(now) else {
            return Ok(());
        };
        if ttl.is_zero() {
            return Ok(());
        }
        let value = encode(session, &lookup.key)?;
        let stored = self.op(self
            .store
            .put(SESSION_COLLECTION, &lookup.key, value.to_vec(), ttl));
        stored.await
    }
}

/// The stored form of `session` for the token whose key is `token_key`.
fn encode(session: &OciSession, token_key: &str) -> Result<Zeroizing<Vec<u8>>> {
    let der = session.key.to_pkcs8_der()?;
    let stored = Stored {
        v: FORMAT,
        sub: token_key.to_owned(),
        upst: session.upst.token().expose_secret().to_owned(),
        key: URL_SAFE_NO_PAD.encode(der.as_slice()),
        obtained_ms: millis_since_epoch(session.obtained_at()),
    };
    serde_json::to_vec(&stored)
        .map(Zeroizing::new)
        .map_err(|_| Error::new(ErrorKind::Internal, "session could not be serialized"))
}

/// A stored session, if it is one of this token's and usable now.
fn decode(
    bytes: &[u8],
    shared: &Shared,
    lookup: &Lookup<'_>,
) -> std::result::Result<OciSession, Unusable> {
    let stored: Stored =
        serde_json::from_slice(bytes).map_err(|_| Unusable::Malformed("not a stored session"))?;
    if stored.v != FORMAT {
        return Err(Unusable::Malformed("unknown stored session format"));
    }
    if stored.sub != lookup.key {
        return Err(Unusable::Malformed(
            "stored session belongs to another token",
        ));
    }
    if lookup
        .refused_upst
        .is_some_and(|refused| refused.expose_secret() == stored.upst)
    {
        return Err(Unusable::Stale);
    }
    let upst = Upst::parse(&stored.upst)
        .map_err(|_| Unusable::Malformed("stored session token unreadable"))?;
    if lookup
        .user_ocid
        .is_some_and(|user| user != upst.user_ocid())
    {
        return Err(Unusable::Malformed("stored session is another user's"));
    }
    let der = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&stored.key)
            .map_err(|_| Unusable::Malformed("stored session key unreadable"))?,
    );
    let key = SigningKey::from_pkcs8_der(&der)
        .map_err(|_| Unusable::Malformed("stored session key unreadable"))?;
    if key.public_key() != upst.public_key() {
        return Err(Unusable::Malformed(
            "stored session key is not the one its token is bound to",
        ));
    }
    let now = shared.clock.now();
    let obtained_at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(stored.obtained_ms))
        .unwrap_or(now)
        .min(now);
    let session = OciSession::new(
        upst,
        key,
        obtained_at,
        shared.margin,
        lookup.subject_expires_at,
        lookup.forced,
    )
    .map_err(|_| Unusable::Stale)?;
    if now < session.refresh_at() && session.usable_at(now, EXPIRY_SKEW) {
        Ok(session)
    } else {
        Err(Unusable::Stale)
    }
}
