//! A [`Store`] that forwards every call to another and lets a test act around the
//! calls: count them, slow them, pause them, or change the store in between.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_token_exchange::{Error, Store, StoreFuture};

/// Which call of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Get,
    Put,
    Take,
    Delete,
    PutIfAbsent,
    DeleteIfEqual,
}

/// Something a test does around a call, awaited in the call's future.
pub type Act = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a test does around each call; both are decided when the call is made.
pub trait Around: Send + Sync + 'static {
    /// Awaited before the call is.
    fn before(&self, _call: Call, _collection: &str, _key: &str) -> Option<Act> {
        None
    }
    /// Awaited once the call has answered, before its answer is handed back.
    fn after(&self, _call: Call, _collection: &str, _key: &str) -> Option<Act> {
        None
    }
    /// Whether the call fails ([`Error::storage`]) instead of reaching the store.
    fn fail(&self, _call: Call, _collection: &str, _key: &str) -> bool {
        false
    }
}

/// Store failures a test arms: each fails the next call of its kind on its
/// collection, once.
#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<Vec<(Call, String)>>>);

impl Failures {
    /// The next `call` on `collection` fails.
    pub fn arm(&self, call: Call, collection: &str) {
        self.0.lock().unwrap().push((call, collection.to_owned()));
    }

    /// How many armed failures have not happened yet.
    pub fn pending(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl Around for Failures {
    fn fail(&self, call: Call, collection: &str, _key: &str) -> bool {
        let mut armed = self.0.lock().unwrap();
        let hit = armed
            .iter()
            .position(|(c, k)| *c == call && k == collection);
        hit.map(|i| armed.remove(i)).is_some()
    }
}

/// `inner`, with `around` acting around its calls.
pub struct Hooked<A> {
    inner: Arc<dyn Store>,
    around: A,
}

impl<A: Around> Hooked<A> {
    pub fn new(inner: Arc<dyn Store>, around: A) -> Self {
        Self { inner, around }
    }

    pub fn around(&self) -> &A {
        &self.around
    }

    /// `call` answered by `answer` (not made at all when the test fails it: a
    /// store may do its work when called, before its future is polled).
    fn wrap<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        collection: &str,
        key: &str,
        answer: impl FnOnce() -> StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        if self.around.fail(call, collection, key) {
            return Box::pin(async { Err(Error::storage("injected store failure")) });
        }
        let before = self.around.before(call, collection, key);
        let after = self.around.after(call, collection, key);
        let answer = answer();
        Box::pin(async move {
            if let Some(act) = before {
                act.await;
            }
            let answer = answer.await;
            if let Some(act) = after {
                act.await;
            }
            answer
        })
    }
}

impl<A> std::fmt::Debug for Hooked<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<A: Around> Store for Hooked<A> {
    fn get(&self, c: &str, k: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.wrap(Call::Get, c, k, || self.inner.get(c, k))
    }
    fn put(&self, c: &str, k: &str, v: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()> {
        self.wrap(Call::Put, c, k, || self.inner.put(c, k, v, ttl))
    }
    fn take(&self, c: &str, k: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.wrap(Call::Take, c, k, || self.inner.take(c, k))
    }
    fn delete(&self, c: &str, k: &str) -> StoreFuture<'_, ()> {
        self.wrap(Call::Delete, c, k, || self.inner.delete(c, k))
    }
    fn put_if_absent(&self, c: &str, k: &str, v: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        self.wrap(Call::PutIfAbsent, c, k, || {
            self.inner.put_if_absent(c, k, v, ttl)
        })
    }
    fn delete_if_equal(&self, c: &str, k: &str, expected: &[u8]) -> StoreFuture<'_, bool> {
        self.wrap(Call::DeleteIfEqual, c, k, || {
            self.inner.delete_if_equal(c, k, expected)
        })
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    fn encrypts_at_rest(&self) -> bool {
        self.inner.encrypts_at_rest()
    }
}
