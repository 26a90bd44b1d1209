//! One signer per user token: bounded, expiring, single-flight, never shared
//! between users.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{TokenExchange, check_subject};
use crate::key::KeyPool;
use crate::secret::SecretString;
use crate::session::{
    DEFAULT_LOCK_TTL, DEFAULT_REFRESH_MARGIN, DEFAULT_STORE_TIMEOUT, ExchangeStats, SessionStore,
};
use crate::signer::TokenExchangeSigner;
use crate::store::Store;

/// Default number of users' signers kept.
pub(crate) const DEFAULT_CAPACITY: u64 = 10_000;

type FastHash = foldhash::fast::RandomState;

/// A whole access token as a cache key: equal only to the very same token.
#[derive(Clone)]
struct TokenKey(Arc<SecretString>);

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for TokenKey {}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.expose_secret().hash(state);
    }
}

// Lookups by `&str` avoid copying the token; hashing and equality agree with `str`.
impl std::borrow::Borrow<str> for TokenKey {
    fn borrow(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A token's identity as its issuer states it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenId {
    iss: Option<String>,
    jti: String,
}

#[derive(Clone)]
struct Entry {
    /// The subject token's `exp`: the entry's lifetime.
    expires_at: SystemTime,
    signer: Arc<TokenExchangeSigner>,
}

/// Entries live until their token's `exp`.
struct UntilTokenExpiry(Arc<dyn Clock>);

impl UntilTokenExpiry {
    fn remaining(&self, expires_at: SystemTime) -> Option<Duration> {
        Some(
            expires_at
                .duration_since(self.0.now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

impl Expiry<TokenKey, Entry> for UntilTokenExpiry {
    fn expire_after_create(&self, _: &TokenKey, entry: &Entry, _: Instant) -> Option<Duration> {
        self.remaining(entry.expires_at)
    }
}

impl Expiry<TokenId, (TokenKey, SystemTime)> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenId,
        value: &(TokenKey, SystemTime),
        _: Instant,
    ) -> Option<Duration> {
        self.remaining(value.1)
    }

    /// A take-over lives until the new holder's `exp`, not the old one's.
    fn expire_after_update(
        &self,
        _: &TokenId,
        value: &(TokenKey, SystemTime),
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value.1)
    }
}

/// Counters of a [`SignerCache`]; see [`SignerCache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found the token's signer.
    pub hits: u64,
    /// Lookups that created a signer.
    pub misses: u64,
    /// Successful token exchanges by the cache's signers.
    pub exchanges: u64,
    /// Failed token exchanges.
    pub failures: u64,
    /// Entries evicted for capacity or expiry.
    pub evictions: u64,
    /// Tokens refused because another cached token holds their (`iss`, `jti`).
    pub conflicts: u64,
    /// Operations on the shared session store (see [`SignerCacheBuilder::store`]),
    /// failed ones included. A warm call makes none.
    pub store_ops: u64,
    /// Sessions taken from the store (made by another replica, or by this one
    /// before), with no exchange.
    pub store_hits: u64,
    /// Store operations that failed or timed out (the call went on without the
    /// store).
    pub store_errors: u64,
    /// Exchanges made under the store's lock whose session was stored for the
    /// other replicas.
    pub shared_exchanges: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    conflicts: AtomicU64,
}

/// Every signer the cache made that is still alive anywhere (cached, or held by a
/// caller after moka evicted it or its admission policy turned it away), held
/// weakly by the hash of its token. A miss looks here first, so a token never has
/// two live signers, and concurrent first calls make one exchange even when the
/// cache is full.
struct Live {
    signers: HashMap<u64, Weak<TokenExchangeSigner>>,
    /// The size at which dead entries are swept next.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl Live {
    fn find(&self, hash: u64, token: &str) -> Option<Arc<TokenExchangeSigner>> {
        self.signers
            .get(&hash)
            .and_then(Weak::upgrade)
            .filter(|signer| {
                signer
                    .provider()
                    .subject_token()
                    .is_some_and(|t| t.expose_secret() == token)
            })
    }

    /// Files `signer` (a hash collision replaces the other token's entry: that
    /// token only loses this protection, never gets this signer).
    fn insert(&mut self, hash: u64, signer: &Arc<TokenExchangeSigner>) {
        self.signers.insert(hash, Arc::downgrade(signer));
        if self.signers.len() >= self.sweep_at {
            self.signers.retain(|_, weak| weak.strong_count() > 0);
            self.sweep_at = (self.signers.len() * 2).max(MIN_SWEEP);
        }
    }
}

struct Inner {
    /// Signers by the exact token that created them.
    entries: Cache<TokenKey, Entry, FastHash>,
    live: Mutex<Live>,
    hasher: FastHash,
    /// Which token holds each (`iss`, `jti`).
    ids: Cache<TokenId, (TokenKey, SystemTime), FastHash>,
    exchange: TokenExchange,
    pool: KeyPool,
    clock: Arc<dyn Clock>,
    margin: Duration,
    counters: Arc<Counters>,
    exchange_stats: Arc<ExchangeStats>,
    replicas: Option<Arc<SessionStore>>,
}

/// One [`TokenExchangeSigner`] per user token, for servers that act for many users.
///
/// - **Isolation**: a signer is filed under the exact token that created it and is
///   returned only for that token. A different token presenting the same issuer
///   and `jti` gets [`ErrorKind::SubjectTokenConflict`], and the entry is not
///   replaced; tokens without `jti` are told apart by their full text, never by a
///   shared key.
/// - **Lifetime**: an entry lives until its token's `exp`; an expired token is
///   refused and never reaches its signer. At most `capacity` entries are kept
///   (default 10 000); the least useful are evicted.
/// - **One exchange**: concurrent first calls for one token create one signer,
///   whose single-flight refresh makes one exchange, even when the cache is full
///   and turns the new entry away (signers still in use are found again). A
///   transient exchange failure is not remembered; a refusal (non-retryable, for
///   example `invalid_grant`) is returned again without an exchange for 30 s.
/// - **Fast hits**: a hit hashes the token once (foldhash, randomly seeded) and
///   compares it byte for byte; no JWT parsing, no SHA-256.
/// - **Shared across replicas** (with [`SignerCacheBuilder::store`]): a signer
///   with no session first looks in the store for one another replica made, and
///   takes a lock there before exchanging, so concurrent first calls across
///   replicas cost one exchange; refreshes are coordinated the same way. A warm
///   call never touches the store; a failing store means local exchanges, never a
///   failed call.
///
/// Cheap to clone; clones share the entries.
#[derive(Clone)]
pub struct SignerCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for SignerCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerCache")
            .field("entries", &self.inner.entries.entry_count())
            .field("shared_store", &self.inner.replicas)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`SignerCache`].
#[derive(Debug)]
pub struct SignerCacheBuilder {
    exchange: TokenExchange,
    capacity: u64,
    pool: Option<KeyPool>,
    clock: Option<Arc<dyn Clock>>,
    margin: Duration,
    store: Option<Arc<dyn Store>>,
    allow_unencrypted_store: bool,
    lock_ttl: Duration,
    store_timeout: Duration,
}

/// Why a store shared with other processes must encrypt (the sessions hold UPSTs
/// and their private keys).
const UNENCRYPTED_STORE: &str = "the session store is shared but does not encrypt at rest: wrap it in an EncryptedStore (allow_unencrypted_store is for tests only)";

impl SignerCacheBuilder {
    /// Shares sessions with the other replicas through `store` (default: none).
    ///
    /// A session is stored in collection `session` under base64url(SHA-256(user
    /// token)) (never the token) until its UPST expires; its value holds the UPST
    /// and its private key (PKCS#8). Exchanges take the lock `session-lock` (same
    /// key, `SET NX PX`).
    ///
    /// A store shared with other processes ([`Store::is_shared`], e.g. a Redis
    /// store) must encrypt at rest ([`Store::encrypts_at_rest`], e.g. wrapped in an
    /// `EncryptedStore`): [`try_build`](Self::try_build) refuses one that does not,
    /// and [`build`](Self::build) shares nothing through it (unless
    /// [`allow_unencrypted_store`](Self::allow_unencrypted_store)).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Accepts a shared store that does not encrypt (plaintext UPSTs and private
    /// keys in Redis). For tests only.
    #[must_use]
    pub fn allow_unencrypted_store(mut self) -> Self {
        self.allow_unencrypted_store = true;
        self
    }

    /// How long an exchange lock in the store lives, so that it expires if its
    /// holder dies, and how long the other replicas wait for its holder's session
    /// before contending again (default 30 s; zero means the default).
    ///
    /// The trade-off: a holder slower than this lets another replica exchange in
    /// parallel (a second exchange, never a wrong session: the lock's release is
    /// checked against its owner). An exchange's worst case with the default
    /// settings is 61 s (three attempts of 15 s and two back-offs of 8 s), but a
    /// normal one takes well under a second. A longer lifetime makes the other
    /// replicas' users wait that much longer when a holder dies mid-exchange.
    #[must_use]
    pub fn store_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = if ttl.is_zero() { DEFAULT_LOCK_TTL } else { ttl };
        self
    }

    /// The bound of one store operation (default 2 s; zero means the default): a
    /// slower answer counts as a store failure and the replica exchanges locally.
    #[must_use]
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = if timeout.is_zero() {
            DEFAULT_STORE_TIMEOUT
        } else {
            timeout
        };
        self
    }

    /// The most users' signers kept (default 10 000).
    #[must_use]
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// The key pool shared by all signers (default: [`KeyPool::builder`]'s adaptive
    /// pool, 48 keys ready, up to 256 in bursts). It starts filling when the cache is
    /// built (inside a tokio runtime; else at the first take).
    #[must_use]
    pub fn key_pool(mut self, pool: KeyPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The signers' refresh margin (default 5 minutes).
    #[must_use]
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The clock for expiry decisions (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a [`store`](Self::store) shared with other
    /// processes that does not encrypt at rest, without
    /// [`allow_unencrypted_store`](Self::allow_unencrypted_store).
    pub fn try_build(self) -> Result<SignerCache> {
        if self.refuses_store() {
            return Err(Error::new(ErrorKind::InvalidConfig, UNENCRYPTED_STORE));
        }
        Ok(self.build_unchecked())
    }

    /// Builds the cache. A [`store`](Self::store) that
    /// [`try_build`](Self::try_build) refuses is not used (each replica exchanges
    /// for itself) and an error is logged.
    #[must_use]
    pub fn build(mut self) -> SignerCache {
        if self.refuses_store() {
            tracing::error!("{UNENCRYPTED_STORE}; sessions are not shared");
            self.store = None;
        }
        self.build_unchecked()
    }

    /// Whether the store is shared, does not encrypt, and was not allowed to.
    fn refuses_store(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|store| store.is_shared() && !store.encrypts_at_rest())
            && !self.allow_unencrypted_store
    }

    fn build_unchecked(self) -> SignerCache {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let entries = Cache::builder()
            .max_capacity(self.capacity)
            .expire_after(UntilTokenExpiry(Arc::clone(&clock)))
            .eviction_listener(move |_key, _entry, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    tracing::debug!(cause = ?cause, "signer cache eviction");
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(FastHash::default());
        let pool = self.pool.unwrap_or_else(|| KeyPool::builder().build());
        pool.fill();
        let ids = Cache::builder()
            .max_capacity(self.capacity)
            .expire_after(UntilTokenExpiry(Arc::clone(&clock)))
            .build_with_hasher(FastHash::default());
        SignerCache {
            inner: Arc::new(Inner {
                entries,
                live: Mutex::new(Live {
                    signers: HashMap::new(),
                    sweep_at: MIN_SWEEP,
                }),
                hasher: FastHash::default(),
                ids,
                exchange: self.exchange,
                pool,
                clock,
                margin: self.margin,
                counters,
                exchange_stats: Arc::default(),
                replicas: self.store.map(|store| {
                    Arc::new(SessionStore::new(store, self.lock_ttl, self.store_timeout))
                }),
            }),
        }
    }
}

impl Inner {
    /// Drops `token`'s signer from the live table, so its next use creates another.
    fn forget_live(&self, token: &SecretString) {
        let hash = self.hasher.hash_one(token.expose_secret());
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.find(hash, token.expose_secret()).is_some() {
            live.signers.remove(&hash);
        }
    }
}

fn expired() -> Error {
    Error::new(
        ErrorKind::SubjectTokenExpired,
        "subject token has expired; the user must log in again",
    )
}

fn conflict() -> Error {
    Error::new(
        ErrorKind::SubjectTokenConflict,
        "another token with the same issuer and jti is cached; refusing to share its signer",
    )
}

impl SignerCache {
    /// A builder for a cache whose signers exchange through `exchange`.
    #[must_use]
    pub fn builder(exchange: TokenExchange) -> SignerCacheBuilder {
        SignerCacheBuilder {
            exchange,
            capacity: DEFAULT_CAPACITY,
            pool: None,
            clock: None,
            margin: DEFAULT_REFRESH_MARGIN,
            store: None,
            allow_unencrypted_store: false,
            lock_ttl: DEFAULT_LOCK_TTL,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }

    /// The signer for `token` (a user's access token), created if needed. No
    /// exchange happens here: the signer exchanges on first use.
    ///
    /// # Errors
    /// [`ErrorKind::SubjectTokenMalformed`] for a token that is not a JWT or has no
    /// `exp`, [`ErrorKind::SubjectTokenExpired`] for an expired one,
    /// [`ErrorKind::SubjectTokenConflict`] for a token whose issuer and `jti`
    /// belong to another cached token.
    pub async fn signer_for(&self, token: &SecretString) -> Result<Arc<TokenExchangeSigner>> {
        let inner = &self.inner;
        if let Some(entry) = inner.entries.get(token.expose_secret()).await {
            if entry.expires_at <= inner.clock.now() {
                inner.forget_live(token);
                inner.entries.invalidate(token.expose_secret()).await;
                return Err(expired());
            }
            inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("signer cache hit");
            return Ok(entry.signer);
        }

        // Miss: read the token, claim its id, create its signer.
        let claims = check_subject(token.expose_secret(), inner.clock.now())?;
        let key = TokenKey(Arc::new(token.clone()));
        let expires_at = claims.time("exp").ok_or_else(|| {
            Error::new(
                ErrorKind::SubjectTokenMalformed,
                "subject token has no exp claim, so its signer's lifetime is unbounded",
            )
        })?;
        if let Some(jti) = claims.str("jti").filter(|j| !j.is_empty()) {
            let id = TokenId {
                iss: claims.str("iss").map(str::to_owned),
                jti: jti.to_owned(),
            };
            let holder = inner
                .ids
                .entry(id.clone())
                .or_insert_with(async { (key.clone(), expires_at) })
                .await
                .into_value();
            if holder.0 != key {
                if inner.entries.contains_key(&holder.0) {
                    tracing::warn!(
                        issuer = id.iss.as_deref(),
                        "token refused: another cached token has its issuer and jti"
                    );
                    inner.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    return Err(conflict());
                }
                // The holder's signer is gone (evicted or invalidated): take over.
                inner.ids.insert(id, (key.clone(), expires_at)).await;
            }
        }
        let (signer, created) = {
            let hash = inner.hasher.hash_one(token.expose_secret());
            let mut live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
            match live.find(hash, token.expose_secret()) {
                Some(signer) => (signer, false),
                None => {
                    let signer = Arc::new(TokenExchangeSigner::for_cached_token(
                        Arc::clone(&key.0),
                        inner.exchange.clone(),
                        inner.pool.clone(),
                        Arc::clone(&inner.clock),
                        inner.margin,
                        Arc::clone(&inner.exchange_stats),
                        inner.replicas.clone(),
                    ));
                    live.insert(hash, &signer);
                    (signer, true)
                }
            }
        };
        let entry = inner
            .entries
            .entry(key)
            .or_insert_with(async {
                Entry {
                    expires_at,
                    signer: Arc::clone(&signer),
                }
            })
            .await;
        if created {
            tracing::debug!("signer cache miss; signer created");
            inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::trace!("signer cache hit (live signer)");
            inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(entry.into_value().signer)
    }

    /// Drops the signer of `token`. Only that very token can drop it.
    pub async fn invalidate(&self, token: &SecretString) {
        self.inner.forget_live(token);
        self.inner.entries.invalidate(token.expose_secret()).await;
    }

    /// The number of cached signers, after pending evictions are applied.
    pub async fn len(&self) -> u64 {
        self.inner.entries.run_pending_tasks().await;
        self.inner.entries.entry_count()
    }

    /// Whether the cache holds no signer, after pending evictions are applied.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let e = &self.inner.exchange_stats;
        let load = |f: fn(&crate::session::StoreStats) -> &AtomicU64| {
            self.inner
                .replicas
                .as_ref()
                .map_or(0, |r| f(&r.stats).load(Ordering::Relaxed))
        };
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            exchanges: e.exchanges.load(Ordering::Relaxed),
            failures: e.failures.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            store_ops: load(|s| &s.ops),
            store_hits: load(|s| &s.hits),
            store_errors: load(|s| &s.errors),
            shared_exchanges: load(|s| &s.shared_exchanges),
        }
    }
}
