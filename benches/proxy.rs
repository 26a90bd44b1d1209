//! The bearer check of the OAuth proxy's own tokens, warm.
//!
//! - `proxy/validate_warm`: [`BearerAuth::validate`] in proxy mode of a token the
//!   proxy issued: HS256 verification, the `jti` record and the upstream token set
//!   in the memory store, the parsed upstream token from the cache.
//!
//! The login runs once, through the proxy's endpoints and the emulator on loopback.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{Criterion, criterion_group, criterion_main};
use oci_token_exchange::{Emulator, OAuthProxy};
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "a-benchmark-verifier-with-more-than-forty-three-chars";

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

/// Registers a client, logs the emulator's demo user in, redeems the code.
async fn login() -> (Emulator, OAuthProxy, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let emu = Emulator::builder()
        .redirect_uri(format!("{base}/auth/callback"))
        .start()
        .await
        .unwrap();
    let proxy = OAuthProxy::builder()
        .base_url(&base)
        .domain_url(emu.domain_url().as_str())
        .client_credentials(emu.client_id(), emu.client_secret().clone())
        .signing_key([9u8; 32])
        .build()
        .unwrap();
    let app = proxy.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let registered: Value = browser
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "client_name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER));
    let mut authorize = Url::parse(&format!("{base}/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "s")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let consent = location(&browser.get(authorize).send().await.unwrap());
    let html = browser
        .get(consent)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let upstream = location(
        &browser
            .post(format!("{base}/consent"))
            .form(&[
                ("txn", hidden(&html, "txn")),
                ("csrf", hidden(&html, "csrf")),
                ("action", "approve".to_owned()),
            ])
            .send()
            .await
            .unwrap(),
    );
    let callback = location(&browser.get(upstream).send().await.unwrap());
    let done = location(&browser.get(callback).send().await.unwrap());
    let code = Url::parse(&done)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = browser
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    (emu, proxy, access)
}

fn benches(c: &mut Criterion) {
    // block_on of a current-thread runtime adds well under a microsecond.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_emu, proxy, access) = runtime.block_on(login());
    let auth = proxy.bearer_auth();
    runtime.block_on(auth.validate(&access)).unwrap();
    c.bench_function("proxy/validate_warm", |b| {
        b.iter(|| runtime.block_on(auth.validate(&access)).unwrap());
    });
}

criterion_group!(group, benches);
criterion_main!(group);
