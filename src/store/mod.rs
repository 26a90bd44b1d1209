//! Shared state: the [`Store`] trait (the OAuth proxy's state, and later the OCI
//! sessions replicas share), the in-memory store and, with feature `redis`, the
//! Redis store and the encrypting wrapper.

#[cfg(feature = "redis")]
mod encrypted;
#[cfg(feature = "redis")]
mod limit;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::encrypted::EncryptedStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// An async key-value store with a time to live per entry and an atomic take: all
/// the state of the [`OAuthProxy`](crate::OAuthProxy) (clients, transactions,
/// codes, token sets, token ids, refresh tokens).
///
/// `collection` is a short namespace (`client`, `txn`, `code`, `set`, `jti`,
/// `refresh`); keys are short strings, and a key that is itself a secret (a code, a
/// refresh token) is the SHA-256 of it, never the secret. Values are opaque bytes,
/// so a wrapper can encrypt them. Every entry has a TTL: nothing lives forever.
///
/// Implementations copy `collection` and `key` before the returned future runs, and
/// report failures with [`Error::storage`].
pub trait Store: Send + Sync + fmt::Debug {
    /// The value under `key`, if present and not expired.
    fn get(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Stores `value` under `key` for `ttl` (replacing any value). A zero `ttl`
    /// removes the key.
    fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, ()>;
    /// Removes and returns the value under `key`, atomically: of concurrent takes of
    /// one key, exactly one gets the value (Redis `GETDEL`).
    fn take(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Removes `key` (nothing happens if it is absent).
    fn delete(&self, collection: &str, key: &str) -> StoreFuture<'_, ()>;
    /// Stores `value` under `key` for `ttl` only if no live value is there (Redis
    /// `SET .. NX PX`): `true` when stored. The building block of locks.
    fn put_if_absent(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, bool>;
    /// Removes `key` only if its value is exactly `expected`, atomically (a lock's
    /// holder releasing it): `true` when removed.
    fn delete_if_equal(
        &self,
        collection: &str,
        key: &str,
        expected: &[u8],
    ) -> StoreFuture<'_, bool>;

    /// Whether values are encrypted before they leave the process (default false).
    /// A wrapper that encrypts, such as `EncryptedStore`, says true.
    fn encrypts_at_rest(&self) -> bool {
        false
    }

    /// Whether the data lives outside the process, shared with other processes
    /// (default false). `RedisStore` says true: the `OAuthProxy` refuses a shared
    /// store that does not encrypt.
    fn is_shared(&self) -> bool {
        false
    }
}

struct Entry {
    value: Vec<u8>,
    expires_at: SystemTime,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
    /// Entries and bytes of each [`CAPPED_COLLECTIONS`] collection.
    capped: HashMap<&'static str, (usize, usize)>,
}

/// Collections anyone can fill without authenticating (the OAuth proxy's client
/// registrations and logins in progress): each may hold at most
/// [`CAPPED_SHARE`] of the store's entries and bytes, so that they cannot crowd
/// out the state of logins made (token sets, tokens).
const CAPPED_COLLECTIONS: [&str; 2] = ["client", "txn"];
/// The share of the caps each of [`CAPPED_COLLECTIONS`] may use: a quarter.
const CAPPED_SHARE: usize = 4;

/// The capped collection `full_key` belongs to, if any.
fn capped_collection(full_key: &str) -> Option<&'static str> {
    let collection = full_key.split('\0').next()?;
    CAPPED_COLLECTIONS.into_iter().find(|c| *c == collection)
}

impl Entries {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        let size = key.len().saturating_add(entry.value.len());
        self.bytes = self.bytes.saturating_sub(size);
        if let Some(usage) = capped_collection(key).and_then(|c| self.capped.get_mut(c)) {
            usage.0 = usage.0.saturating_sub(1);
            usage.1 = usage.1.saturating_sub(size);
        }
        Some(entry)
    }

    fn purge_expired(&mut self, now: SystemTime) {
        let expired: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

/// The in-memory [`Store`] (the default): one process, bounded in entries (default
/// [`MemoryStore::DEFAULT_MAX_ENTRIES`], 100 000) and bytes (default
/// [`MemoryStore::DEFAULT_MAX_BYTES`], 64 MiB); expired
/// entries are dropped when read and when the store is full. The collections
/// `client` and `txn` (which the OAuth proxy fills for unauthenticated callers)
/// may each use at most a quarter of both caps. A put that does not fit
/// after dropping the expired entries fails with [`ErrorKind::Storage`] (logins then
/// fail, existing sessions are kept). Expiry is judged by its [`Clock`].
///
/// Cheap to clone (clones share the entries).
#[derive(Clone)]
pub struct MemoryStore {
    entries: Arc<Mutex<Entries>>,
    clock: Arc<dyn Clock>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

fn full_key(collection: &str, key: &str) -> String {
    let mut k = String::with_capacity(collection.len() + 1 + key.len());
    k.push_str(collection);
    k.push('\0');
    k.push_str(key);
    k
}

impl MemoryStore {
    /// Default entry cap.
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
    /// Default size cap (keys and values), in bytes.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

    /// An empty store whose TTLs are judged by `clock`.
    #[must_use]
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Arc::default(),
            clock,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the caps: at most `max_entries` entries and `max_bytes` bytes of keys and
    /// values.
    #[must_use]
    pub fn with_limits(mut self, max_entries: usize, max_bytes: usize) -> Self {
        self.max_entries = max_entries;
        self.max_bytes = max_bytes;
        self
    }

    /// The number of entries held, expired ones included until they are dropped.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the store holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of live (unexpired) entries of `collection`.
    #[must_use]
    pub fn count(&self, collection: &str) -> usize {
        let now = self.clock.now();
        let prefix = full_key(collection, "");
        self.lock()
            .map
            .iter()
            .filter(|(k, e)| k.starts_with(&prefix) && e.expires_at > now)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_now(&self, key: &str, remove: bool) -> Option<Vec<u8>> {
        let now = self.clock.now();
        let mut entries = self.lock();
        let live = entries.map.get(key).map(|e| e.expires_at > now)?;
        if !live {
            entries.remove(key);
            return None;
        }
        if remove {
            entries.remove(key).map(|e| e.value)
        } else {
            entries.map.get(key).map(|e| e.value.clone())
        }
    }

    fn put_now(&self, key: String, value: Vec<u8>, ttl: Duration) -> Result<()> {
        let now = self.clock.now();
        let mut entries = self.lock();
        self.insert_locked(&mut entries, now, key, value, ttl)
    }

    /// Replaces `key`'s entry (none for a zero `ttl`), within the caps.
    fn insert_locked(
        &self,
        entries: &mut Entries,
        now: SystemTime,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        entries.remove(&key);
        if ttl.is_zero() {
            return Ok(());
        }
        let expires_at = now
            .checked_add(ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)));
        let size = key.len().saturating_add(value.len());
        let capped = capped_collection(&key);
        let fits = |e: &Entries| {
            let within_share = capped.is_none_or(|c| {
                let (n, bytes) = e.capped.get(c).copied().unwrap_or_default();
                n < (self.max_entries / CAPPED_SHARE).max(1)
                    && bytes.saturating_add(size) <= self.max_bytes / CAPPED_SHARE
            });
            within_share
                && e.map.len() < self.max_entries
                && e.bytes.saturating_add(size) <= self.max_bytes
        };
        if !fits(entries) {
            entries.purge_expired(now);
            if !fits(entries) {
                tracing::warn!(
                    entries = entries.map.len(),
                    bytes = entries.bytes,
                    "memory store is full"
                );
                return Err(Error::new(ErrorKind::Storage, "the memory store is full"));
            }
        }
        entries.bytes = entries.bytes.saturating_add(size);
        if let Some(c) = capped {
            let usage = entries.capped.entry(c).or_default();
            usage.0 = usage.0.saturating_add(1);
            usage.1 = usage.1.saturating_add(size);
        }
        entries.map.insert(key, Entry { value, expires_at });
        Ok(())
    }
}

impl Store for MemoryStore {
    fn get(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let value = self.get_now(&full_key(collection, key), false);
        Box::pin(async move { Ok(value) })
    }

    fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, ()> {
        let done = self.put_now(full_key(collection, key), value, ttl);
        Box::pin(async move { done })
    }

    fn take(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let value = self.get_now(&full_key(collection, key), true);
        Box::pin(async move { Ok(value) })
    }

    fn delete(&self, collection: &str, key: &str) -> StoreFuture<'_, ()> {
        self.lock().remove(&full_key(collection, key));
        Box::pin(async move { Ok(()) })
    }

    fn put_if_absent(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let key = full_key(collection, key);
        let now = self.clock.now();
        // One lock for the check and the insert: atomic like `SET NX`.
        let mut entries = self.lock();
        let done = if entries.map.get(&key).is_some_and(|e| e.expires_at > now) {
            Ok(false)
        } else {
            self.insert_locked(&mut entries, now, key, value, ttl)
                .map(|()| true)
        };
        Box::pin(async move { done })
    }

    fn delete_if_equal(
        &self,
        collection: &str,
        key: &str,
        expected: &[u8],
    ) -> StoreFuture<'_, bool> {
        let key = full_key(collection, key);
        let now = self.clock.now();
        let mut entries = self.lock();
        let matches = entries
            .map
            .get(&key)
            .is_some_and(|e| e.expires_at > now && e.value == expected);
        if matches {
            entries.remove(&key);
        }
        Box::pin(async move { Ok(matches) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    fn store() -> (Arc<FixedClock>, MemoryStore) {
        let clock = Arc::new(FixedClock::at_unix(1_000_000));
        (clock.clone(), MemoryStore::with_clock(clock))
    }

    #[tokio::test]
    async fn client_and_txn_each_get_a_quarter_of_the_caps() {
        let (clock, store) = store();
        let store = store.with_limits(8, 1024);
        let ttl = Duration::from_secs(10);
        for i in 0..2 {
            store
                .put("client", &i.to_string(), vec![0], ttl)
                .await
                .unwrap();
            store
                .put("txn", &i.to_string(), vec![0], ttl)
                .await
                .unwrap();
        }
        assert!(store.put("client", "x", vec![0], ttl).await.is_err());
        assert!(store.put("txn", "x", vec![0], ttl).await.is_err());
        // Token state still has the rest.
        for i in 0..4 {
            store
                .put("set", &i.to_string(), vec![0], ttl)
                .await
                .unwrap();
        }
        assert!(store.put("set", "x", vec![0], ttl).await.is_err());
        // Freed share is usable again: deleted, taken or expired.
        store.delete("set", "0").await.unwrap();
        store.delete("client", "0").await.unwrap();
        store.put("client", "y", vec![0], ttl).await.unwrap();
        assert!(store.take("txn", "0").await.unwrap().is_some());
        store.put("txn", "y", vec![0], ttl).await.unwrap();
        // Bytes: a quarter of 1024.
        store.delete("client", "y").await.unwrap();
        assert!(store.put("client", "big", vec![0; 300], ttl).await.is_err());
        clock.advance(Duration::from_secs(11));
        store.put("client", "z", vec![0; 200], ttl).await.unwrap();
    }

    #[tokio::test]
    async fn entries_expire_by_the_clock() {
        let (clock, store) = store();
        store
            .put("c", "k", b"v".to_vec(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(store.get("c", "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get("other", "k").await.unwrap(), None);
        clock.advance(Duration::from_secs(9));
        assert_eq!(store.count("c"), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.get("c", "k").await.unwrap(), None);
        assert!(store.is_empty(), "an expired entry read is dropped");
        store
            .put("c", "k", b"v".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert!(store.is_empty(), "zero ttl stores nothing");
    }

    #[tokio::test]
    async fn take_and_delete_remove() {
        let (_, store) = store();
        let ttl = Duration::from_secs(10);
        store.put("c", "a", b"1".to_vec(), ttl).await.unwrap();
        store.put("c", "b", b"2".to_vec(), ttl).await.unwrap();
        assert_eq!(store.take("c", "a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.take("c", "a").await.unwrap(), None);
        store.delete("c", "b").await.unwrap();
        store.delete("c", "missing").await.unwrap();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn put_if_absent_and_delete_if_equal_make_a_lock() {
        let (clock, store) = store();
        let ttl = Duration::from_secs(10);
        assert!(
            store
                .put_if_absent("lock", "k", b"a".to_vec(), ttl)
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_if_absent("lock", "k", b"b".to_vec(), ttl)
                .await
                .unwrap()
        );
        assert_eq!(store.get("lock", "k").await.unwrap(), Some(b"a".to_vec()));
        // Only the holder releases it.
        assert!(!store.delete_if_equal("lock", "k", b"b").await.unwrap());
        assert!(store.delete_if_equal("lock", "k", b"a").await.unwrap());
        assert!(!store.delete_if_equal("lock", "k", b"a").await.unwrap());
        // A holder that died: the lock expires and can be taken again.
        assert!(
            store
                .put_if_absent("lock", "k", b"c".to_vec(), ttl)
                .await
                .unwrap()
        );
        clock.advance(ttl);
        assert!(!store.delete_if_equal("lock", "k", b"c").await.unwrap());
        assert!(
            store
                .put_if_absent("lock", "k", b"d".to_vec(), ttl)
                .await
                .unwrap()
        );
        assert_eq!(store.get("lock", "k").await.unwrap(), Some(b"d".to_vec()));
    }

    #[test]
    fn put_if_absent_has_one_winner_under_concurrency() {
        let (_, store) = store();
        let store = Arc::new(store);
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8_u8)
                .map(|i| {
                    let store = Arc::clone(&store);
                    s.spawn(move || {
                        futures_lite_block(store.put_if_absent(
                            "lock",
                            "k",
                            vec![i],
                            Duration::from_secs(60),
                        ))
                        .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn take_is_atomic_under_concurrency() {
        let (_, store) = store();
        let store = Arc::new(store);
        for round in 0..20 {
            let key = format!("k{round}");
            futures_lite_block(store.put("code", &key, b"x".to_vec(), Duration::from_secs(60)))
                .unwrap();
            let winners: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        let store = Arc::clone(&store);
                        let key = key.clone();
                        s.spawn(move || {
                            futures_lite_block(store.take("code", &key))
                                .unwrap()
                                .is_some()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().unwrap()))
                    .sum()
            });
            assert_eq!(winners, 1, "round {round}");
        }
    }

    fn futures_lite_block<T>(f: StoreFuture<'_, T>) -> Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[tokio::test]
    async fn bounded_in_entries_and_bytes() {
        let (clock, store) = store();
        let store = store.with_limits(3, 1_000);
        let ttl = Duration::from_secs(10);
        for k in ["a", "b", "c"] {
            store.put("c", k, vec![0; 10], ttl).await.unwrap();
        }
        let err = store.put("c", "d", vec![0; 10], ttl).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        // Replacing a key does not need room.
        store.put("c", "a", vec![1; 10], ttl).await.unwrap();
        // Expired entries make room.
        clock.advance(ttl);
        store.put("c", "d", vec![0; 10], ttl).await.unwrap();
        assert_eq!(store.len(), 1);
        let err = store
            .put("c", "big", vec![0; 1_000], ttl)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(!format!("{store:?}").contains('\0'));
    }
}
