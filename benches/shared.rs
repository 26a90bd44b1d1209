//! Sessions shared across replicas through a `Store`.
//!
//! - `shared/first_use_from_store`: a replica's first signed request (signer,
//!   store lookup, session decode, sign, send to the emulator) for a user whose
//!   session another replica made and stored: no exchange, no key generation.
//!   On a local redis-server this bench starts (feature `redis`; skipped with a
//!   printed reason without one); compare with `session/cold_pooled` (an exchange).
//! - `shared/first_use_from_memory_store`: the same on `MemoryStore` (the cost
//!   of the lookup and decode without the network).
//! - `shared/warm_signed_request`: the floor both include, in the same run: a
//!   signed request to the same emulator with a signer whose session is already
//!   in memory (sign, send). `first_use_*` minus this is the cost of taking a
//!   session from the store: the store read, decoding, loading the private key
//!   (aws-lc checks its consistency) and the key's first signature (aws-lc sets
//!   up its blinding: a modular inverse, about one more RSA signature's work).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
#[cfg(feature = "redis")]
#[path = "../tests/common/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;
use oci_token_exchange::{
    Emulator, KeyPool, MemoryStore, SecretString, SignerCache, Store, TokenExchange,
    UserTokenOptions,
};

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::default());
    first_use(c, &runtime, "first_use_from_memory_store", memory);
    #[cfg(feature = "redis")]
    if let Some(server) = redis_server::RedisServer::start() {
        let redis: Arc<dyn Store> = Arc::new(
            runtime
                .block_on(oci_token_exchange::RedisStore::connect(&server.url()))
                .expect("redis"),
        );
        first_use(c, &runtime, "first_use_from_store", redis);
    }
}

/// A replica's first signed request with `store` holding the user's session.
fn first_use(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    id: &str,
    store: Arc<dyn Store>,
) {
    let emulator = runtime.block_on(Emulator::start()).expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .expect("config");
    let replica = |pool: usize| {
        SignerCache::builder(exchange.clone())
            .key_pool(KeyPool::new(pool))
            .store(Arc::clone(&store))
            // The plain RedisStore measures the store path without encryption.
            .allow_unencrypted_store()
            .build()
    };

    // Another replica makes and stores the user's session.
    let token =
        SecretString::new(emulator.mint_user_token_with(
            &UserTokenOptions::new("shared").ttl(Duration::from_secs(86_400)),
        ));
    let maker = replica(1);
    runtime.block_on(async {
        maker
            .signer_for(&token)
            .await
            .expect("signer")
            .session()
            .await
            .expect("session");
    });

    let http = reqwest::Client::new();
    let url = emulator.api_url().join("/20160918/instances").expect("url");
    let mut group = c.benchmark_group("shared");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(id, |b| {
        b.iter_batched(
            // Set-up (not measured): a fresh replica with no key pool (a store
            // hit needs no key) and the request.
            || (replica(0), http.get(url.clone()).build().expect("request")),
            |(cache, mut request)| {
                runtime.block_on(async {
                    let signer = cache.signer_for(&token).await.expect("signer");
                    signer.sign_reqwest(&mut request).await.expect("signed");
                    assert_eq!(http.execute(request).await.expect("sent").status(), 200);
                });
                assert_eq!(
                    cache.stats().store_hits,
                    1,
                    "the session came from the store"
                );
                cache
            },
            BatchSize::PerIteration,
        );
    });
    if id == "first_use_from_memory_store" {
        // The maker's signer holds the session in memory: sign and send only.
        let signer = runtime.block_on(maker.signer_for(&token)).expect("signer");
        group.bench_function("warm_signed_request", |b| {
            b.iter_batched(
                || http.get(url.clone()).build().expect("request"),
                |mut request| {
                    runtime.block_on(async {
                        signer.sign_reqwest(&mut request).await.expect("signed");
                        assert_eq!(http.execute(request).await.expect("sent").status(), 200);
                    });
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
    assert_eq!(
        emulator.exchanges_for("shared"),
        1,
        "only the maker exchanged"
    );
}

criterion_group!(shared, benches);
criterion_main!(shared);
