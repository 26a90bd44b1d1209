//! OCI sessions shared across replicas: several `SignerCache`s ("replicas") on one
//! emulator and one `Store`. Each scenario takes the store as `Arc<dyn Store>`, so
//! it runs on `MemoryStore` and on a real redis-server alike.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{
    CacheStats, Credentials, Emulator, ErrorKind, FixedClock, KeyPool, MemoryStore, SecretString,
    SignerCache, SignerCacheBuilder, Store, StoreFuture, TokenExchange, UserTokenOptions,
};
use sha2::Digest as _;

const START: u64 = 1_800_000_000;

struct World {
    clock: Arc<FixedClock>,
    emulator: Emulator,
    exchange: TokenExchange,
    http: reqwest::Client,
}

async fn world(upst_ttl: Duration) -> World {
    let clock = Arc::new(FixedClock::at_unix(START));
    let emulator = Emulator::builder()
        .clock(clock.clone())
        .upst_ttl(upst_ttl)
        .start()
        .await
        .expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .clock(clock.clone())
        .build()
        .expect("exchange");
    World {
        clock,
        emulator,
        exchange,
        http: reqwest::Client::new(),
    }
}

impl World {
    fn token(&self, sub: &str) -> SecretString {
        SecretString::new(
            self.emulator
                .mint_user_token_with(&UserTokenOptions::new(sub).ttl(Duration::from_secs(86_400))),
        )
    }

    /// A replica's builder, sharing through `store`.
    fn builder(&self, store: &Arc<dyn Store>) -> SignerCacheBuilder {
        SignerCache::builder(self.exchange.clone())
            .key_pool(KeyPool::new(2))
            .clock(self.clock.clone())
            .store(Arc::clone(store))
            .store_timeout(Duration::from_millis(300))
    }

    /// A replica. The scenarios also run on a plain `RedisStore` (so that a test
    /// can read what the crate stores), hence the opt-in; the production shape,
    /// `EncryptedStore<RedisStore>`, is tested without it.
    fn replica(&self, store: &Arc<dyn Store>) -> SignerCache {
        self.builder(store).allow_unencrypted_store().build()
    }

    fn replicas(&self, store: &Arc<dyn Store>, n: usize) -> Vec<SignerCache> {
        (0..n).map(|_| self.replica(store)).collect()
    }

    /// One signed call as `token` through `cache`: the emulator must accept it.
    async fn call(&self, cache: &SignerCache, token: &SecretString) -> Credentials {
        let (status, credentials) = self.try_call(cache, token).await;
        assert_eq!(status, 200, "the emulator verifies the signature");
        credentials
    }

    async fn try_call(&self, cache: &SignerCache, token: &SecretString) -> (u16, Credentials) {
        let signer = cache.signer_for(token).await.expect("signer");
        let mut request = self
            .http
            .get(self.emulator.api_url().join("/20160918/instances").unwrap())
            .build()
            .unwrap();
        let credentials = signer.sign_reqwest(&mut request).await.expect("signed");
        let status = self.http.execute(request).await.unwrap().status().as_u16();
        (status, credentials)
    }

    /// 50 concurrent first calls for `token`, spread over `replicas`.
    async fn fifty_calls(&self, replicas: &[SignerCache], token: &SecretString) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let cache = replicas[i % replicas.len()].clone();
            let (token, http) = (token.clone(), self.http.clone());
            let url = self.emulator.api_url().join("/20160918/instances").unwrap();
            tasks.spawn(async move {
                let signer = cache.signer_for(&token).await.expect("signer");
                let mut request = http.get(url).build().unwrap();
                signer.sign_reqwest(&mut request).await.expect("signed");
                http.execute(request).await.unwrap().status().as_u16()
            });
        }
        let statuses = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
            .await
            .expect("no call hangs");
        assert_eq!(statuses.len(), 50);
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
}

fn total(replicas: &[SignerCache], f: fn(&CacheStats) -> u64) -> u64 {
    replicas.iter().map(|r| f(&r.stats())).sum()
}

/// The store key of a token's session, as the crate computes it.
fn session_key(token: &SecretString) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.expose_secret().as_bytes()))
}

/// What a test-only store does on each call.
const UP: u8 = 0;
const ERRORS: u8 = 1;
const HANGS: u8 = 2;

/// A store that passes calls to `inner`, or fails, hangs or answers reads slowly
/// on demand, and records every key and value written. It says it is shared and
/// encrypts at rest when `inner` does, or shared when told to.
#[derive(Debug)]
struct TestStore {
    inner: Arc<dyn Store>,
    mode: AtomicU8,
    written: Mutex<Vec<(String, String, Vec<u8>)>>,
    claims_shared: AtomicBool,
    /// Added to every `get`, in milliseconds.
    read_delay_ms: AtomicU64,
}

impl TestStore {
    fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            mode: AtomicU8::new(UP),
            written: Mutex::default(),
            claims_shared: AtomicBool::new(false),
            read_delay_ms: AtomicU64::new(0),
        })
    }

    /// A store that says it lives outside the process (like `RedisStore`) and does
    /// not encrypt.
    fn plain_shared(inner: Arc<dyn Store>) -> Arc<Self> {
        let store = Self::new(inner);
        store.claims_shared.store(true, Ordering::SeqCst);
        store
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn slow_reads(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.read_delay_ms.store(ms, Ordering::SeqCst);
    }

    fn gate<'a, T: Send + 'a>(&'a self, up: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        match self.mode.load(Ordering::SeqCst) {
            UP => up,
            // Any error will do (the crate's constructor is private).
            ERRORS => {
                Box::pin(async { Err(oci_token_exchange::KeyId::api_key("", "", "").unwrap_err()) })
            }
            _ => Box::pin(std::future::pending()),
        }
    }

    fn record(&self, collection: &str, key: &str, value: &[u8]) {
        self.written
            .lock()
            .unwrap()
            .push((collection.to_owned(), key.to_owned(), value.to_vec()));
    }
}

impl Store for TestStore {
    fn get(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let delay = Duration::from_millis(self.read_delay_ms.load(Ordering::SeqCst));
        let read = self.inner.get(collection, key);
        self.gate(Box::pin(async move {
            tokio::time::sleep(delay).await;
            read.await
        }))
    }

    fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, ()> {
        self.record(collection, key, &value);
        self.gate(self.inner.put(collection, key, value, ttl))
    }

    fn take(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.gate(self.inner.take(collection, key))
    }

    fn delete(&self, collection: &str, key: &str) -> StoreFuture<'_, ()> {
        self.gate(self.inner.delete(collection, key))
    }

    fn put_if_absent(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        self.record(collection, key, &value);
        self.gate(self.inner.put_if_absent(collection, key, value, ttl))
    }

    fn delete_if_equal(
        &self,
        collection: &str,
        key: &str,
        expected: &[u8],
    ) -> StoreFuture<'_, bool> {
        self.gate(self.inner.delete_if_equal(collection, key, expected))
    }

    fn encrypts_at_rest(&self) -> bool {
        self.inner.encrypts_at_rest()
    }

    fn is_shared(&self) -> bool {
        self.claims_shared.load(Ordering::SeqCst) || self.inner.is_shared()
    }
}

// ---------------------------------------------------------------------------
// Scenarios, generic over the store.
// ---------------------------------------------------------------------------

/// 50 concurrent first calls for one new token over three replicas: one
/// exchange, and every signed request verifies.
async fn scenario_one_exchange_for_fifty_calls(store: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let replicas = w.replicas(&store, 3);
    let token = w.token("ana");
    w.fifty_calls(&replicas, &token).await;
    assert_eq!(w.emulator.exchanges_for("ana"), 1);
    assert_eq!(total(&replicas, |s| s.exchanges), 1);
    assert_eq!(total(&replicas, |s| s.shared_exchanges), 1);
    assert_eq!(
        total(&replicas, |s| s.store_hits),
        2,
        "the two other replicas took the session from the store"
    );
    assert_eq!(total(&replicas, |s| s.store_errors), 0);
}

/// Once a replica has the session, a call makes no store round trip.
async fn scenario_warm_call_costs_no_store_op(store: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let replicas = w.replicas(&store, 2);
    let token = w.token("ben");
    w.call(&replicas[0], &token).await;
    w.call(&replicas[1], &token).await;
    let before: Vec<u64> = replicas.iter().map(|r| r.stats().store_ops).collect();
    assert!(before.iter().all(|ops| *ops > 0), "{before:?}");
    for _ in 0..20 {
        w.call(&replicas[0], &token).await;
        w.call(&replicas[1], &token).await;
    }
    let after: Vec<u64> = replicas.iter().map(|r| r.stats().store_ops).collect();
    assert_eq!(before, after, "warm calls made store round trips");
    assert_eq!(w.emulator.exchanges_for("ben"), 1);
}

/// Garbage under a token's session key, and a valid session of another token
/// moved under it, are misses: an exchange, no panic, and the exchanged session
/// replaces the bad value.
async fn scenario_bad_values_are_misses(store: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let replicas = w.replicas(&store, 2);
    let (a, b, c) = (w.token("cleo"), w.token("dan"), w.token("eve"));
    let ttl = Duration::from_secs(600);

    // Garbage of several shapes.
    for (i, garbage) in [
        b"\x00\xff not json".to_vec(),
        br#"{"v":1}"#.to_vec(),
        br#"{"v":9,"sub":"x","upst":"a.b.c","key":"AAAA","obtained_ms":0}"#.to_vec(),
        Vec::new(),
    ]
    .into_iter()
    .enumerate()
    {
        let token = w.token(&format!("garbage{i}"));
        store
            .put("session", &session_key(&token), garbage, ttl)
            .await
            .unwrap();
        w.call(&replicas[0], &token).await;
        assert_eq!(w.emulator.exchanges_for(&format!("garbage{i}")), 1);
        assert_eq!(replicas[0].stats().store_hits, 0);
    }

    // A's real session, copied under B's key: B must not use it.
    let session_a = w.call(&replicas[0], &a).await.session().unwrap().clone();
    let value_a = store
        .get("session", &session_key(&a))
        .await
        .unwrap()
        .expect("A's session is stored");
    store
        .put("session", &session_key(&b), value_a.clone(), ttl)
        .await
        .unwrap();
    let session_b = w.call(&replicas[1], &b).await.session().unwrap().clone();
    assert_eq!(w.emulator.exchanges_for("dan"), 1, "B exchanged its own");
    assert_ne!(session_b.user_ocid(), session_a.user_ocid());
    assert_ne!(
        session_b.upst().token().expose_secret(),
        session_a.upst().token().expose_secret()
    );

    // A's session bound to C's hash, with another session's private key: the
    // UPST is not bound to that key, so it is refused. (A value rewritten with
    // everything consistent is what the operator's authenticated encryption
    // stops.)
    let mut tampered: serde_json::Value = serde_json::from_slice(&value_a).unwrap();
    tampered["key"] = serde_json::Value::String(
        serde_json::from_slice::<serde_json::Value>(
            &store
                .get("session", &session_key(&b))
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    tampered["sub"] = serde_json::Value::String(session_key(&c));
    store
        .put(
            "session",
            &session_key(&c),
            serde_json::to_vec(&tampered).unwrap(),
            ttl,
        )
        .await
        .unwrap();
    w.call(&replicas[1], &c).await;
    assert_eq!(
        w.emulator.exchanges_for("eve"),
        1,
        "a key that does not match its UPST is refused"
    );
    assert_eq!(total(&replicas, |s| s.store_hits), 0);
}

/// The store fails (errors, then hangs): each replica exchanges once for the
/// token, no call fails. Then it returns: a new token is shared again.
async fn scenario_store_outage(inner: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let test_store = TestStore::new(inner);
    let store: Arc<dyn Store> = test_store.clone();
    let replicas = w.replicas(&store, 3);

    test_store.set(ERRORS);
    w.fifty_calls(&replicas, &w.token("fay")).await;
    assert_eq!(w.emulator.exchanges_for("fay"), 3, "one per replica");
    assert!(replicas.iter().all(|r| r.stats().store_errors > 0));

    test_store.set(HANGS);
    w.fifty_calls(&replicas, &w.token("gus")).await;
    assert_eq!(w.emulator.exchanges_for("gus"), 3, "one per replica");

    test_store.set(UP);
    let errors = total(&replicas, |s| s.store_errors);
    w.fifty_calls(&replicas, &w.token("hal")).await;
    assert_eq!(w.emulator.exchanges_for("hal"), 1, "sharing resumed");
    assert_eq!(total(&replicas, |s| s.store_errors), errors);
    assert_eq!(total(&replicas, |s| s.store_hits), 2);
}

/// Nothing written to the store holds the user token, and keys are its hash.
async fn scenario_no_user_token_in_the_store(inner: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let test_store = TestStore::new(inner);
    let store: Arc<dyn Store> = test_store.clone();
    let replicas = w.replicas(&store, 3);
    let token = w.token("ida");
    w.fifty_calls(&replicas, &token).await;
    let written = test_store.written.lock().unwrap().clone();
    assert!(written.iter().any(|(c, _, _)| c == "session"));
    assert!(written.iter().any(|(c, _, _)| c == "session-lock"));
    for (collection, key, value) in &written {
        assert_eq!(key, &session_key(&token), "{collection}");
        let text = String::from_utf8_lossy(value);
        for part in token.expose_secret().split('.').filter(|p| p.len() >= 8) {
            assert!(!text.contains(part), "user token in {collection}");
            assert!(!key.contains(part));
        }
    }
}

/// After a 401, the forced refresh does not take the refused session back from
/// the store; the other replica, refused too, takes the new one.
async fn scenario_refused_session_not_taken_back(store: Arc<dyn Store>) {
    let w = world(Duration::from_secs(3600)).await;
    let replicas = w.replicas(&store, 2);
    let token = w.token("jo");
    let first = w.call(&replicas[0], &token).await;
    let shared = w.call(&replicas[1], &token).await;
    assert_eq!(w.emulator.exchanges_for("jo"), 1);
    let refused = first.session().unwrap().clone();
    assert_eq!(
        shared.session().unwrap().upst().token().expose_secret(),
        refused.upst().token().expose_secret()
    );

    w.emulator.reject_next_session_tokens(1);
    let (status, used) = w.try_call(&replicas[1], &token).await;
    assert_eq!(status, 401);
    let signer = replicas[1].signer_for(&token).await.unwrap();
    assert!(signer.refused(&used));
    let renewed = w.call(&replicas[1], &token).await;
    assert_eq!(
        w.emulator.exchanges_for("jo"),
        2,
        "a new exchange, not the store"
    );
    let renewed = renewed.session().unwrap().clone();
    assert_ne!(
        renewed.upst().token().expose_secret(),
        refused.upst().token().expose_secret()
    );

    // Replica 0 learns of the refusal too: it takes replica 1's new session.
    let signer = replicas[0].signer_for(&token).await.unwrap();
    assert!(signer.session_refused(&refused));
    let taken = w.call(&replicas[0], &token).await;
    assert_eq!(w.emulator.exchanges_for("jo"), 2);
    assert_eq!(
        taken.session().unwrap().upst().token().expose_secret(),
        renewed.upst().token().expose_secret()
    );
}

/// A refresh (the session is due) first looks for a newer session in the store:
/// two replicas refresh with one exchange.
async fn scenario_refresh_is_shared(store: Arc<dyn Store>) {
    // UPSTs live 10 minutes and are due 5 minutes before expiry.
    let w = world(Duration::from_secs(600)).await;
    let replicas = w.replicas(&store, 3);
    let token = w.token("kai");
    w.fifty_calls(&replicas, &token).await;
    assert_eq!(w.emulator.exchanges_for("kai"), 1);
    w.clock.advance(Duration::from_secs(301));
    w.fifty_calls(&replicas, &token).await;
    assert_eq!(w.emulator.exchanges_for("kai"), 2, "one refresh for all");
    assert_eq!(total(&replicas, |s| s.store_hits), 4);
}

// ---------------------------------------------------------------------------
// On MemoryStore.
// ---------------------------------------------------------------------------

fn memory() -> Arc<dyn Store> {
    // TTLs on the real clock: the tests' fixed clock only moves forward, by less
    // than the sessions' lifetimes.
    Arc::new(MemoryStore::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_fifty_first_calls_over_three_replicas_make_one_exchange() {
    scenario_one_exchange_for_fifty_calls(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_warm_call_makes_no_store_round_trip() {
    scenario_warm_call_costs_no_store_op(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_garbage_and_moved_sessions_are_misses() {
    scenario_bad_values_are_misses(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_outage_exchanges_locally_then_sharing_resumes() {
    scenario_store_outage(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_no_user_token_reaches_the_store() {
    scenario_no_user_token_in_the_store(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_forced_refresh_does_not_take_back_the_refused_session() {
    scenario_refused_session_not_taken_back(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_refresh_is_coordinated_across_replicas() {
    scenario_refresh_is_shared(memory()).await;
}

/// A dead lock holder (its lock left behind) delays the others by at most the
/// lock's lifetime; then they exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_abandoned_lock_expires() {
    let w = world(Duration::from_secs(3600)).await;
    let store = memory();
    let replica = SignerCache::builder(w.exchange.clone())
        .key_pool(KeyPool::new(1))
        .clock(w.clock.clone())
        .store(Arc::clone(&store))
        .store_lock_ttl(Duration::from_millis(300))
        .build();
    let token = w.token("lee");
    store
        .put_if_absent(
            "session-lock",
            &session_key(&token),
            b"dead".to_vec(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.call(&replica, &token))
        .await
        .expect("the wait is bounded");
    assert_eq!(w.emulator.exchanges_for("lee"), 1);
    assert_eq!(replica.stats().shared_exchanges, 1, "it took the lock");
}

/// A slow but answering store (each read takes 400 ms, well under the 2 s bound
/// of one operation) and a lock whose holder never publishes: each wait for the
/// holder is bounded by the lock's lifetime (300 ms) as a whole, reads included,
/// not by the sum of its pauses. Three rounds of contention, then an exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lock_wait_is_bounded_with_a_slow_store() {
    let w = world(Duration::from_secs(3600)).await;
    let test_store = TestStore::new(memory());
    let store: Arc<dyn Store> = test_store.clone();
    let token = w.token("wes");
    store
        .put_if_absent(
            "session-lock",
            &session_key(&token),
            b"stuck".to_vec(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    test_store.slow_reads(Duration::from_millis(400));
    let replica = SignerCache::builder(w.exchange.clone())
        .key_pool(KeyPool::new(1))
        .clock(w.clock.clone())
        .store(Arc::clone(&store))
        .store_lock_ttl(Duration::from_millis(300))
        .store_timeout(Duration::from_secs(2))
        .build();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), w.call(&replica, &token))
        .await
        .expect("the wait is bounded");
    let took = started.elapsed();
    // One first look (400 ms), three waits of at most 300 ms, a key and the
    // exchange: about 2 s. Counting only the pauses, each wait made four rounds of
    // two reads: over 10 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(w.emulator.exchanges_for("wes"), 1);
    assert_eq!(replica.stats().store_errors, 0, "the store answered");
}

/// `build()` given a store shared with other processes that does not encrypt
/// shares nothing through it: the UPST and its private key never reach it in
/// plaintext. The call still works (a local exchange), and an error names the
/// problem, with no secret.
#[test]
fn plain_shared_store_receives_no_session() {
    let (capture, _guard) = common::LogCapture::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, upst) = runtime.block_on(async {
        let w = world(Duration::from_secs(3600)).await;
        let test_store = TestStore::plain_shared(memory());
        let store: Arc<dyn Store> = test_store.clone();
        let replica = SignerCache::builder(w.exchange.clone())
            .key_pool(KeyPool::new(1))
            .clock(w.clock.clone())
            .store(Arc::clone(&store))
            .build();
        let token = w.token("xan");
        let credentials = w.call(&replica, &token).await;
        assert_eq!(w.emulator.exchanges_for("xan"), 1);
        assert!(
            test_store.written.lock().unwrap().is_empty(),
            "nothing written to a plaintext shared store"
        );
        assert_eq!(replica.stats().store_ops, 0);
        let upst = credentials.session().unwrap().upst().token().clone();
        (token, upst)
    });
    let text = capture.text();
    assert!(
        text.contains("ERROR") && text.contains("does not encrypt"),
        "{text}"
    );
    capture.assert_free_of("user token", token.expose_secret());
    capture.assert_free_of("UPST", upst.expose_secret());
}

/// `try_build` refuses a shared store that does not encrypt; the test-only opt-in
/// accepts it (and sessions are shared through it); a store in the process
/// (`MemoryStore`) needs no opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_build_refuses_a_plain_shared_store_without_the_opt_in() {
    let w = world(Duration::from_secs(3600)).await;
    let test_store = TestStore::plain_shared(memory());
    let store: Arc<dyn Store> = test_store.clone();
    let error = w.builder(&store).try_build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig);
    assert!(error.to_string().contains("EncryptedStore"), "{error}");

    let allowed = w
        .builder(&store)
        .allow_unencrypted_store()
        .try_build()
        .expect("opted in");
    w.call(&allowed, &w.token("yul")).await;
    assert!(
        test_store
            .written
            .lock()
            .unwrap()
            .iter()
            .any(|(c, _, _)| c == "session"),
        "shared through the store"
    );

    let local = w.builder(&memory()).try_build().expect("not shared");
    w.call(&local, &w.token("zed")).await;
    assert_eq!(local.stats().shared_exchanges, 1);
}

/// An outage is logged once (a warning) and its end once (info), with no secret.
#[test]
fn store_outage_is_logged_once() {
    let (capture, _guard) = common::LogCapture::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = runtime.block_on(async {
        let w = world(Duration::from_secs(3600)).await;
        let test_store = TestStore::new(memory());
        let store: Arc<dyn Store> = test_store.clone();
        let replica = w.replica(&store);
        test_store.set(ERRORS);
        for sub in ["mo", "ned", "oli"] {
            w.call(&replica, &w.token(sub)).await;
        }
        test_store.set(UP);
        let token = w.token("pia");
        w.call(&replica, &token).await;
        w.call(&replica, &w.token("quin")).await;
        token
    });
    let text = capture.text();
    assert_eq!(text.matches("session store failing").count(), 1, "{text}");
    assert_eq!(
        text.matches("session store reachable again").count(),
        1,
        "{text}"
    );
    capture.assert_free_of("user token", token.expose_secret());
}

// ---------------------------------------------------------------------------
// On a real redis-server (skipped with a printed reason when there is none,
// unless OCX_REQUIRE_REDIS=1).
// ---------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use common::redis::RedisServer;
    use oci_token_exchange::{EncryptedStore, Fernet, FernetKey, RedisStore};

    async fn redis() -> Option<(RedisServer, Arc<dyn Store>)> {
        let server = RedisServer::start()?;
        let store = RedisStore::connect(&server.url()).await.unwrap();
        Some((server, Arc::new(store)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_fifty_first_calls_over_three_replicas_make_one_exchange() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_one_exchange_for_fifty_calls(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_warm_call_makes_no_store_round_trip() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_warm_call_costs_no_store_op(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_garbage_and_moved_sessions_are_misses() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_bad_values_are_misses(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_store_errors_and_hangs_exchange_locally_then_sharing_resumes() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_store_outage(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_forced_refresh_does_not_take_back_the_refused_session() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_refused_session_not_taken_back(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_refresh_is_coordinated_across_replicas() {
        let Some((_server, store)) = redis().await else {
            return;
        };
        scenario_refresh_is_shared(store).await;
    }

    /// Every key and value in Redis after 50 calls: no user token anywhere; keys
    /// are `ocx:session:<hash>` and `ocx:session-lock:<hash>` only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_dump_holds_no_user_token() {
        let Some((server, store)) = redis().await else {
            return;
        };
        scenario_no_user_token_in_the_store(Arc::clone(&store)).await;
        let w = world(Duration::from_secs(3600)).await;
        let token = w.token("rue");
        w.fifty_calls(&w.replicas(&store, 3), &token).await;
        let dump = server.dump().await;
        assert!(!dump.is_empty());
        let expected = format!("ocx:session:{}", session_key(&token));
        assert!(dump.iter().any(|(k, _)| k == expected.as_bytes()));
        for (key, value) in &dump {
            let (key, value) = (String::from_utf8_lossy(key), String::from_utf8_lossy(value));
            assert!(key.starts_with("ocx:session:"), "{key}");
            for part in token.expose_secret().split('.').filter(|p| p.len() >= 8) {
                assert!(!key.contains(part) && !value.contains(part), "{key}");
            }
        }
    }

    /// Redis killed: each replica exchanges once, no call fails. Redis back
    /// (empty): sharing resumes by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_stopped_then_restarted() {
        let Some((mut server, store)) = redis().await else {
            return;
        };
        let w = world(Duration::from_secs(3600)).await;
        let replicas = w.replicas(&store, 3);
        let sam = w.token("sam");
        w.fifty_calls(&replicas, &sam).await;
        assert_eq!(w.emulator.exchanges_for("sam"), 1);

        tokio::task::block_in_place(|| server.stop());
        w.fifty_calls(&replicas, &w.token("tom")).await;
        assert_eq!(w.emulator.exchanges_for("tom"), 3, "one per replica");
        assert!(replicas.iter().all(|r| r.stats().store_errors > 0));
        // Sessions already held keep working without Redis.
        w.fifty_calls(&replicas, &sam).await;
        assert_eq!(w.emulator.exchanges_for("sam"), 1);

        tokio::task::block_in_place(|| server.restart());
        // The connection comes back by itself; wait (bounded) until it has.
        let mut back = false;
        for _ in 0..100 {
            if store.get("probe", "x").await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "the store reconnects");
        let hits = total(&replicas, |s| s.store_hits);
        w.fifty_calls(&replicas, &w.token("uma")).await;
        assert_eq!(w.emulator.exchanges_for("uma"), 1, "sharing resumed");
        assert_eq!(total(&replicas, |s| s.store_hits), hits + 2);
    }

    fn encrypted(store: RedisStore, key: &FernetKey) -> Arc<dyn Store> {
        Arc::new(EncryptedStore::new(
            store,
            Fernet::with_keys(vec![key.clone()]).unwrap(),
        ))
    }

    /// The production shape, `EncryptedStore<RedisStore>`: one exchange for 50
    /// calls over three replicas, and a dump of Redis shows no user token, no
    /// UPST and no stored-session field in plaintext. A replica with another
    /// Fernet key cannot read the session: a miss and its own exchange.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_encrypted_sessions_are_shared_and_opaque() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let key = FernetKey::generate().unwrap();
        let store = encrypted(RedisStore::connect(&server.url()).await.unwrap(), &key);
        let w = world(Duration::from_secs(3600)).await;
        let replicas: Vec<SignerCache> = (0..3)
            .map(|_| w.builder(&store).try_build().expect("encrypting store"))
            .collect();
        let token = w.token("val");
        w.fifty_calls(&replicas, &token).await;
        assert_eq!(w.emulator.exchanges_for("val"), 1);
        let upst = w
            .call(&replicas[2], &token)
            .await
            .session()
            .unwrap()
            .clone();

        let dump = server.dump().await;
        assert!(!dump.is_empty());
        for (k, v) in &dump {
            let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
            let secrets = [token.expose_secret(), upst.upst().token().expose_secret()];
            for part in secrets
                .iter()
                .flat_map(|s| s.split('.'))
                .filter(|p| p.len() >= 8)
            {
                assert!(!k.contains(part) && !v.contains(part), "{k}");
            }
            assert!(!v.contains("upst") && !v.contains("obtained_ms"), "{k}");
        }

        let other_key = FernetKey::generate().unwrap();
        let stranger = w.replica(&encrypted(
            RedisStore::connect(&server.url()).await.unwrap(),
            &other_key,
        ));
        w.call(&stranger, &token).await;
        assert_eq!(w.emulator.exchanges_for("val"), 2, "undecryptable: a miss");
        assert_eq!(stranger.stats().store_hits, 0);
    }

    /// A plain `RedisStore` (shared, no encryption): `try_build` refuses it, and
    /// `build` shares nothing through it: after a call, Redis is empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_plain_store_holds_no_session_without_the_opt_in() {
        let Some((server, store)) = redis().await else {
            return;
        };
        let w = world(Duration::from_secs(3600)).await;
        let error = w.builder(&store).try_build().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        let replica = w.builder(&store).build();
        w.call(&replica, &w.token("abe")).await;
        assert_eq!(w.emulator.exchanges_for("abe"), 1);
        assert_eq!(replica.stats().store_ops, 0);
        assert!(server.dump().await.is_empty(), "no session in plain Redis");
    }
}
