//! `BearerAuth` against identity domains served on 127.0.0.1 inside each test: a
//! tiny discovery + JWKS server whose keys and health the test controls, and a
//! listener that accepts and never answers.
#![cfg(all(feature = "mcp", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{AccessToken, BearerAuth, ErrorKind, FixedClock, KeySize, SigningKey};
use serde_json::{Value, json};

const START: u64 = 1_800_000_000;
const AUDIENCE: &str = "https://mcp.example.com/";

/// How the test domain answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// 500 for every document.
    Down,
    /// Accepts the request and never answers.
    Hang,
}

struct DomainState {
    keys: Mutex<Vec<Value>>,
    mode: Mutex<Mode>,
    jwks_requests: AtomicU32,
}

/// A loopback identity domain: discovery and JWKS only.
struct Domain {
    url: String,
    state: Arc<DomainState>,
}

impl Domain {
    async fn start(keys: &[(&str, &SigningKey)]) -> Self {
        let state = Arc::new(DomainState {
            keys: Mutex::new(keys.iter().map(|(kid, key)| jwk(kid, key)).collect()),
            mode: Mutex::new(Mode::Up),
            jwks_requests: AtomicU32::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let base = url.clone();
        let shared = Arc::clone(&state);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get({
                    let state = Arc::clone(&shared);
                    move || async move {
                        answer(
                            &state,
                            json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}),
                        )
                        .await
                    }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get({
                    let state = Arc::clone(&shared);
                    move || async move {
                        state.jwks_requests.fetch_add(1, Ordering::SeqCst);
                        let keys = state.keys.lock().unwrap().clone();
                        answer(&state, json!({ "keys": keys })).await
                    }
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state }
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn publish(&self, kid: &str, key: &SigningKey) {
        self.state.keys.lock().unwrap().push(jwk(kid, key));
    }

    fn jwks_requests(&self) -> u32 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    fn issuer(&self) -> &str {
        &self.url
    }
}

async fn answer(state: &DomainState, body: Value) -> (axum::http::StatusCode, String) {
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Up => (axum::http::StatusCode::OK, body.to_string()),
        Mode::Down => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        Mode::Hang => std::future::pending().await,
    }
}

fn jwk(kid: &str, key: &SigningKey) -> Value {
    let public = key.public_key();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
           "n": public.jwk_n(), "e": public.jwk_e()})
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A compact JWS with exactly this header and these claims, signed RS256 by `key`.
fn signed(key: &SigningKey, header: &Value, claims: &Value) -> String {
    common::jws::rs256(key, &header.to_string(), &claims.to_string())
}

fn rs256(kid: &str) -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": kid})
}

fn claims(domain: &Domain, now: u64) -> Value {
    json!({"iss": domain.issuer(), "sub": "ann", "aud": AUDIENCE,
           "iat": now, "exp": now + 3600})
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn key() -> SigningKey {
    SigningKey::generate(KeySize::Rsa2048).unwrap()
}

fn auth(domain_url: &str, clock: &Arc<FixedClock>) -> BearerAuth {
    BearerAuth::builder()
        .domain_url(domain_url)
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .clock(Arc::clone(clock) as Arc<dyn oci_token_exchange::Clock>)
        .build()
        .unwrap()
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_unix(START))
}

#[tokio::test]
async fn a_valid_token_passes_and_carries_its_claims() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    let token = signed(&k, &rs256("k1"), &claims(&domain, START));
    let accepted = auth.validate(&token).await.expect("valid");
    assert_eq!(accepted.subject(), Some("ann"));
}

/// Defect: a fractional `exp` passed the exchange's reading but failed `BearerAuth`,
/// and a fractional `nbf` was ignored. One NumericDate rule now.
#[tokio::test]
async fn fractional_numeric_dates_follow_one_rule() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    let float_exp = with(claims(&domain, START), "exp", json!(START as f64 + 3600.5));
    auth.validate(&signed(&k, &rs256("k1"), &float_exp))
        .await
        .expect("a fractional exp is a NumericDate");
    let future_nbf = with(claims(&domain, START), "nbf", json!(START as f64 + 600.5));
    let err = auth
        .validate(&signed(&k, &rs256("k1"), &future_nbf))
        .await
        .expect_err("a fractional nbf in the future is checked");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected);
    for bad in [json!("1800000000"), json!(-1), json!(null), json!(1e300)] {
        let odd_exp = with(claims(&domain, START), "exp", bad.clone());
        assert!(
            auth.validate(&signed(&k, &rs256("k1"), &odd_exp))
                .await
                .is_err(),
            "exp {bad} is not a usable NumericDate"
        );
    }
}

/// Defect: a JWS `crit` header was ignored; we understand no extension.
#[tokio::test]
async fn a_crit_header_is_rejected() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let auth = auth(&domain.url, &clock());
    let header = json!({"alg": "RS256", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1});
    let err = auth
        .validate(&signed(&k, &header, &claims(&domain, START)))
        .await
        .expect_err("crit");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected);
}

/// Defect: keys under 2048 bits in the JWKS were trusted.
#[cfg(feature = "rust-crypto")]
#[tokio::test]
async fn small_jwks_keys_are_not_trusted() {
    let pem = std::fs::read_to_string(format!(
        "{}/fixtures/keys/rsa1024-pkcs8.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let small =
        SigningKey::from_pem_with(&pem, oci_token_exchange::KeyBackend::RustCrypto).unwrap();
    assert_eq!(small.bits(), 1024);
    let k = key();
    let domain = Domain::start(&[("big", &k), ("small", &small)]).await;
    let auth = auth(&domain.url, &clock());
    // Issued before the keys were fetched (a token of the fetch's own second might
    // name a key rolled since, and gets 503 until the next fetch).
    let err = auth
        .validate(&signed(
            &small,
            &rs256("small"),
            &claims(&domain, START - 60),
        ))
        .await
        .expect_err("1024-bit key");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected);
    auth.validate(&signed(&k, &rs256("big"), &claims(&domain, START)))
        .await
        .expect("the 2048-bit key still works");
}

/// Defect: cached keys were trusted forever while the domain was down.
#[tokio::test]
async fn cached_keys_stop_being_trusted_after_the_maximum_age() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    let token_at = |now: u64| signed(&k, &rs256("k1"), &claims(&domain, now));
    auth.validate(&token_at(START)).await.expect("fresh keys");
    assert_eq!(domain.jwks_requests(), 1);

    // Hourly refresh while the domain is up.
    clock.advance(Duration::from_secs(2 * 3600));
    let now = START + 2 * 3600;
    auth.validate(&token_at(now)).await.expect("still good");
    settle(|| domain.jwks_requests() == 2).await;
    assert_eq!(domain.jwks_requests(), 2, "keys refreshed after an hour");

    // Down: known keys keep working for a while, then stop being trusted.
    domain.set_mode(Mode::Down);
    clock.advance(Duration::from_secs(20 * 3600));
    let now = now + 20 * 3600;
    auth.validate(&token_at(now))
        .await
        .expect("keys 20 h old are still trusted");
    clock.advance(Duration::from_secs(5 * 3600));
    let now = now + 5 * 3600;
    // Let any refresh started by the previous call finish (and fail).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = auth
        .validate(&token_at(now))
        .await
        .expect_err("keys 25 h old are not trusted");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");

    // Back up: after the refetch interval a fetch succeeds and tokens pass again.
    domain.set_mode(Mode::Up);
    clock.advance(Duration::from_secs(61));
    let now = now + 61;
    let accepted = accepted_soon(&auth, &token_at(now)).await;
    assert!(accepted, "fresh keys are trusted again");
}

/// A domain publishing `k1`, and a validator (its clock at `START`) that has
/// fetched the domain's keys once, for a token of `k1`.
async fn fetched_once() -> (SigningKey, Domain, Arc<FixedClock>, BearerAuth) {
    let k1 = key();
    let domain = Domain::start(&[("k1", &k1)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    auth.validate(&signed(&k1, &rs256("k1"), &claims(&domain, START)))
        .await
        .unwrap();
    (k1, domain, clock, auth)
}

/// Whether `token` is accepted within about a second (a fetch it started may still
/// be running in the background).
async fn accepted_soon(auth: &BearerAuth, token: &str) -> bool {
    for _ in 0..50 {
        if auth.validate(token).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits (at most 2 s) for a condition set by a background task.
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Defect: the refetch limit was recorded after the fetch, so a caller dropped
/// mid-fetch recorded nothing and every unknown `kid` fetched again; and the fetch
/// ran under a lock every validation waited on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_domain_costs_one_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            open.push(stream); // never answered, never closed
        }
    });
    let auth = auth(&url, &clock());
    let header = b64(&rs256("x"));
    let token = format!("{header}.{}.c2ln", b64(&json!({"sub": "x"})));
    for _ in 0..5 {
        let outcome = tokio::time::timeout(Duration::from_millis(50), auth.validate(&token)).await;
        assert!(!matches!(outcome, Ok(Ok(_))));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_kids_validate_while_a_refresh_hangs() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    auth.validate(&signed(&k, &rs256("k1"), &claims(&domain, START)))
        .await
        .unwrap();
    domain.set_mode(Mode::Hang);
    // Keys are now stale (refreshed hourly) and a token names an unknown kid.
    clock.advance(Duration::from_secs(2 * 3600));
    let now = START + 2 * 3600;
    let other = key();
    let unknown = signed(&other, &rs256("k2"), &claims(&domain, now));
    let _ = tokio::time::timeout(Duration::from_millis(50), auth.validate(&unknown)).await;
    let known = signed(&k, &rs256("k1"), &claims(&domain, now));
    let outcome = tokio::time::timeout(Duration::from_millis(500), auth.validate(&known)).await;
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "a known kid does not wait for the hanging domain"
    );
}

/// Defect: `Authorization: Basic ...` got `error="invalid_token"`; RFC 6750 section
/// 3.1 says no error code when the request carries no bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_bearer_authorization_is_answered_like_a_missing_token() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let auth = auth(&domain.url, &clock());
    let url = layer_app(&auth).await;
    let expected = format!(
        "Bearer resource_metadata=\"{}\"",
        auth.resource_metadata_url()
    );
    let http = reqwest::Client::new();
    for authorization in [None, Some("Basic dXNlcjpwdw=="), Some("Digest x=1")] {
        let mut request = http.post(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(
            response.headers()["www-authenticate"].to_str().unwrap(),
            expected,
            "{authorization:?}"
        );
    }
    // Two Authorization headers: a malformed request, refused as an invalid token.
    let token = signed(&k, &rs256("k1"), &claims(&domain, START));
    let response = http
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    let response = http
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn layer_app(auth: &BearerAuth) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|request: axum::extract::Request| async move {
            let token = request.extensions().get::<AccessToken>().cloned().unwrap();
            token.subject().unwrap_or("?").to_owned()
        }),
    );
    let app = tower::Layer::layer(&auth.layer(), app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(app))
            .await
            .unwrap();
    });
    format!("http://{address}/mcp")
}

/// HMAC-SHA256, for the algorithm-confusion token.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = sha2::Sha256::new();
    inner.update(pad(0x36));
    inner.update(message);
    let mut outer = sha2::Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_rejected() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let auth = auth(&domain.url, &clock());
    let good = claims(&domain, START);
    let payload = b64(&good);

    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "kid": "k1"})));
    let hs_input = format!("{}.{payload}", b64(&json!({"alg": "HS256", "kid": "k1"})));
    let mut confused = Vec::new();
    for secret in [
        k.public_key().to_spki_der(),
        k.public_key().to_pkcs1_der(),
        jwk("k1", &k).to_string().into_bytes(),
    ] {
        confused.push(format!(
            "{hs_input}.{}",
            URL_SAFE_NO_PAD.encode(hmac_sha256(&secret, hs_input.as_bytes()))
        ));
    }
    let cases: Vec<(&str, String)> = vec![
        ("alg none", none),
        (
            "alg RS512",
            signed(&k, &json!({"alg": "RS512", "kid": "k1"}), &good),
        ),
        (
            "wrong iss",
            signed(
                &k,
                &rs256("k1"),
                &with(good.clone(), "iss", json!("https://evil.example")),
            ),
        ),
        (
            "no iss",
            signed(&k, &rs256("k1"), &without(good.clone(), "iss")),
        ),
        (
            "future nbf",
            signed(
                &k,
                &rs256("k1"),
                &with(good.clone(), "nbf", json!(START + 600)),
            ),
        ),
        (
            "missing exp",
            signed(&k, &rs256("k1"), &without(good.clone(), "exp")),
        ),
        (
            "expired",
            signed(
                &k,
                &rs256("k1"),
                &with(good.clone(), "exp", json!(START - 31)),
            ),
        ),
        (
            "wrong aud",
            signed(
                &k,
                &rs256("k1"),
                &with(good.clone(), "aud", json!("https://other.example/")),
            ),
        ),
        (
            "no aud",
            signed(&k, &rs256("k1"), &without(good.clone(), "aud")),
        ),
        (
            "unknown kid",
            signed(
                &k,
                &rs256("k9"),
                &with(good.clone(), "iat", json!(START - 60)),
            ),
        ),
        (
            "too long",
            signed(
                &k,
                &rs256("k1"),
                &with(good.clone(), "pad", json!("x".repeat(70_000))),
            ),
        ),
        (
            "bad signature",
            format!("{}.{payload}.c2ln", b64(&rs256("k1"))),
        ),
        ("not a jwt", "a.b".to_owned()),
        ("empty", String::new()),
    ];
    let cases = cases
        .into_iter()
        .chain(confused.into_iter().map(|t| ("hs256 with the rsa key", t)));
    for (what, token) in cases {
        let err = auth.validate(&token).await.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{what}: {err}");
        if token.len() > 8 {
            assert!(!err.to_string().contains(&token), "{what} echoed");
        }
    }
    // Within the leeway, an nbf a little ahead and an exp a little behind pass.
    let skewed = with(
        with(good, "nbf", json!(START + 20)),
        "exp",
        json!(START - 20),
    );
    auth.validate(&signed(&k, &rs256("k1"), &skewed))
        .await
        .expect("leeway");
}

#[tokio::test]
async fn a_key_published_later_is_accepted_after_the_refetch_interval() {
    let (_, domain, clock, auth) = fetched_once().await;
    let k2 = key();
    domain.publish("k2", &k2);
    clock.advance(Duration::from_secs(61));
    let now = START + 61;
    let rotated = signed(&k2, &rs256("k2"), &claims(&domain, now));
    let accepted = accepted_soon(&auth, &rotated).await;
    assert!(accepted, "rotated key trusted after a refetch");
    assert_eq!(domain.jwks_requests(), 2);
}

/// A review asked whether a clock stepped back (NTP) lifts the refetch limit, an
/// attempt in the "future" never counting as recent. It does not: the fetch made
/// after the step records the new time, and the limit holds from there.
#[tokio::test]
async fn a_clock_stepped_back_does_not_lift_the_refetch_limit() {
    let (_, domain, clock, auth) = fetched_once().await;
    assert_eq!(domain.jwks_requests(), 1);
    clock.set(std::time::UNIX_EPOCH + Duration::from_secs(START - 3600));
    let stray = key();
    let unknown = signed(&stray, &rs256("k9"), &claims(&domain, START - 7200));
    for _ in 0..5 {
        assert!(auth.validate(&unknown).await.is_err());
    }
    assert!(domain.jwks_requests() <= 2, "{}", domain.jwks_requests());
}

/// Defect: a token signed with a key the domain had just rolled to was refused as
/// invalid (401: its client drops the token and logs the user in again) until the
/// refetch interval (60 s) since the last fetch had passed. A token that says it
/// was issued after the keys in hand were fetched now fetches them again after 5 s;
/// one that predates them is still refused at once, without a fetch.
#[tokio::test]
async fn a_key_the_domain_rolled_to_is_trusted_at_its_first_token() {
    let (_, domain, clock, auth) = fetched_once().await;
    let k2 = key();
    domain.publish("k2", &k2);
    clock.advance(Duration::from_secs(10));
    let rolled = signed(&k2, &rs256("k2"), &claims(&domain, START + 10));
    auth.validate(&rolled)
        .await
        .expect("fetched for a token newer than the keys");
    assert_eq!(domain.jwks_requests(), 2);

    // An unknown kid on a token older than the keys: invalid, no fetch.
    let stray = key();
    let old = signed(&stray, &rs256("k9"), &claims(&domain, START - 60));
    let err = auth.validate(&old).await.expect_err("unknown kid");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
    // Nor on one that says it was issued beyond the leeway ahead (forged).
    let forged = signed(&stray, &rs256("k9"), &claims(&domain, START + 3600));
    let err = auth.validate(&forged).await.expect_err("unknown kid");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
    // One that says it is newer, within 5 s of the last fetch: it cannot be told
    // yet (503, retry), and it does not fetch.
    clock.advance(Duration::from_secs(1));
    let newer = signed(&stray, &rs256("k9"), &claims(&domain, START + 11));
    let err = auth.validate(&newer).await.expect_err("not fetched yet");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert_eq!(domain.jwks_requests(), 2);
    // After 5 s it fetches once; the kid is still unknown and the token predates
    // that fetch: invalid.
    clock.advance(Duration::from_secs(5));
    let err = auth.validate(&newer).await.expect_err("unknown kid");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
    assert_eq!(domain.jwks_requests(), 3);
}

/// Defect: a token signed with a key the domain published during a JWKS outage was
/// refused as invalid (401, "signing key is unknown": a client drops its token and
/// logs in again) although the keys could not be fetched, and it stayed refused for
/// the whole refetch interval (60 s) after the domain came back.
#[tokio::test]
async fn a_key_rotated_during_an_outage_is_unavailable_then_accepted_soon_after() {
    let (k1, domain, clock, auth) = fetched_once().await;
    domain.set_mode(Mode::Down);
    let k2 = key();
    domain.publish("k2", &k2);
    clock.advance(Duration::from_secs(61));
    let now = START + 61;
    let rotated = signed(&k2, &rs256("k2"), &claims(&domain, now));
    let err = auth.validate(&rotated).await.expect_err("domain down");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert_eq!(
        domain.jwks_requests(),
        1,
        "the first fetch only: discovery is down"
    );
    // Within the retry delay after the failure: no new fetch, still unavailable;
    // also for a token older than the keys: the failed fetch is why.
    let err = auth.validate(&rotated).await.expect_err("still down");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let older = signed(&k2, &rs256("k2"), &claims(&domain, START - 60));
    let err = auth.validate(&older).await.expect_err("still down");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    // Known keys keep working through the outage.
    auth.validate(&signed(&k1, &rs256("k1"), &claims(&domain, now)))
        .await
        .expect("k1 still trusted");

    domain.set_mode(Mode::Up);
    clock.advance(Duration::from_secs(6));
    let accepted = accepted_soon(&auth, &rotated).await;
    assert!(
        accepted,
        "rotated key trusted within seconds of the domain's return"
    );
    assert_eq!(domain.jwks_requests(), 2);
}

#[test]
fn no_input_makes_validation_panic() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let k = key();
    let (auth, issuer) = runtime.block_on(async {
        let domain = Domain::start(&[("k1", &k)]).await;
        let auth = auth(&domain.url, &clock());
        let issuer = domain.issuer().to_owned();
        // Load the keys once, so inputs exercise verification, not fetching.
        auth.validate(&signed(&k, &rs256("k1"), &claims(&domain, START)))
            .await
            .unwrap();
        std::mem::forget(domain);
        (auth, issuer)
    });
    let parts = prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_-]{0,40}",
        any_value().prop_map(|v| b64(&v)),
        Just(b64(&rs256("k1"))),
        Just(b64(&json!({"alg": "RS256", "kid": "k1", "crit": []}))),
        (any::<i64>(), any::<f64>()).prop_map(move |(exp, nbf)| b64(&json!({
            "iss": issuer.clone(), "aud": AUDIENCE, "exp": exp, "nbf": nbf
        }))),
    ];
    let tokens = prop_oneof![
        any::<String>(),
        proptest::collection::vec(parts, 0..5).prop_map(|p| p.join(".")),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&tokens, |token: String| {
            let outcome = runtime.block_on(auth.validate(&token));
            prop_assert!(outcome.is_err());
            Ok(())
        })
        .unwrap();
}

/// Arbitrary JSON values (small).
fn any_value() -> proptest::strategy::BoxedStrategy<Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

#[test]
fn jwks_fetches_are_traced_without_tokens() {
    let (capture, _guard) = common::LogCapture::start();
    let k = key();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokens = runtime.block_on(async {
        let domain = Domain::start(&[("k1", &k)]).await;
        let auth = auth(&domain.url, &clock());
        let good = signed(&k, &rs256("k1"), &claims(&domain, START));
        auth.validate(&good).await.unwrap();
        let bad = signed(
            &k,
            &rs256("k1"),
            &with(claims(&domain, START), "aud", json!("x")),
        );
        auth.validate(&bad).await.unwrap_err();
        [good, bad]
    });
    for token in &tokens {
        capture.assert_free_of("bearer token", token);
    }
    let text = capture.text();
    assert!(
        text.lines()
            .any(|l| l.contains("jwks fetched") && l.contains("keys=1") && l.contains("domain=")),
        "{text}"
    );
}

#[tokio::test]
async fn the_maximum_key_age_is_configurable() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = BearerAuth::builder()
        .domain_url(&domain.url)
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .clock(Arc::clone(&clock) as Arc<dyn oci_token_exchange::Clock>)
        .max_key_age(Duration::from_secs(120))
        .build()
        .unwrap();
    let token = signed(&k, &rs256("k1"), &claims(&domain, START));
    auth.validate(&token).await.unwrap();
    domain.set_mode(Mode::Down);
    clock.advance(Duration::from_secs(121));
    let err = auth.validate(&token).await.expect_err("keys too old");
    assert_eq!(err.kind(), ErrorKind::Transport);
}

/// Review fix (issue 9): `AccessToken::expires_at` reads `exp` by the validator's
/// NumericDate rule, so a fractional `exp` the validator accepted is the token's
/// expiry (it read as `None` before).
#[tokio::test]
async fn an_accepted_fractional_exp_is_the_access_tokens_expiry() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    let float_exp = with(claims(&domain, START), "exp", json!(START as f64 + 3600.5));
    let accepted = auth
        .validate(&signed(&k, &rs256("k1"), &float_exp))
        .await
        .expect("a fractional exp is a NumericDate");
    assert_eq!(
        accepted.expires_at(),
        Some(
            std::time::UNIX_EPOCH + Duration::from_secs(START + 3600) + Duration::from_millis(500)
        )
    );
}

/// Review fix (issue 9): a clock that steps back before the keys were fetched ends
/// their trust instead of counting them as just fetched.
#[tokio::test]
async fn a_clock_step_back_ends_the_key_trust() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    auth.validate(&signed(&k, &rs256("k1"), &claims(&domain, START)))
        .await
        .unwrap();
    assert_eq!(domain.jwks_requests(), 1);
    domain.set_mode(Mode::Down);
    // The clock steps back an hour, to before the keys were fetched.
    let now = START - 3600;
    clock.set(std::time::UNIX_EPOCH + Duration::from_secs(now));
    let err = auth
        .validate(&signed(&k, &rs256("k1"), &claims(&domain, now)))
        .await
        .expect_err("keys fetched in the clock's future are not trusted");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
}

/// Review fix (issue 9): a JWKS fetch is spawned once the key lock is released. A
/// runtime that has shut down drops a spawned task at once, on the spawning thread,
/// and the dropped fetch takes the key lock to record its end: spawned under the
/// lock, that deadlocked the validation of a known kid whose keys were due for a
/// background refresh.
#[test]
fn a_fetch_spawned_on_a_closed_runtime_does_not_block_validation() {
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let k = key();
    let domain = background.block_on(Domain::start(&[("k1", &k)]));
    let clock = clock();
    let auth = auth(&domain.url, &clock);
    background
        .block_on(auth.validate(&signed(&k, &rs256("k1"), &claims(&domain, START))))
        .unwrap();
    // Keys two hours old: still trusted, and due for a refresh in the background.
    clock.advance(Duration::from_secs(2 * 3600));
    let known = signed(&k, &rs256("k1"), &claims(&domain, START + 2 * 3600));
    let closed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = closed.handle().clone();
    drop(closed);
    let (tx, rx) = std::sync::mpsc::channel();
    // On its own thread: a deadlock must fail the test, not hang it.
    std::thread::spawn(move || {
        let _entered = handle.enter();
        let mut call = std::pin::pin!(auth.validate(&known));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let outcome = match call.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(token)) => Ok(token.subject().map(str::to_owned)),
            std::task::Poll::Ready(Err(err)) => Err(err.to_string()),
            std::task::Poll::Pending => Err("pending".to_owned()),
        };
        let _ = tx.send(outcome);
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the validation ended (no deadlock on the key lock)");
    assert_eq!(outcome, Ok(Some("ann".to_owned())));
    background.shutdown_background();
}

fn auth_remembering(
    domain_url: &str,
    clock: &Arc<FixedClock>,
    ttl: Duration,
    max_key_age: Duration,
) -> BearerAuth {
    BearerAuth::builder()
        .domain_url(domain_url)
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .clock(Arc::clone(clock) as Arc<dyn oci_token_exchange::Clock>)
        .max_key_age(max_key_age)
        .validation_cache_ttl(ttl)
        .build()
        .unwrap()
}

fn stats(checked: u64, remembered: u64, refused: u64) -> oci_token_exchange::BearerAuthStats {
    let mut stats = oci_token_exchange::BearerAuthStats::default();
    stats.checked = checked;
    stats.remembered = remembered;
    stats.refused = refused;
    stats
}

/// Issue 12 (the warm path): a validated token is remembered, so the same token
/// again is accepted without a new signature check, for the TTL and no longer;
/// another token (one signature byte changed) is not answered from its entry.
#[tokio::test]
async fn a_validation_is_remembered_for_its_ttl() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let token = signed(&k, &rs256("k1"), &claims(&domain, START));
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let hour = Duration::from_secs(3600);
    for (ttl, remembered) in [(Duration::from_secs(60), 2), (Duration::ZERO, 0)] {
        let clock = clock();
        let auth = auth_remembering(&domain.url, &clock, ttl, hour);
        for _ in 0..3 {
            let access = auth.validate(&token).await.expect("valid");
            assert_eq!(access.subject(), Some("ann"));
        }
        assert!(auth.validate(&forged).await.is_err(), "a changed token");
        assert_eq!(
            auth.stats(),
            stats(3 - remembered, remembered, 1),
            "{ttl:?}"
        );
        clock.advance(Duration::from_secs(60));
        auth.validate(&token).await.expect("valid");
        assert_eq!(
            auth.stats(),
            stats(4 - remembered, remembered, 1),
            "{ttl:?}: checked again after the TTL"
        );
    }
}

/// Review fix: a remembered validation stands only while its key does. When a
/// fetch replaces the keys (here: one for an unknown kid, after the domain
/// withdrew `k1` and published `k2`, and then another key under the name `k1`), a
/// token checked with the old `k1` is checked again, and refused, at once: not
/// after the TTL.
#[tokio::test]
async fn a_remembered_validation_ends_when_its_key_is_withdrawn() {
    for reuse_kid in [false, true] {
        withdraw_a_remembered_key(reuse_kid).await;
    }
}

async fn withdraw_a_remembered_key(reuse_kid: bool) {
    let (k1, k2) = (key(), key());
    let domain = Domain::start(&[("k1", &k1)]).await;
    let clock = clock();
    let hour = Duration::from_secs(3600);
    let auth = auth_remembering(&domain.url, &clock, hour, 24 * hour);
    let old = signed(&k1, &rs256("k1"), &claims(&domain, START));
    auth.validate(&old).await.expect("valid");
    auth.validate(&old).await.expect("remembered");
    assert_eq!(auth.stats(), stats(1, 1, 0));

    domain.state.keys.lock().unwrap().clear();
    domain.publish("k2", &k2);
    if reuse_kid {
        domain.publish("k1", &key());
    }
    clock.advance(Duration::from_secs(61));
    let new = signed(&k2, &rs256("k2"), &claims(&domain, START + 61));
    auth.validate(&new).await.expect("k2, fetched for its kid");
    let err = auth.validate(&old).await.expect_err("k1 was withdrawn");
    assert_eq!(
        err.kind(),
        ErrorKind::SignatureRejected,
        "{reuse_kid}: {err}"
    );
    assert_eq!(auth.stats(), stats(2, 1, 1), "{reuse_kid}");
}

/// Review fix: keys past the maximum age are not trusted for a remembered
/// validation either (503 as without the cache, the domain being down).
#[tokio::test]
async fn a_remembered_validation_needs_trusted_keys() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let auth = auth_remembering(
        &domain.url,
        &clock,
        Duration::from_secs(60),
        Duration::from_secs(30),
    );
    let token = signed(&k, &rs256("k1"), &claims(&domain, START));
    auth.validate(&token).await.expect("valid");
    domain.set_mode(Mode::Down);
    clock.advance(Duration::from_secs(31));
    let err = auth.validate(&token).await.expect_err("keys too old");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert_eq!(auth.stats(), stats(1, 0, 1));
}

/// A remembered validation never outlives the token: from its `exp` on the token
/// is checked again each time (accepted within the leeway, then refused), whatever
/// the TTL.
#[tokio::test]
async fn a_remembered_validation_ends_at_the_tokens_expiry() {
    let k = key();
    let domain = Domain::start(&[("k1", &k)]).await;
    let clock = clock();
    let hour = Duration::from_secs(3600);
    let auth = auth_remembering(&domain.url, &clock, hour, hour);
    let short = with(claims(&domain, START), "exp", json!(START + 10));
    let token = signed(&k, &rs256("k1"), &short);
    auth.validate(&token).await.expect("valid");
    clock.advance(Duration::from_secs(9));
    auth.validate(&token).await.expect("remembered");
    assert_eq!(auth.stats(), stats(1, 1, 0));
    // Past exp, within the 30 s leeway: accepted by the checks, not remembered.
    clock.advance(Duration::from_secs(1));
    auth.validate(&token).await.expect("within the leeway");
    clock.advance(Duration::from_secs(29));
    auth.validate(&token).await.expect("within the leeway");
    assert_eq!(auth.stats(), stats(3, 1, 0));
    clock.advance(Duration::from_secs(1));
    let err = auth.validate(&token).await.expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::SignatureRejected, "{err}");
    assert_eq!(auth.stats(), stats(3, 1, 1));
}

#[test]
fn a_validation_cache_over_an_hour_is_refused_at_build() {
    let err = BearerAuth::builder()
        .domain_url("https://idcs-x.identity.oraclecloud.com")
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .validation_cache_ttl(Duration::from_secs(3601))
        .build()
        .expect_err("over an hour");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("at most 1 hour"), "{err}");
    BearerAuth::builder()
        .domain_url("https://idcs-x.identity.oraclecloud.com")
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .validation_cache_ttl(Duration::from_secs(3600))
        .build()
        .expect("an hour is accepted");
}
