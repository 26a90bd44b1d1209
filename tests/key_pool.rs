//! The key pool: filled when the cache is built, sized to demand (grows when dry,
//! up to its ceiling; shrinks when idle), every key valid, distinct and handed out
//! once. Speed is measured in `benches/pool.rs`, not here.
// The pool and the cache are exported with `reqwest`.
#![cfg(feature = "reqwest")]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::time::Duration;

use oci_token_exchange::{KeyPool, KeySize, SignerCache, SigningKey, TokenExchange};

/// Waits (bounded in count; with paused time the sleeps are virtual) until `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen");
}

fn exchange() -> TokenExchange {
    TokenExchange::builder()
        .domain_url("https://idcs-x.identity.oraclecloud.com")
        .client_credentials("id", "secret")
        .build()
        .unwrap()
}

/// Takes `n` keys at once; checks each is a valid RSA-2048 key that signs, and that
/// no two are the same key.
async fn take_concurrently(pool: &KeyPool, n: usize) -> Vec<SigningKey> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let pool = pool.clone();
        tasks.spawn(async move { pool.take().await.unwrap() });
    }
    let keys: Vec<SigningKey> = tasks.join_all().await;
    let distinct: HashSet<String> = keys
        .iter()
        .map(|key| key.public_key().to_spki_base64())
        .collect();
    assert_eq!(distinct.len(), n, "a key was handed out twice");
    for key in &keys {
        assert_eq!(key.bits(), KeySize::Rsa2048.bits());
        assert_eq!(key.public_key().jwk_e(), "AQAB", "e = 65537");
        let sig = key.sign_pkcs1_sha256(b"date: x").unwrap();
        assert!(key.public_key().verify_pkcs1_sha256(b"date: x", &sig));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_a_cache_fills_its_pool_without_any_take() {
    let pool = KeyPool::builder().floor(4).ceiling(8).build();
    // A pool alone waits for a fill or a take.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.generated(), 0);

    let _cache = SignerCache::builder(exchange())
        .key_pool(pool.clone())
        .build();
    eventually("the pool filling", || pool.available() == 4).await;
    let stats = pool.stats();
    assert_eq!((stats.taken, stats.generated, stats.target), (0, 4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_build_fills_the_pool_too() {
    let pool = KeyPool::builder().floor(2).build();
    let _cache = SignerCache::builder(exchange())
        .key_pool(pool.clone())
        .try_build()
        .unwrap();
    eventually("the pool filling", || pool.available() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_takes_after_the_fill_are_all_served_from_the_pool() {
    // The defaults a SignerCache uses.
    let pool = KeyPool::builder().build();
    assert_eq!(pool.stats().target, KeyPool::DEFAULT_FLOOR);
    pool.fill();
    eventually("the pool filling", || {
        pool.available() == KeyPool::DEFAULT_FLOOR
    })
    .await;
    let before = pool.generated();

    take_concurrently(&pool, 40).await;
    let stats = pool.stats();
    assert_eq!(stats.taken, 40);
    assert_eq!(stats.waited, 0, "every take found a key ready");
    assert_eq!(stats.generated_on_take, 0, "no generation on the take path");
    assert_eq!(stats.target, KeyPool::DEFAULT_FLOOR, "not grown: never dry");
    // The pool refills in the background.
    eventually("the refill", || pool.available() == KeyPool::DEFAULT_FLOOR).await;
    assert_eq!(pool.generated(), before + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takers_on_an_empty_pool_never_share_a_key() {
    let pool = KeyPool::builder().floor(3).ceiling(6).build();
    // No fill: the first takes find it empty and wait for the workers.
    take_concurrently(&pool, 24).await;
    let stats = pool.stats();
    assert_eq!(stats.taken, 24);
    assert!(stats.waited >= 1, "{stats:?}");
    assert_eq!(stats.generated_on_take, 0, "takers waited for the workers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_pool_grows_up_to_its_ceiling_and_no_further() {
    let pool = KeyPool::builder().floor(1).ceiling(5).build();
    // The first take finds it empty: the target rises by 2.
    pool.take().await.unwrap();
    assert_eq!(pool.stats().target, 1 + KeyPool::GROWTH_PER_DRY_TAKE);
    eventually("the refill", || pool.available() == 3).await;

    // Ten at once: 3 ready, the rest dry; the target stops at the ceiling.
    take_concurrently(&pool, 10).await;
    assert_eq!(pool.stats().target, 5);
    eventually("the refill", || pool.available() == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = pool.stats();
    assert_eq!((stats.available, stats.target), (5, 5), "{stats:?}");
    assert_eq!(
        stats.generated,
        stats.taken + 5,
        "nothing made beyond the target"
    );

    // A fixed-size pool does not grow.
    let fixed = KeyPool::new(2);
    take_concurrently(&fixed, 4).await;
    assert_eq!(fixed.stats().target, 2);
    eventually("the refill", || fixed.available() == 2).await;
    assert_eq!(fixed.generated(), 6);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_pool_shrinks_back_towards_its_floor() {
    let idle = Duration::from_secs(60);
    let pool = KeyPool::builder()
        .floor(2)
        .ceiling(10)
        .idle_after(idle)
        .build();
    // The shrink clock starts at the first fill (t0); checks sit mid-period.
    take_concurrently(&pool, 6).await;
    assert_eq!(pool.stats().target, 10);
    eventually("the refill", || pool.available() == 10).await;
    let generated = pool.generated();

    // t0 + 30 s, then + 90 s: the first period saw takes, so nothing is dropped.
    tokio::time::sleep(idle / 2).await;
    tokio::time::sleep(idle).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.target, stats.available, stats.discarded),
        (10, 10, 0)
    );

    // t0 + 150 s: one idle period: halfway back to the floor.
    tokio::time::sleep(idle).await;
    let stats = pool.stats();
    assert_eq!((stats.target, stats.available, stats.discarded), (6, 6, 4));

    // A take during the next period keeps the pool as it is.
    pool.take().await.unwrap();
    eventually("the refill", || pool.available() == 6).await;
    tokio::time::sleep(idle).await;
    assert_eq!(pool.stats().target, 6);

    // Then idle for long: back to the floor, never below, and nothing regenerated.
    tokio::time::sleep(idle * 10).await;
    let stats = pool.stats();
    assert_eq!((stats.target, stats.available), (2, 2), "{stats:?}");
    assert_eq!(stats.generated, generated + 1);
    assert_eq!(stats.discarded, 4 + 4, "6 -> 4 -> 3 -> 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_zero_generates_on_each_take() {
    let off = KeyPool::new(0);
    off.fill();
    take_concurrently(&off, 2).await;
    let stats = off.stats();
    assert_eq!(
        (stats.available, stats.generated, stats.generated_on_take),
        (0, 2, 2)
    );
}

#[test]
fn the_pool_shrinks_again_after_its_first_runtime_is_gone() {
    let idle = Duration::from_secs(60);
    let pool = KeyPool::builder()
        .floor(1)
        .ceiling(9)
        .idle_after(idle)
        .build();
    // Runtime A fills the pool (and starts the shrink task), then goes away.
    let a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    a.block_on(async {
        pool.fill();
        eventually("the fill", || pool.available() == 1).await;
    });
    drop(a);

    // Runtime B: dry takes raise the target, then a long idle brings it back.
    let b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    b.block_on(async {
        take_concurrently(&pool, 4).await;
        let grown = pool.stats().target;
        assert!(grown > 1, "{:?}", pool.stats());
        eventually("the refill", || pool.available() == grown).await;
        tokio::time::sleep(idle * 10).await;
        let stats = pool.stats();
        assert_eq!((stats.target, stats.available), (1, 1), "{stats:?}");
        assert!(stats.discarded >= 1, "{stats:?}");
    });
}
