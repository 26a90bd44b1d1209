//! The emulator's login side, driven as the OAuth proxy drives a real identity domain:
//! a plain HTTP client that does not follow redirects.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use oci_token_exchange::{
    Emulator, EmulatorBuilder, Fault, FixedClock, SecretString, SignerCache, TokenExchange,
    TokenExchangeSigner,
};
use serde_json::Value;
use sha2::Digest as _;
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";
const VERIFIER: &str = "a-verifier-of-more-than-forty-three-characters-0123456789";
const START: u64 = 1_800_000_000;

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start(builder: EmulatorBuilder) -> Emulator {
    builder
        .redirect_uri(REDIRECT)
        .start()
        .await
        .expect("emulator")
}

/// `GET /oauth2/v1/authorize` with `params`.
async fn authorize(emulator: &Emulator, params: &[(&str, &str)]) -> reqwest::Response {
    let mut url = emulator.domain_url().join("oauth2/v1/authorize").unwrap();
    url.query_pairs_mut().extend_pairs(params);
    http().get(url).send().await.expect("sent")
}

/// The standard authorization request's parameters, with PKCE S256.
fn standard(emulator: &Emulator, challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", emulator.client_id().into()),
        ("redirect_uri", REDIRECT.into()),
        ("scope", "openid profile".into()),
        ("state", "st-123".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn borrowed<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The query of a 302's `Location`, checking it goes to `REDIRECT`.
fn redirected(response: &reqwest::Response) -> HashMap<String, String> {
    assert_eq!(response.status(), 302);
    let location = Url::parse(
        response.headers()["location"]
            .to_str()
            .expect("ascii location"),
    )
    .unwrap();
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    location.query_pairs().into_owned().collect()
}

/// Logs in with PKCE and returns the code.
async fn code(emulator: &Emulator) -> String {
    let params = standard(emulator, &challenge(VERIFIER));
    let query = redirected(&authorize(emulator, &borrowed(&params)).await);
    assert_eq!(query["state"], "st-123");
    query["code"].clone()
}

/// POSTs a form to the token endpoint with Basic `secret`; returns status, headers
/// and JSON (or `Null`).
async fn token(
    emulator: &Emulator,
    secret: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = http()
        .post(emulator.domain_url().join("oauth2/v1/token").unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(secret) = secret {
        let basic = STANDARD.encode(format!("{}:{secret}", emulator.client_id()));
        request = request.header("authorization", format!("Basic {basic}"));
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let json = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, headers, json)
}

fn secret(emulator: &Emulator) -> String {
    emulator.client_secret().expose_secret().to_owned()
}

async fn redeem(emulator: &Emulator, code: &str, verifier: &str) -> (u16, Value) {
    let (status, _, json) = token(
        emulator,
        Some(&secret(emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await;
    (status, json)
}

async fn refresh(emulator: &Emulator, refresh_token: &str) -> (u16, Value) {
    let (status, _, json) = token(
        emulator,
        Some(&secret(emulator)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    (status, json)
}

/// The (unverified) claims of a JWT.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a jwt");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn exchange(emulator: &Emulator) -> TokenExchange {
    TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .expect("exchange")
}

/// A signed GET at the emulated control plane with `signer`; returns the principal.
async fn signed_call(emulator: &Emulator, signer: &TokenExchangeSigner) -> Value {
    let mut request = reqwest::Request::new(
        reqwest::Method::GET,
        emulator.api_url().join("/20160918/compartments/x").unwrap(),
    );
    signer.sign_reqwest(&mut request).await.expect("signs");
    let response = http().execute(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    json["principal"].clone()
}

#[tokio::test]
async fn login_code_and_token_give_an_access_token_that_exchanges_for_a_working_upst() {
    let emulator = start(Emulator::builder()).await;

    let discovery: Value = http()
        .get(
            emulator
                .domain_url()
                .join(".well-known/openid-configuration")
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let authorization_endpoint = format!("{}oauth2/v1/authorize", emulator.domain_url());
    assert_eq!(
        discovery["authorization_endpoint"],
        authorization_endpoint.as_str()
    );
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        discovery["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic"])
    );
    let grants = discovery["grant_types_supported"].as_array().unwrap();
    for grant in ["authorization_code", "refresh_token"] {
        assert!(grants.iter().any(|g| g == grant), "{grants:?}");
    }
    assert!(discovery["scopes_supported"].as_array().is_some());

    let code = code(&emulator).await;
    let sent = emulator.last_authorization().expect("recorded");
    assert!(sent.contains(&("scope".into(), "openid profile".into())));

    let (status, headers, body) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "demo-user");
    assert_eq!(id["aud"], emulator.client_id());
    let access_token = body["access_token"].as_str().unwrap();
    let access = claims(access_token);
    assert_eq!(access["sub"], "demo-user");
    assert_eq!(access["iss"], emulator.issuer());
    assert_eq!(access["scope"], "openid profile");
    assert_eq!(access["client_id"], emulator.client_id());
    assert!(access["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        3600
    );

    // What the emulator recorded carries no secret.
    let recorded = emulator.last_exchange().expect("recorded");
    assert!(recorded.basic_auth);
    let fields: HashMap<_, _> = recorded.form.into_iter().collect();
    assert_eq!(fields["grant_type"], "authorization_code");
    assert_eq!(fields["code"], "[redacted]");
    assert_eq!(fields["code_verifier"], "[redacted]");

    // The access token is a subject token for the crate's normal signer ...
    let signer = TokenExchangeSigner::builder(exchange(&emulator))
        .subject_token(SecretString::new(access_token))
        .build()
        .unwrap();
    let principal = signed_call(&emulator, &signer).await;
    assert_eq!(principal["userId"], Emulator::user_ocid("demo-user"));
    // ... and for the per-user cache.
    let cache = SignerCache::builder(exchange(&emulator)).build();
    let cached = cache
        .signer_for(&SecretString::new(access_token))
        .await
        .unwrap();
    let principal = signed_call(&emulator, &cached).await;
    assert_eq!(principal["userId"], Emulator::user_ocid("demo-user"));

    let counters = emulator.counters();
    assert_eq!(counters.authorize_requests, 1);
    assert_eq!(counters.logins, 1);
    assert_eq!(counters.code_grants, 1);
    assert_eq!(counters.refresh_grants, 0);
    assert_eq!(counters.exchanges, 2);
    assert_eq!(counters.exchange_requests, 3);
    assert_eq!(emulator.exchanges_for("demo-user"), 2);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_used_one_is_refused() {
    let emulator = start(Emulator::builder()).await;
    let (status, first) = redeem(&emulator, &code(&emulator).await, VERIFIER).await;
    assert_eq!(status, 200);
    let old = first["refresh_token"].as_str().unwrap();

    let (status, second) = refresh(&emulator, old).await;
    assert_eq!(status, 200, "{second}");
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    let (a, b) = (
        claims(first["access_token"].as_str().unwrap()),
        claims(second["access_token"].as_str().unwrap()),
    );
    assert_eq!(b["sub"], "demo-user");
    assert_eq!(b["scope"], a["scope"]);
    assert_ne!(b["jti"], a["jti"]);

    // The old one is dead; the new one lives, and dies in turn.
    let (status, refused) = refresh(&emulator, old).await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"], "invalid_grant");
    assert!(!refused.to_string().contains(old));
    let (status, third) = refresh(&emulator, new).await;
    assert_eq!(status, 200);
    assert_eq!(refresh(&emulator, new).await.0, 400);

    // A wider scope is refused, a narrower one granted.
    let newest = third["refresh_token"].as_str().unwrap();
    let (status, _, wider) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", newest),
            ("scope", "openid email"),
        ],
    )
    .await;
    assert_eq!(
        (status, wider["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    let counters = emulator.counters();
    assert_eq!(counters.code_grants, 1);
    assert_eq!(counters.refresh_grants, 2);
}

#[tokio::test]
async fn without_the_refresh_grant_no_refresh_token_is_issued() {
    let emulator = start(Emulator::builder().refresh_tokens(false)).await;
    let (status, body) = redeem(&emulator, &code(&emulator).await, VERIFIER).await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none(), "{body}");
    let (status, refused) = refresh(&emulator, "anything").await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"], "unauthorized_client");
}

#[tokio::test]
async fn a_code_is_redeemed_once_even_by_concurrent_requests() {
    let emulator = Arc::new(start(Emulator::builder()).await);
    let first = code(&emulator).await;
    assert_eq!(redeem(&emulator, &first, VERIFIER).await.0, 200);
    let (status, reused) = redeem(&emulator, &first, VERIFIER).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(redeem(&emulator, "no-such-code", VERIFIER).await.0, 400);

    let raced = Arc::new(code(&emulator).await);
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (emulator, raced) = (Arc::clone(&emulator), Arc::clone(&raced));
            tokio::spawn(async move { redeem(&emulator, &raced, VERIFIER).await.0 })
        })
        .collect();
    let mut ok = 0;
    for racer in racers {
        if racer.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(emulator.counters().code_grants, 2);
}

#[tokio::test]
async fn a_wrong_or_missing_verifier_is_invalid_grant_and_burns_the_code() {
    let emulator = start(Emulator::builder()).await;

    let wrong = "another-verifier-of-more-than-forty-three-characters-0123";
    let code_a = code(&emulator).await;
    let (status, body) = redeem(&emulator, &code_a, wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(redeem(&emulator, &code_a, VERIFIER).await.0, 400);

    let code_b = code(&emulator).await;
    let (status, _, body) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code_b),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier")
    );

    // The redirect URI must be the authorization request's.
    let code_c = code(&emulator).await;
    let (status, _, body) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code_c),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(emulator.counters().code_grants, 0);

    // Without a challenge, no verifier is needed (PKCE is optional at OCI).
    let query = redirected(
        &authorize(
            &emulator,
            &[
                ("response_type", "code"),
                ("client_id", emulator.client_id()),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
    );
    assert!(!query.contains_key("state"));
    let (status, _, _) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &query["code"]),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn only_s256_is_accepted_and_errors_are_redirected_with_the_state() {
    let emulator = start(Emulator::builder()).await;
    let good = challenge(VERIFIER);
    for (method, challenge) in [
        (Some("plain"), good.as_str()),
        (None, good.as_str()),
        (Some("S256"), "short"),
    ] {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", emulator.client_id()),
            ("redirect_uri", REDIRECT),
            ("state", "st-9"),
            ("code_challenge", challenge),
        ];
        if let Some(method) = method {
            params.push(("code_challenge_method", method));
        }
        let query = redirected(&authorize(&emulator, &params).await);
        assert_eq!(query["error"], "invalid_request", "{method:?}");
        assert_eq!(query["state"], "st-9");
        assert!(!query.contains_key("code"));
    }
    let query = redirected(
        &authorize(
            &emulator,
            &[
                ("response_type", "token"),
                ("client_id", emulator.client_id()),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
    );
    assert_eq!(query["error"], "unsupported_response_type");
    assert_eq!(emulator.counters().logins, 0);
    assert_eq!(emulator.counters().authorize_requests, 4);
}

#[tokio::test]
async fn scope_in_the_code_grant_is_refused_as_oci_does() {
    let emulator = start(Emulator::builder()).await;
    let code = code(&emulator).await;
    let (status, _, body) = token(
        &emulator,
        Some(&secret(&emulator)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "scope is not allowed with the authorization_code grant"
    );
    // The refusal redeemed nothing: the same code without scope works.
    assert_eq!(redeem(&emulator, &code, VERIFIER).await.0, 200);
}

#[tokio::test]
async fn a_bad_client_or_redirect_uri_gets_a_page_never_a_redirect() {
    let emulator = start(Emulator::builder()).await;
    let good = challenge(VERIFIER);
    let cases: [(&str, &str); 4] = [
        (
            emulator.client_id(),
            "http://127.0.0.1:9/auth/callback/evil",
        ),
        (emulator.client_id(), "https://attacker.example/cb"),
        (emulator.client_id(), ""),
        ("someone-else", REDIRECT),
    ];
    for (client_id, redirect_uri) in cases {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("state", "st-1"),
            ("code_challenge", good.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if !redirect_uri.is_empty() {
            params.push(("redirect_uri", redirect_uri));
        }
        let response = authorize(&emulator, &params).await;
        assert_eq!(response.status(), 400, "{client_id} {redirect_uri}");
        assert!(response.headers().get("location").is_none());
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/")
        );
        let page = response.text().await.unwrap();
        assert!(!page.is_empty());
        assert!(
            !page.contains("attacker") && !page.contains("evil"),
            "{page}"
        );
    }
    // An emulator with no registered redirect URI logs nobody in.
    let bare = Emulator::start().await.unwrap();
    let params = standard(&bare, &good);
    assert_eq!(authorize(&bare, &borrowed(&params)).await.status(), 400);
    assert_eq!(emulator.counters().logins + bare.counters().logins, 0);
}

#[tokio::test]
async fn a_wrong_client_secret_is_401_and_redeems_nothing() {
    let emulator = start(Emulator::builder()).await;
    let code = code(&emulator).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    for secret in [Some("wrong-secret"), None] {
        let (status, headers, body) = token(&emulator, secret, &form).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "invalid_client");
        assert!(headers.contains_key("www-authenticate"));
        assert!(!body.to_string().contains(&code));
    }
    let (status, body) = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(status, 200);
    let (status, _, _) = token(
        &emulator,
        Some("wrong-secret"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn denied_logins_redirect_access_denied_then_logins_resume() {
    let emulator = start(Emulator::builder()).await;
    emulator.deny_next_logins(2);
    let params = standard(&emulator, &challenge(VERIFIER));
    for _ in 0..2 {
        let query = redirected(&authorize(&emulator, &borrowed(&params)).await);
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "st-123");
        assert!(!query.contains_key("code"));
    }
    let query = redirected(&authorize(&emulator, &borrowed(&params)).await);
    assert!(query.contains_key("code"));
    let counters = emulator.counters();
    assert_eq!((counters.authorize_requests, counters.logins), (3, 1));
}

#[tokio::test]
async fn faults_apply_to_the_login_grants_and_redeem_nothing() {
    let emulator = start(Emulator::builder()).await;
    let code = code(&emulator).await;

    emulator.inject_fault(Fault::Status(503), 1);
    let (status, body) = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("server_error"))
    );

    emulator.inject_fault(Fault::DropConnection, 1);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("grant_type", "authorization_code"), ("code", &code)])
        .finish();
    let dropped = http()
        .post(emulator.domain_url().join("oauth2/v1/token").unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    assert!(dropped.is_err());

    emulator.inject_fault(Fault::MismatchedKey, 1);
    let (status, tokens) = redeem(&emulator, &code, VERIFIER).await;
    assert_eq!(status, 200, "MismatchedKey only changes an exchange");

    emulator.inject_fault(Fault::GarbageBody, 1);
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = refresh(&emulator, refresh_token).await;
    assert_eq!((status, body), (200, Value::Null));
    assert_eq!(refresh(&emulator, refresh_token).await.0, 200);

    let counters = emulator.counters();
    assert_eq!(counters.exchange_requests, 5);
    assert_eq!((counters.code_grants, counters.refresh_grants), (1, 1));
}

#[tokio::test]
async fn lifetimes_follow_the_emulator_clock() {
    let clock = Arc::new(FixedClock::at_unix(START));
    let emulator = start(
        Emulator::builder()
            .clock(clock.clone())
            .access_token_ttl(Duration::from_secs(60)),
    )
    .await;

    let (status, body) = redeem(&emulator, &code(&emulator).await, VERIFIER).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 60);
    let access_token = body["access_token"].as_str().unwrap();
    let access = claims(access_token);
    assert_eq!(access["iat"], START);
    assert_eq!(access["exp"], START + 60);

    // Exchangeable while live; refused once expired.
    let subject = SecretString::new(access_token);
    let key = oci_token_exchange::SigningKey::from_pem(include_str!(
        "../fixtures/keys/rsa2048-pkcs8.pem"
    ))
    .unwrap();
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    exchange.exchange(&subject, key.public_key()).await.unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(exchange.exchange(&subject, key.public_key()).await.is_err());

    // Codes live five minutes.
    let late = code(&emulator).await;
    clock.advance(Duration::from_secs(301));
    assert_eq!(redeem(&emulator, &late, VERIFIER).await.0, 400);

    // Refresh tokens live seven days.
    let refresh_token = body["refresh_token"].as_str().unwrap();
    let (status, renewed) = refresh(&emulator, refresh_token).await;
    assert_eq!(status, 200);
    clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let (status, refused) = refresh(&emulator, renewed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn one_emulator_logs_in_several_users_in_turn() {
    let emulator = start(Emulator::builder().login_subject("alice@example.com")).await;
    let code_alice = code(&emulator).await;
    emulator.set_login_subject("bob@example.com");
    let code_bob = code(&emulator).await;
    // A code keeps the user it was issued for.
    let (_, bob) = redeem(&emulator, &code_bob, VERIFIER).await;
    let (_, alice) = redeem(&emulator, &code_alice, VERIFIER).await;
    assert_eq!(
        claims(alice["access_token"].as_str().unwrap())["sub"],
        "alice@example.com"
    );
    assert_eq!(
        claims(bob["access_token"].as_str().unwrap())["sub"],
        "bob@example.com"
    );
    // And so does a refresh token.
    let (_, again) = refresh(&emulator, alice["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        claims(again["access_token"].as_str().unwrap())["sub"],
        "alice@example.com"
    );
    assert_eq!(emulator.counters().logins, 2);
}
