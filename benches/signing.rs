//! Signing and key generation. Ids are stable (see DESIGN.md): `sign/get_2048`,
//! `sign/post_1k_2048`, `keygen/rsa_2048`; `*_rust_crypto` variants measure the
//! pure-Rust backend when it is compiled in, `rsa/*` the bare RSA operation.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use oci_token_exchange::{
    KeyBackend, KeyId, KeySize, SignableBody, SignableRequest, SigningKey, SigningParams, sign,
};

const PEM: &str = include_str!("../fixtures/keys/rsa2048-pkcs8.pem");
const UPST: &str = "eyJraWQiOiJhc3ciLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvY2lkMS51c2VyLm9jMS4uYWFhYSIsInRlbmFudCI6Im9jaWQxLnRlbmFuY3kub2MxLi5iYmJiIn0.c2lnbmF0dXJl";

fn suffix(backend: KeyBackend) -> &'static str {
    if backend == KeyBackend::DEFAULT {
        ""
    } else {
        "_rust_crypto"
    }
}

fn benches(c: &mut Criterion) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_150_000);
    let key_id = KeyId::session_token(UPST).expect("key id");
    let get_url = url::Url::parse(
        "https://objectstorage.us-ashburn-1.oraclecloud.com/n/ns/b/bucket/o?prefix=logs%2F2026&limit=100",
    )
    .expect("url");
    let post_url = url::Url::parse("https://iaas.us-ashburn-1.oraclecloud.com/20160918/instances")
        .expect("url");
    let mut post_headers = HeaderMap::new();
    post_headers.insert("content-type", HeaderValue::from_static("application/json"));
    let no_headers = HeaderMap::new();
    let body = vec![b'x'; 1024];

    // SHA-256 of a 2 KiB access token: the cost of binding a cache entry to its token.
    let token = vec![b'a'; 2048];
    c.bench_function("sha256/token_2k", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(token.as_slice())));
    });

    for &backend in KeyBackend::ALL {
        let key = SigningKey::from_pem_with(PEM, backend).expect("key");
        let params = SigningParams::new(&key, &key_id, time);
        let sfx = suffix(backend);
        let mut group = c.benchmark_group("sign");
        let get = SignableRequest::new("GET", &get_url, &no_headers, SignableBody::EMPTY)
            .expect("request");
        group.bench_function(format!("get_2048{sfx}"), |b| {
            b.iter(|| sign(black_box(&get), black_box(&params)).expect("signs"));
        });
        let post =
            SignableRequest::new("POST", &post_url, &post_headers, SignableBody::Bytes(&body))
                .expect("request");
        group.bench_function(format!("post_1k_2048{sfx}"), |b| {
            b.iter(|| sign(black_box(&post), black_box(&params)).expect("signs"));
        });
        group.finish();

        let mut group = c.benchmark_group("rsa");
        group.bench_function(format!("pkcs1_sha256_2048{sfx}"), |b| {
            b.iter(|| {
                key.sign_pkcs1_sha256(black_box(b"date: x\n(request-target): get /\nhost: h"))
            });
        });
        group.finish();

        let mut group = c.benchmark_group("keygen");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20));
        group.bench_function(format!("rsa_2048{sfx}"), |b| {
            b.iter(|| SigningKey::generate_with(backend, KeySize::Rsa2048).expect("generates"));
        });
        group.finish();
    }
}

criterion_group!(signing, benches);
criterion_main!(signing);
