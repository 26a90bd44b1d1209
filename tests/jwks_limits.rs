//! What a JWKS document can make a `BearerAuth` hold: at most a bounded number of
//! keys, and nothing once the validator is dropped.
//!
//! The memory test reads this process's resident set size and the runtime's live
//! tasks, so every test here takes [`SERIAL`]: no other test allocates while one
//! measures.
#![cfg(feature = "mcp")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr
)]

mod common;

use common::domain::{AUDIENCE, Domain, START, bearer_auth, http_client};
use std::sync::Mutex;
use std::time::Duration;

use oci_token_exchange::{ErrorKind, SigningKey};
use serde_json::{Value, json};

/// Resident set size in KiB (Linux), for the report.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

static SERIAL: Mutex<()> = Mutex::new(());

fn key() -> SigningKey {
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/rsa2048-pkcs8.pem"),
    )
    .unwrap();
    SigningKey::from_pem(&pem).unwrap()
}

fn jwk(kid: &str, key: &SigningKey) -> Value {
    let public = key.public_key();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
           "n": public.jwk_n(), "e": public.jwk_e()})
}

/// A token issued a minute before the validator's clock (so before its keys were
/// fetched: an unknown kid is then refused outright, not answered 503 as a key
/// the domain may have rolled to since).
fn signed(key: &SigningKey, kid: &str, issuer: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
    let claims = json!({"iss": issuer, "sub": "ann", "aud": AUDIENCE,
                        "iat": START - 60, "exp": START + 3600, "scope": "openid"})
    .to_string();
    common::jws::rs256(key, &header, &claims)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `count` keys, all the same public key under distinct kids, `k1` among them at
/// `k1_at`.
fn jwks_document(key: &SigningKey, count: usize, k1_at: usize) -> String {
    let keys: Vec<Value> = (0..count)
        .map(|i| {
            if i == k1_at {
                jwk("k1", key)
            } else {
                jwk(&format!("other-{i}"), key)
            }
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// Builds a validator, validates one token (fetching the documents), drops it, the
/// way the fuzz target does each case: `iterations` times.
fn cycles(
    rt: &tokio::runtime::Runtime,
    domain: &Domain,
    http: &reqwest::Client,
    token: &str,
    iterations: usize,
) {
    for _ in 0..iterations {
        let auth = bearer_auth(&domain.url, http);
        let t = token.to_owned();
        let outcome = rt.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio::spawn(async move { auth.validate(&t).await.map(|_| ()) }),
            )
            .await
        });
        let outcome = outcome.expect("a validation ends").expect("no panic");
        if let Err(e) = outcome {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::SignatureRejected | ErrorKind::Transport
                ),
                "{e}"
            );
        }
    }
}

/// Runtime tasks alive and RSS after rounds of build/validate/drop with a JWKS
/// document of `keys` keys: what the library keeps after its validators are gone.
fn measure(keys: usize, rounds: usize, per_round: usize) -> Vec<(usize, u64)> {
    let rt = runtime();
    let key = key();
    let http = http_client();
    let domain = rt.block_on(Domain::start());
    domain.set(domain.discovery().to_string(), jwks_document(&key, keys, 0));
    let token = signed(&key, "k1", &domain.url);
    // Warm up: connection pool, runtime, lazily built statics.
    cycles(&rt, &domain, &http, &token, 20);
    let alive = || rt.metrics().num_alive_tasks();
    let mut samples = vec![(alive(), rss_kib())];
    for _ in 0..rounds {
        cycles(&rt, &domain, &http, &token, per_round);
        // Background work (connection tasks) settles.
        std::thread::sleep(Duration::from_millis(50));
        samples.push((alive(), rss_kib()));
    }
    eprintln!("keys {keys}: (tasks alive, RSS KiB) after each {per_round} cycles: {samples:?}");
    samples
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each dropped validator ends its fetch tasks and leaves no keys behind: the
/// runtime's tasks stay at the stub server's, and the resident set stays flat.
#[test]
fn dropped_validators_leave_nothing_behind() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rounds = env_count("OCX_JWKS_ROUNDS", 3);
    let per_round = env_count("OCX_JWKS_PER_ROUND", 100);
    for keys in [1, 500, 5_000] {
        let samples = measure(keys, rounds, per_round);
        let (tasks, rss) = samples[0];
        let (last_tasks, last_rss) = samples[samples.len() - 1];
        assert!(last_tasks <= tasks, "tasks alive: {samples:?}");
        // A retained validator holds its 500 parsed keys and more: megabytes over
        // hundreds of cycles; allocator noise stays well under this.
        assert!(
            last_rss < rss + 32 * 1024,
            "{keys} keys: RSS grew by {} KiB over {} cycles",
            last_rss - rss,
            rounds * per_round
        );
    }
}

/// A JWKS of 500 keys (as many as fit the 256 KiB document limit) keeps the first
/// 64: a token signed by the first key validates, one naming the last is refused.
#[test]
fn keys_beyond_the_cap_are_ignored() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let key = key();
    let http = http_client();
    let domain = rt.block_on(Domain::start());
    let validate = |k1_at: usize| {
        domain.set(
            domain.discovery().to_string(),
            jwks_document(&key, 500, k1_at),
        );
        let auth = bearer_auth(&domain.url, &http);
        let token = signed(&key, "k1", &domain.url);
        rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(20), auth.validate(&token))
                .await
                .expect("a validation ends")
                .map(|_| ())
        })
    };
    validate(0).expect("the first key is kept");
    validate(63).expect("the 64th key is kept");
    let err = validate(499).expect_err("the 500th key is ignored");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
    let err = validate(64).expect_err("the 65th key is ignored");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
}
