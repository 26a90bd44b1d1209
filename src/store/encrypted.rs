//! [`EncryptedStore`]: any [`Store`] with every value encrypted (Fernet) and bound to
//! its place.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::limit::WarnLimit;
use super::{Store, StoreFuture};
use crate::error::{Error, ErrorKind, Result};
use crate::fernet::Fernet;

/// Wraps a [`Store`] so that every value it holds is a Fernet token (AES-128-CBC and
/// HMAC-SHA256, the format of Python's `cryptography.fernet`, with its key format):
/// what reaches the inner store (Redis) is never plaintext. Keys rotate through
/// [`Fernet::from_env_value`]: the first key encrypts, every key decrypts.
///
/// Each token's plaintext also names the collection and the key it was written
/// under, checked when read: a value copied to another key or collection is a miss.
/// A value that does not decrypt (wrong key, tampered, misplaced, not a token) is a
/// miss (`Ok(None)`) and a warning (at most one a minute, `tracing` target
/// `oci_token_exchange::store::encrypted`, fields `collection` and `reason`), never
/// an error to the caller, never a panic, never its content in a log.
///
/// Tokens are not checked against a Fernet ttl: the inner store's TTLs govern.
/// `Debug` shows the inner store and no key.
#[derive(Clone)]
pub struct EncryptedStore<S> {
    inner: S,
    fernet: Fernet,
    warn: Arc<WarnLimit>,
}

impl<S: fmt::Debug> fmt::Debug for EncryptedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("inner", &self.inner)
            .field("fernet", &"[redacted]")
            .finish()
    }
}

/// Why a stored value was refused (the `reason` field of the warning).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    NotAToken,
    Undecryptable,
    Misplaced,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotAToken => "not a fernet token",
            Self::Undecryptable => "does not decrypt (wrong key or tampered)",
            Self::Misplaced => "written under another collection or key",
        }
    }
}

/// `len(collection) u32 BE || collection || len(key) u32 BE || key || value`: the
/// plaintext of a token, which binds the value to its place.
fn bind(collection: &str, key: &str, value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let too_long = || Error::new(ErrorKind::Storage, "a store key is too long to encrypt");
    let c = u32::try_from(collection.len()).map_err(|_| too_long())?;
    let k = u32::try_from(key.len()).map_err(|_| too_long())?;
    let mut out = Zeroizing::new(Vec::with_capacity(
        8usize
            .saturating_add(collection.len())
            .saturating_add(key.len())
            .saturating_add(value.len()),
    ));
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(collection.as_bytes());
    out.extend_from_slice(&k.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    Ok(out)
}

/// The value of a plaintext made by [`bind`] for exactly this collection and key.
fn unbind(plain: &[u8], collection: &str, key: &str) -> Option<Vec<u8>> {
    fn field<'a>(rest: &'a [u8], expected: &str) -> Option<&'a [u8]> {
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (name, rest) = rest.split_at_checked(len)?;
        (name == expected.as_bytes()).then_some(rest)
    }
    let rest = field(plain, collection)?;
    let value = field(rest, key)?;
    Some(value.to_vec())
}

impl<S: Store> EncryptedStore<S> {
    /// Encrypts every value put into `inner` with `fernet`'s first key.
    #[must_use]
    pub fn new(inner: S, fernet: Fernet) -> Self {
        Self {
            inner,
            fernet,
            warn: Arc::new(WarnLimit::default()),
        }
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn seal(&self, collection: &str, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        let plain = bind(collection, key, value)?;
        Ok(self.fernet.encrypt(&plain)?.into_bytes())
    }

    /// The value of a stored token, or why it is refused.
    fn open_checked(
        &self,
        collection: &str,
        key: &str,
        stored: &[u8],
    ) -> std::result::Result<Vec<u8>, Refusal> {
        let token = std::str::from_utf8(stored).map_err(|_| Refusal::NotAToken)?;
        let plain = Zeroizing::new(self.fernet.decrypt(token, None).map_err(|e| {
            if token.is_empty() || e.kind() != ErrorKind::Decrypt {
                Refusal::NotAToken
            } else {
                Refusal::Undecryptable
            }
        })?);
        unbind(&plain, collection, key).ok_or(Refusal::Misplaced)
    }

    /// The value of a stored token; a miss (and a rate-limited warning) when it is
    /// refused.
    fn open(&self, collection: &str, key: &str, stored: &[u8]) -> Option<Vec<u8>> {
        match self.open_checked(collection, key, stored) {
            Ok(value) => Some(value),
            Err(refusal) => {
                if self.warn.allow() {
                    tracing::warn!(
                        collection,
                        reason = refusal.as_str(),
                        "a stored value was refused and counts as missing"
                    );
                }
                None
            }
        }
    }
}

impl<S: Store> Store for EncryptedStore<S> {
    fn get(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        Box::pin(async move {
            let stored = self.inner.get(&collection, &key).await?;
            Ok(stored.and_then(|s| self.open(&collection, &key, &s)))
        })
    }

    fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, ()> {
        let value = Zeroizing::new(value);
        let sealed = self.seal(collection, key, &value);
        let (collection, key) = (collection.to_owned(), key.to_owned());
        Box::pin(async move { self.inner.put(&collection, &key, sealed?, ttl).await })
    }

    fn take(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        Box::pin(async move {
            let stored = self.inner.take(&collection, &key).await?;
            Ok(stored.and_then(|s| self.open(&collection, &key, &s)))
        })
    }

    fn delete(&self, collection: &str, key: &str) -> StoreFuture<'_, ()> {
        self.inner.delete(collection, key)
    }

    fn put_if_absent(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let value = Zeroizing::new(value);
        let sealed = self.seal(collection, key, &value);
        let (collection, key) = (collection.to_owned(), key.to_owned());
        Box::pin(async move {
            self.inner
                .put_if_absent(&collection, &key, sealed?, ttl)
                .await
        })
    }

    /// Reads the token, compares its value with `expected`, then removes the key
    /// only if it still holds that exact token (the inner store's atomic
    /// compare-and-delete): a value replaced in between is left alone.
    fn delete_if_equal(
        &self,
        collection: &str,
        key: &str,
        expected: &[u8],
    ) -> StoreFuture<'_, bool> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        let expected = Zeroizing::new(expected.to_vec());
        Box::pin(async move {
            let Some(stored) = self.inner.get(&collection, &key).await? else {
                return Ok(false);
            };
            let value = Zeroizing::new(self.open(&collection, &key, &stored));
            if value.as_deref() != Some(expected.as_slice()) {
                return Ok(false);
            }
            self.inner.delete_if_equal(&collection, &key, &stored).await
        })
    }

    fn encrypts_at_rest(&self) -> bool {
        true
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fernet::FernetKey;
    use crate::store::MemoryStore;

    const TTL: Duration = Duration::from_secs(60);

    fn fernet() -> Fernet {
        Fernet::new(FernetKey::generate().unwrap())
    }

    #[test]
    fn the_binding_round_trips_and_refuses_other_places() {
        let plain = bind("set", "k1", b"value").unwrap();
        assert_eq!(unbind(&plain, "set", "k1").unwrap(), b"value");
        assert_eq!(unbind(&plain, "set", "k2"), None);
        assert_eq!(unbind(&plain, "code", "k1"), None);
        // No ambiguity between where collection ends and key begins.
        let plain = bind("a", "bc", b"").unwrap();
        assert_eq!(unbind(&plain, "ab", "c"), None);
        for len in 0..plain.len() {
            assert_eq!(unbind(&plain[..len], "a", "bc"), None, "truncated to {len}");
        }
    }

    #[tokio::test]
    async fn values_are_tokens_in_the_inner_store_and_round_trip() {
        let inner = MemoryStore::default();
        let store = EncryptedStore::new(inner.clone(), fernet());
        store
            .put("c", "k", b"secret-1".to_vec(), TTL)
            .await
            .unwrap();
        let raw = inner.get("c", "k").await.unwrap().unwrap();
        assert!(!raw.windows(8).any(|w| w == b"secret-1"));
        assert!(raw.starts_with(b"gAAAAA"), "a fernet token");
        assert_eq!(
            store.get("c", "k").await.unwrap(),
            Some(b"secret-1".to_vec())
        );
        assert_eq!(
            store.take("c", "k").await.unwrap(),
            Some(b"secret-1".to_vec())
        );
        assert_eq!(store.get("c", "k").await.unwrap(), None);
        assert!(store.encrypts_at_rest());
        assert!(!store.is_shared());
        assert!(!format!("{store:?}").contains("secret"));
    }

    #[tokio::test]
    async fn refused_values_are_misses() {
        let inner = MemoryStore::default();
        let store = EncryptedStore::new(inner.clone(), fernet());
        store.put("code", "k", b"v".to_vec(), TTL).await.unwrap();
        let token = inner.get("code", "k").await.unwrap().unwrap();
        // Copied to another key, another collection.
        inner.put("code", "k2", token.clone(), TTL).await.unwrap();
        inner.put("set", "k", token.clone(), TTL).await.unwrap();
        assert_eq!(store.get("code", "k2").await.unwrap(), None);
        assert_eq!(store.get("set", "k").await.unwrap(), None);
        // Garbage, empty, not UTF-8, tampered.
        let mut tampered = token.clone();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        for bad in [b"garbage".to_vec(), Vec::new(), vec![0xff, 0xfe], tampered] {
            inner.put("code", "bad", bad, TTL).await.unwrap();
            assert_eq!(store.get("code", "bad").await.unwrap(), None);
            assert!(!store.delete_if_equal("code", "bad", b"v").await.unwrap());
        }
        // Another key.
        let other = EncryptedStore::new(inner.clone(), fernet());
        assert_eq!(other.get("code", "k").await.unwrap(), None);
        assert_eq!(store.get("code", "k").await.unwrap(), Some(b"v".to_vec()));
    }

    #[tokio::test]
    async fn locks_work_through_the_wrapper() {
        let store = EncryptedStore::new(MemoryStore::default(), fernet());
        assert!(
            store
                .put_if_absent("lock", "k", b"a".to_vec(), TTL)
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_if_absent("lock", "k", b"b".to_vec(), TTL)
                .await
                .unwrap()
        );
        assert!(!store.delete_if_equal("lock", "k", b"b").await.unwrap());
        assert!(store.delete_if_equal("lock", "k", b"a").await.unwrap());
        assert!(!store.delete_if_equal("lock", "k", b"a").await.unwrap());
    }
}
