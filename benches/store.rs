//! The shared store's cost, against a local `redis-server` the bench starts on a free
//! loopback port (skipped, with the reason printed, when there is none).
//!
//! - `store/redis_get`: one `get` of a 1 KB value (a token set's size) through
//!   `EncryptedStore<RedisStore>`: a Redis round trip plus Fernet decryption.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oci_token_exchange::{EncryptedStore, Fernet, FernetKey, RedisStore, Store};

fn benches(c: &mut Criterion) {
    let Some(server) = redis_server::RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime.block_on(async {
        let redis = RedisStore::connect(&server.url()).await.unwrap();
        let store = EncryptedStore::new(redis, Fernet::new(FernetKey::generate().unwrap()));
        store
            .put("set", "bench", vec![7; 1024], Duration::from_secs(600))
            .await
            .unwrap();
        store
    });
    c.bench_function("store/redis_get", |b| {
        // `block_on` (~0.3 us) is noise beside a Redis round trip.
        b.iter(|| {
            let value = runtime.block_on(store.get("set", "bench")).unwrap();
            assert_eq!(value.map(|v| v.len()), Some(1024));
        });
    });
    drop(server);
}

criterion_group!(store, benches);
criterion_main!(store);
