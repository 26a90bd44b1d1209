//! The per-user signer cache and a user's first signed request.
//!
//! - `cache/hit_10k`: `SignerCache::signer_for` of a present token among 10 000.
//! - `session/cold_pooled`: a new user's first signed request against the emulator
//!   (signer, exchange, sign, send) with a key waiting in the pool.
//! - `session/cold_unpooled`: the same with the pool off, so the key is generated
//!   on the request path.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use oci_token_exchange::{
    Emulator, KeyPool, SecretString, SignerCache, TokenExchange, TokenExchangeSigner,
    UserTokenOptions,
};

/// An unsigned JWT shaped like an identity-domain access token (~700 bytes).
fn token(i: u64) -> SecretString {
    let payload = format!(
        r#"{{"user_tz":"America/Chicago","sub":"user{i}@example.com","user_locale":"en","sidle":480,"user.tenant.name":"idcs-0123456789abcdef0123456789abcdef","iss":"https://identity.oraclecloud.com/","domain_home":"us-ashburn-1","ca_ocid":"ocid1.tenancy.oc1..aaaaaaaa0123456789abcdefghijklmnopqrstuvwxyz0123456789ab","user_tenantname":"idcs-0123456789abcdef0123456789abcdef","client_id":"0123456789abcdef0123456789abcdef","domain_id":"ocid1.domain.oc1..aaaaaaaa0123456789abcdefghijklmnopqrstuvwxyz0123456789ab","sub_type":"user","scope":"urn:opc:idm:t.user.me openid","user_ocid":"ocid1.user.oc1..aaaaaaaa{i:050}","client_tenantname":"idcs-0123456789abcdef0123456789abcdef","region_name":"us-ashburn-idcs-1","user_lang":"en","exp":4102444800,"iat":1764150000,"client_guid":"0123456789abcdef0123456789abcdef","client_name":"mcp-server","tenant":"idcs-0123456789abcdef0123456789abcdef","jti":"{i:032x}","gtp":"azc","user_displayname":"User {i}","sub_mappingattr":"userName","primTenant":true,"tok_type":"AT","aud":["https://mcp.example.com/"],"user_id":"{i:032x}","tenant_iss":"https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com:443"}}"#
    );
    SecretString::new(format!(
        "eyJ4NXQjUzI1NiI6ImFiYyIsIng1dCI6ImRlZiIsImtpZCI6IlNJR05JTkdfS0VZIiwiYWxnIjoiUlMyNTYifQ.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    ))
}

/// Polls a future that must complete without waiting.
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit waited"),
    }
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = runtime.block_on(Emulator::start()).expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .expect("config");

    let cache = SignerCache::builder(exchange.clone())
        .capacity(20_000)
        .build();
    let tokens: Vec<SecretString> = (0..10_000).map(token).collect();
    runtime.block_on(async {
        for t in &tokens {
            cache.signer_for(t).await.expect("insert");
        }
    });
    assert_eq!(runtime.block_on(cache.len()), 10_000);
    let present = tokens[4321].clone();
    // A hit never waits, so it is polled once, as an async caller's `.await` would;
    // entering a tokio runtime from a plain thread (`block_on`, ~0.3 us here) is
    // not part of the lookup.
    c.bench_function("cache/hit_10k", |b| {
        b.iter(|| poll_once(cache.signer_for(&present)).expect("hit"));
    });

    let http = reqwest::Client::new();
    let url = emulator.api_url().join("/20160918/instances").expect("url");
    let users = AtomicU64::new(0);
    let cold = |pool: &KeyPool| {
        let user = users.fetch_add(1, Ordering::Relaxed);
        let subject = emulator.mint_user_token_with(&UserTokenOptions::new(format!("cold{user}")));
        let signer = TokenExchangeSigner::builder(exchange.clone())
            .subject_token(subject)
            .key_pool(pool.clone())
            .build()
            .expect("signer");
        (signer, http.get(url.clone()).build().expect("request"))
    };

    let mut group = c.benchmark_group("session");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(15));
    let pool = KeyPool::new(3);
    group.bench_function("cold_pooled", |b| {
        b.iter_batched(
            || {
                // Set-up (not measured): wait until the pool holds a ready key.
                runtime.block_on(async {
                    pool.fill();
                    while pool.available() == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                cold(&pool)
            },
            |(signer, mut request)| {
                runtime.block_on(async {
                    signer.sign_reqwest(&mut request).await.expect("signed");
                    assert_eq!(http.execute(request).await.expect("sent").status(), 200);
                });
            },
            BatchSize::PerIteration,
        );
    });
    let no_pool = KeyPool::new(0);
    group.bench_function("cold_unpooled", |b| {
        b.iter_batched(
            || cold(&no_pool),
            |(signer, mut request)| {
                runtime.block_on(async {
                    signer.sign_reqwest(&mut request).await.expect("signed");
                    assert_eq!(http.execute(request).await.expect("sent").status(), 200);
                });
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(cache, benches);
criterion_main!(cache);
