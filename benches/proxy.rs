//! The OAuth proxy's cost on a warm tool call: bearer validation of the proxy's own
//! token plus the lookup of the user's upstream token set, beside bearer mode's
//! validation of a domain token sent directly.
//!
//! - `proxy/validate_warm`: `OAuthProxy::bearer_auth().validate(own token)` with
//!   the validation cache off (`validation_cache_ttl(0)`): the token's record and
//!   its login are read from the store (a `MemoryStore`) on every call;
//! - `proxy/validate_warm_cached`: the same with the default 1 s validation cache
//!   (a replica sharing the store, so the token is the same): no store read but
//!   one per second;
//! - `proxy/bearer_validate_warm`: `BearerAuth::validate(domain token)` (keys cached)
//!   with its validation cache off: the RS256 check and the claims' parse each time;
//! - `proxy/bearer_validate_warm_cached`: the same with `BearerAuth`'s default
//!   60 s validation cache (one SHA-256 of the token and a lookup).
//!
//! The login that yields the proxy's token runs once, against the emulator, with the
//! consent page off.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use oci_token_exchange::{BearerAuth, Emulator, MemoryStore, OAuthProxy, UserTokenOptions};
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// Registers a client, logs the emulator's demo user in and redeems the code.
async fn proxy_token(base: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client: Value = http
        .post(format!("{base}/register"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"redirect_uris":["{REDIRECT}"],"client_name":"bench","token_endpoint_auth_method":"none"}}"#))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let authorize = url::Url::parse_with_params(
        &format!("{base}/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("state", "bench-state"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut next = authorize.to_string();
    let code = loop {
        let mut request = http.get(&next);
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            cookies.insert(name.to_owned(), value.to_owned());
        }
        assert!(response.status().is_redirection(), "{}", response.status());
        let location = response.headers()["location"].to_str().unwrap();
        next = response.url().join(location).unwrap().to_string();
        if next.starts_with(REDIRECT) {
            let url = url::Url::parse(&next).unwrap();
            break url
                .query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned();
        }
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier),
        ])
        .finish();
    let tokens: Value = http
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (proxy, cached, own_token, bearer, bearer_cached, domain_token, _emulator) = runtime
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let emulator = Emulator::builder()
                .redirect_uri(format!("{base}/auth/callback"))
                .start()
                .await
                .unwrap();
            let store = MemoryStore::default();
            let replica = |ttl: Option<Duration>| {
                let builder = OAuthProxy::builder()
                    .base_url(base.as_str())
                    .domain_url(emulator.domain_url().as_str())
                    .client_credentials(emulator.client_id(), emulator.client_secret().clone())
                    .signing_key(b"bench-signing-key-0123456789-0123456789".to_vec())
                    .consent(false)
                    .store(Arc::new(store.clone()));
                match ttl {
                    Some(ttl) => builder.validation_cache_ttl(ttl),
                    None => builder,
                }
                .build()
                .unwrap()
            };
            let proxy = replica(Some(Duration::ZERO));
            let cached = replica(None);
            let app = proxy.router();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let own_token = proxy_token(&base).await;
            let resource = format!("{base}/mcp");
            let bearer_with = |ttl: Option<Duration>| {
                let builder = BearerAuth::builder()
                    .domain_url(emulator.domain_url().as_str())
                    .resource(resource.as_str())
                    .audience(resource.as_str());
                match ttl {
                    Some(ttl) => builder.validation_cache_ttl(ttl),
                    None => builder,
                }
                .build()
                .unwrap()
            };
            let bearer = bearer_with(Some(Duration::ZERO));
            let bearer_cached = bearer_with(None);
            let domain_token = emulator
                .mint_user_token_with(&UserTokenOptions::new("bench").audience(resource.as_str()));
            // Warm both: keys fetched, token set found.
            proxy.bearer_auth().validate(&own_token).await.unwrap();
            cached.bearer_auth().validate(&own_token).await.unwrap();
            bearer.validate(&domain_token).await.unwrap();
            bearer_cached.validate(&domain_token).await.unwrap();
            (
                proxy,
                cached,
                own_token,
                bearer,
                bearer_cached,
                domain_token,
                emulator,
            )
        });
    let auth = proxy.bearer_auth();
    let mut group = c.benchmark_group("proxy");
    group.bench_function("validate_warm", |b| {
        b.iter(|| runtime.block_on(auth.validate(&own_token)).unwrap());
    });
    let cached = cached.bearer_auth();
    group.bench_function("validate_warm_cached", |b| {
        b.iter(|| runtime.block_on(cached.validate(&own_token)).unwrap());
    });
    group.bench_function("bearer_validate_warm", |b| {
        b.iter(|| runtime.block_on(bearer.validate(&domain_token)).unwrap());
    });
    group.bench_function("bearer_validate_warm_cached", |b| {
        b.iter(|| {
            runtime
                .block_on(bearer_cached.validate(&domain_token))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
