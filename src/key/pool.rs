//! Session keys generated ahead of need, so a new user does not wait ~100 ms for
//! RSA key generation.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{KeyBackend, KeySize, SigningKey};
use crate::error::{Error, ErrorKind, Result};

/// Default number of keys kept ready.
pub(crate) const DEFAULT_POOL_SIZE: usize = 2;

/// A pool of pre-generated session keys.
///
/// Keys are generated on tokio's blocking threads, never on an async worker. Each
/// key is handed out once ([`SigningKey`] is not `Clone`; taking a key moves it out
/// of the pool), and every take starts a background refill up to the target size.
/// With a target of 0 the pool keeps nothing and every take generates a key.
/// Cheap to clone; clones share the keys.
#[derive(Clone)]
pub struct KeyPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    target: usize,
    size: KeySize,
    backend: KeyBackend,
    keys: Mutex<VecDeque<SigningKey>>,
    refilling: AtomicBool,
    generated: AtomicU64,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPool")
            .field("target", &self.inner.target)
            .field("size", &self.inner.size)
            .field("available", &self.available())
            .finish()
    }
}

impl Default for KeyPool {
    fn default() -> Self {
        Self::new(DEFAULT_POOL_SIZE)
    }
}

impl KeyPool {
    /// A pool that keeps `target` RSA-2048 keys ready (0 turns pre-generation off).
    /// Nothing is generated until [`KeyPool::fill`] or the first take.
    #[must_use]
    pub fn new(target: usize) -> Self {
        Self::with_key_size(target, KeySize::default(), KeyBackend::DEFAULT)
    }

    /// A pool of keys of another size or backend.
    #[must_use]
    pub fn with_key_size(target: usize, size: KeySize, backend: KeyBackend) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                target,
                size,
                backend,
                keys: Mutex::new(VecDeque::with_capacity(target)),
                refilling: AtomicBool::new(false),
                generated: AtomicU64::new(0),
            }),
        }
    }

    /// Keys ready now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.inner.len()
    }

    /// Keys generated so far (handed out or waiting).
    #[must_use]
    pub fn generated(&self) -> u64 {
        self.inner.generated.load(Ordering::Relaxed)
    }

    /// Starts generating keys in the background up to the target. Does nothing
    /// outside a tokio runtime or when a refill is already running.
    pub fn fill(&self) {
        let inner = &self.inner;
        if inner.target == 0 || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if inner.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let guard = RefillGuard {
            pool: Arc::clone(inner),
            armed: true,
        };
        drop(tokio::task::spawn_blocking(move || guard.run()));
    }

    /// Takes a key: a ready one if there is one, else one generated now on a
    /// blocking thread. Either way a refill starts in the background.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if generation fails, [`ErrorKind::Internal`] if the
    /// blocking task cannot run.
    pub async fn take(&self) -> Result<SigningKey> {
        let ready = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let key = match ready {
            Some(key) => key,
            None => {
                let pool = Arc::clone(&self.inner);
                tokio::task::spawn_blocking(move || pool.generate())
                    .await
                    .map_err(|_| Error::new(ErrorKind::Internal, "key generation task failed"))??
            }
        };
        self.fill();
        Ok(key)
    }
}

/// Owns the `refilling` flag while a refill runs; `Drop` releases it even if the
/// refill panics or its task is dropped unrun (runtime shutting down).
struct RefillGuard {
    pool: Arc<PoolInner>,
    armed: bool,
}

impl RefillGuard {
    fn run(mut self) {
        let pool = Arc::clone(&self.pool);
        loop {
            while pool.len() < pool.target {
                match pool.generate() {
                    Ok(key) => pool
                        .keys
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_back(key),
                    Err(_) => return,
                }
            }
            pool.refilling.store(false, Ordering::Release);
            // A take between the last check and the store above skipped its refill
            // because this one was running: pick it up, unless another fill has.
            if pool.len() >= pool.target || pool.refilling.swap(true, Ordering::AcqRel) {
                self.armed = false;
                return;
            }
        }
    }
}

impl Drop for RefillGuard {
    fn drop(&mut self) {
        if self.armed {
            self.pool.refilling.store(false, Ordering::Release);
        }
    }
}

impl PoolInner {
    fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn generate(&self) -> Result<SigningKey> {
        let key = SigningKey::generate_with(self.backend, self.size)?;
        self.generated.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }
}
