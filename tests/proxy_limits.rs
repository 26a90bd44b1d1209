//! What anyone can make the OAuth proxy hold through `/register`: small
//! registrations, a rate limit per process, and a full client collection that
//! answers 503 and leaves logins of registered clients working.
#![cfg(all(feature = "oauth-proxy", feature = "emulator"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::browser::location;
use std::sync::Arc;
use std::time::Duration;

use oci_token_exchange::{Emulator, ErrorKind, FixedClock, MemoryStore, OAuthProxy};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "the-clients-own-verifier-with-enough-characters-1234";

struct Env {
    emu: Emulator,
    base: String,
    store: MemoryStore,
    clock: Arc<FixedClock>,
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

/// A proxy without consent over `store_entries` entries, with `rate` if given.
async fn env(store_entries: usize, rate: Option<(u32, u32)>) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let clock = Arc::new(FixedClock::at_unix(1_900_000_000));
    let emu = Emulator::builder()
        .clock(clock.clone())
        .redirect_uri(format!("{base}/auth/callback"))
        .start()
        .await
        .unwrap();
    let store = MemoryStore::with_clock(clock.clone())
        .with_limits(store_entries, MemoryStore::DEFAULT_MAX_BYTES);
    let mut builder = OAuthProxy::builder()
        .base_url(&base)
        .domain_url(emu.domain_url().as_str())
        .client_credentials(emu.client_id(), emu.client_secret().clone())
        .signing_key([7u8; 32])
        .consent(false)
        .store(Arc::new(store.clone()))
        .clock(clock.clone());
    if let Some((per_minute, burst)) = rate {
        builder = builder.registration_rate(per_minute, burst);
    }
    let app = builder.build().unwrap().router();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Env {
        emu,
        base,
        store,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _server: server,
    }
}

impl Env {
    async fn post_register(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/register", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn register(&self) -> String {
        let r = self
            .post_register(&json!({"client_name": "c", "redirect_uris": [REDIRECT]}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        body["client_id"].as_str().unwrap().to_owned()
    }

    /// A whole login of `client_id` up to the redeemed code: the token response.
    async fn login(&self, client_id: &str) -> (StatusCode, Value) {
        use base64::Engine as _;
        use sha2::Digest as _;
        let challenge =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER));
        let mut url = Url::parse(&format!("{}/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "s")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{}/mcp", self.base));
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let upstream = location(&browser.get(url.as_str()).send().await.unwrap());
        assert!(
            upstream.starts_with(self.emu.domain_url().as_str()),
            "{upstream}"
        );
        let callback = location(&browser.get(&upstream).send().await.unwrap());
        let done = location(&browser.get(&callback).send().await.unwrap());
        assert!(done.starts_with(REDIRECT), "{done}");
        let code = Url::parse(&done)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Option<String>, String) {
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    (
        status,
        retry_after,
        body["error"].as_str().unwrap().to_owned(),
    )
}

/// Registrations fill the client collection (a quarter of the store) until the
/// store refuses: then `/register` answers 503 `temporarily_unavailable` with
/// `Retry-After` (it answered 500), and a client registered before still logs in
/// (the `txn` collection has a share of its own).
#[tokio::test]
async fn a_full_client_collection_answers_503_and_logins_still_work() {
    let env = env(200, Some((6000, 1000))).await;
    let client_id = env.register().await;
    let mut refused = None;
    for _ in 0..200 {
        let r = env
            .post_register(&json!({"redirect_uris": [REDIRECT]}))
            .await;
        if r.status() != StatusCode::CREATED {
            refused = Some(error_of(r).await);
            break;
        }
    }
    let (status, retry_after, error) = refused.expect("the client collection is capped");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error, "temporarily_unavailable");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let clients = env.store.count("client");
    assert!((40..=200 / 4).contains(&clients), "{clients} clients");
    let (status, body) = env.login(&client_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
}

/// Registrations beyond the burst are refused with 429 `temporarily_unavailable`
/// and `Retry-After` until the bucket refills with the proxy's clock.
#[tokio::test]
async fn registrations_are_rate_limited() {
    let env = env(MemoryStore::DEFAULT_MAX_ENTRIES, Some((60, 3))).await;
    for _ in 0..3 {
        env.register().await;
    }
    let r = env
        .post_register(&json!({"redirect_uris": [REDIRECT]}))
        .await;
    let (status, retry_after, error) = error_of(r).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error, "temporarily_unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(env.store.count("client"), 3);
    // One a second at 60 a minute.
    env.clock.advance(Duration::from_secs(1));
    env.register().await;
    let r = env
        .post_register(&json!({"redirect_uris": [REDIRECT]}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// The default (60 a minute, bursts of 20) lets 20 registrations through at once,
/// not 21.
#[tokio::test]
async fn the_default_rate_allows_a_burst_of_twenty() {
    let env = env(MemoryStore::DEFAULT_MAX_ENTRIES, None).await;
    for _ in 0..20 {
        env.register().await;
    }
    let r = env
        .post_register(&json!({"redirect_uris": [REDIRECT]}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn a_zero_registration_rate_is_refused() {
    for (per_minute, burst) in [(0, 1), (1, 0)] {
        let err = OAuthProxy::builder()
            .base_url("http://127.0.0.1:1")
            .domain_url("http://127.0.0.1:2")
            .client_credentials("id", "secret".to_owned())
            .signing_key([7u8; 32])
            .registration_rate(per_minute, burst)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
}

/// Registrations stay small: at most 4 KiB of metadata, redirect URIs of at most
/// 512 bytes, client names of at most 200 characters; each refusal is an RFC 7591
/// error, and nothing is stored.
#[tokio::test]
async fn large_registrations_are_refused() {
    let env = env(MemoryStore::DEFAULT_MAX_ENTRIES, Some((6000, 1000))).await;
    let long_uri = format!("{REDIRECT}/{}", "a".repeat(600));
    let cases = [
        (
            json!({"redirect_uris": [REDIRECT], "logo_uri": "x".repeat(5000)}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": [long_uri]}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "client_name": "n".repeat(201)}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": vec![REDIRECT; 11]}),
            "invalid_redirect_uri",
        ),
    ];
    for (body, expected) in cases {
        let r = env.post_register(&body).await;
        let (status, _, error) = error_of(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{expected}");
        assert_eq!(error, expected);
    }
    assert_eq!(env.store.count("client"), 0);
    // Just under the limits is fine.
    let fits = format!("{REDIRECT}/{}", "a".repeat(400));
    let r = env
        .post_register(&json!({"redirect_uris": [fits], "client_name": "n".repeat(200)}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
