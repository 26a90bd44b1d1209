//! The OAuth proxy end to end on loopback: a reqwest client plays the browser (a
//! cookie jar, no redirects followed) and the MCP client, the emulator plays the
//! identity domain.
#![cfg(all(feature = "oauth-proxy", feature = "emulator"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::browser::{browser, location, query};
use common::store::{Act, Around, Call, Failures, Hooked};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use oci_token_exchange::{
    AccessToken, Emulator, Fault, FaultRule, FixedClock, MemoryStore, OAuthProxy, Store,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const SIGNING_KEY: [u8; 32] = [7; 32];

struct Options {
    consent: bool,
    refresh: bool,
    upstream_ttl: Duration,
    store_entries: usize,
    /// Every refresh-lock attempt takes a second (a slow store).
    slow_locks: bool,
    /// `OAuthProxyBuilder::validation_cache_ttl` (`None`: the default).
    validation_ttl: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            consent: true,
            refresh: true,
            upstream_ttl: Duration::from_secs(3600),
            store_entries: MemoryStore::DEFAULT_MAX_ENTRIES,
            slow_locks: false,
            validation_ttl: None,
        }
    }
}

struct Env {
    emu: Emulator,
    base: String,
    store: MemoryStore,
    clock: Arc<FixedClock>,
    /// The store as the proxy sees it, counting its reads.
    proxy_store: Arc<Counting>,
    /// Store failures to arm (the proxy's store fails the calls named).
    failures: Failures,
    /// An act run once, right after the proxy's next put to a collection.
    after_put: AfterPut,
    /// The MCP client's HTTP (no cookies).
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn echo(request: axum::http::Request<Body>) -> String {
    let token = request.extensions().get::<AccessToken>().unwrap();
    format!(
        "{} {}",
        token.subject().unwrap_or("-"),
        token.jti().unwrap_or("-")
    )
}

async fn env_with(options: Options) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let clock = Arc::new(FixedClock::at_unix(1_900_000_000));
    let emu = Emulator::builder()
        .clock(clock.clone())
        .redirect_uri(format!("{base}/auth/callback"))
        .access_token_ttl(options.upstream_ttl)
        .refresh_tokens(options.refresh)
        .start()
        .await
        .unwrap();
    let store = MemoryStore::with_clock(clock.clone())
        .with_limits(options.store_entries, MemoryStore::DEFAULT_MAX_BYTES);
    let failures = Failures::default();
    let inner: Arc<dyn Store> = if options.slow_locks {
        Arc::new(Hooked::new(Arc::new(store.clone()), SlowLocks))
    } else {
        Arc::new(store.clone())
    };
    let after_put = AfterPut::default();
    let hooks = Hooks {
        failures: failures.clone(),
        after_put: after_put.clone(),
    };
    let proxy_store = Arc::new(Counting::counting(Arc::new(Hooked::new(inner, hooks))));
    let server = serve_replica(
        listener,
        &base,
        &emu,
        &proxy_store,
        &clock,
        options.consent,
        options.validation_ttl,
    );
    Env {
        emu,
        base,
        store,
        clock,
        proxy_store,
        failures,
        after_put,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _server: server,
    }
}

/// A proxy replica (the issuer `base`, on `listener`) with the echoing MCP
/// endpoint behind its bearer layer.
fn serve_replica(
    listener: tokio::net::TcpListener,
    base: &str,
    emu: &Emulator,
    store: &Arc<Counting>,
    clock: &Arc<FixedClock>,
    consent: bool,
    validation_ttl: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    let mut builder = OAuthProxy::builder()
        .base_url(base)
        .domain_url(emu.domain_url().as_str())
        .client_credentials(emu.client_id(), emu.client_secret().clone())
        .signing_key(SIGNING_KEY)
        .consent(consent)
        .store(store.clone())
        .clock(clock.clone());
    if let Some(ttl) = validation_ttl {
        builder = builder.validation_cache_ttl(ttl);
    }
    let proxy = builder.build().unwrap();
    let mcp = Router::new()
        .route("/mcp", axum::routing::post(echo))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            axum::routing::get(|| async { "unreachable" }),
        )
        .layer(proxy.bearer_auth().layer());
    let app = proxy.router().merge(mcp);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn env() -> Env {
    env_with(Options::default()).await
}

/// A response's `Set-Cookie`s in order: (name, value), `None` for one that clears.
fn set_cookies(response: &reqwest::Response) -> Vec<(String, Option<String>)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let v = v.to_str().unwrap();
            let (name, value) = v.split(';').next().unwrap().split_once('=').unwrap();
            let cleared = v.contains("Max-Age=0");
            (name.to_owned(), (!cleared).then(|| value.to_owned()))
        })
        .collect()
}

/// `value="..."` of the hidden input `name` in the consent page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

fn verifier() -> String {
    "the-clients-own-verifier-with-enough-characters-1234".to_owned()
}

fn challenge(verifier: &str) -> String {
    sha256_b64(verifier)
}

/// Base64url SHA-256: a PKCE challenge, and the proxy's store key of a code.
fn sha256_b64(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(text))
}

impl Env {
    async fn register(&self) -> String {
        self.register_for(&["authorization_code", "refresh_token"])
            .await
    }

    /// Registers a client for `grant_types`.
    async fn register_for(&self, grant_types: &[&str]) -> String {
        let response = self
            .http
            .post(format!("{}/register", self.base))
            .json(&json!({
                "client_name": "Test <Client>",
                "redirect_uris": [REDIRECT],
                "grant_types": grant_types,
                "token_endpoint_auth_method": "none",
                "response_types": ["code"],
                "application_type": "native",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_endpoint_auth_method"], "none");
        assert_eq!(body["redirect_uris"], json!([REDIRECT]));
        body["client_id"].as_str().unwrap().to_owned()
    }

    fn authorize_url(&self, client_id: &str, extra: &[(&str, &str)]) -> String {
        let mut url = Url::parse(&format!("{}/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "client-state")
            .append_pair("code_challenge", &challenge(&verifier()))
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{}/mcp", self.base));
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        url.to_string()
    }

    async fn get(&self, browser: &reqwest::Client, url: &str) -> reqwest::Response {
        browser.get(url).send().await.unwrap()
    }

    /// /authorize -> consent page: (txn, csrf, page).
    async fn open_consent(
        &self,
        browser: &reqwest::Client,
        client_id: &str,
    ) -> (String, String, String) {
        let (txn, csrf, html, _) = self.open_login(browser, client_id).await;
        (txn, csrf, html)
    }

    /// /authorize -> consent page: (txn, csrf, page, the login's cookie name).
    async fn open_login(
        &self,
        browser: &reqwest::Client,
        client_id: &str,
    ) -> (String, String, String, String) {
        self.open_login_at(browser, &self.authorize_url(client_id, &[]))
            .await
    }

    /// /authorize at `url` -> consent page: (txn, csrf, page, the login's cookie name).
    async fn open_login_at(
        &self,
        browser: &reqwest::Client,
        url: &str,
    ) -> (String, String, String, String) {
        let r = self.get(browser, url).await;
        let (name, _) = set_cookies(&r)
            .into_iter()
            .rev()
            .find_map(|(name, value)| value.map(|v| (name, v)))
            .expect("a consent cookie");
        let consent = location(&r);
        assert!(
            consent.starts_with(&format!("{}/consent?txn=", self.base)),
            "{consent}"
        );
        let page = self.get(browser, &consent).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        (hidden(&html, "txn"), hidden(&html, "csrf"), html, name)
    }

    async fn post_consent(
        &self,
        browser: &reqwest::Client,
        txn: &str,
        csrf: &str,
        action: &str,
    ) -> reqwest::Response {
        browser
            .post(format!("{}/consent", self.base))
            .form(&[("txn", txn), ("csrf", csrf), ("action", action)])
            .send()
            .await
            .unwrap()
    }

    /// The whole browser leg; returns the client redirect's query.
    async fn login(&self, client_id: &str) -> std::collections::HashMap<String, String> {
        self.login_at(&self.authorize_url(client_id, &[])).await
    }

    /// The whole browser leg from /authorize at `url`; returns the client redirect's
    /// query.
    async fn login_at(&self, url: &str) -> std::collections::HashMap<String, String> {
        let browser = browser();
        let (txn, csrf, _, _) = self.open_login_at(&browser, url).await;
        let upstream = location(&self.post_consent(&browser, &txn, &csrf, "approve").await);
        assert!(
            upstream.starts_with(self.emu.domain_url().as_str()),
            "{upstream}"
        );
        let callback = location(&self.get(&browser, &upstream).await);
        assert!(callback.starts_with(&format!("{}/auth/callback", self.base)));
        let done = location(&self.get(&browser, &callback).await);
        assert!(done.starts_with(REDIRECT), "{done}");
        query(&done)
    }

    async fn token(
        &self,
        form: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    async fn redeem(&self, client_id: &str, code: &str) -> Value {
        let v = verifier();
        let (status, headers, body) = self
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &v),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        body
    }

    async fn mcp(&self, token: &str) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}/mcp", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn revoke(&self, client_id: &str, token: &str) -> StatusCode {
        self.http
            .post(format!("{}/revoke", self.base))
            .form(&[("client_id", client_id), ("token", token)])
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Everything a login leaves behind, clients aside.
    fn state_count(&self) -> usize {
        ["txn", "code", "set", "jti", "refresh"]
            .iter()
            .map(|c| self.store.count(c))
            .sum()
    }
}

#[tokio::test]
async fn full_flow_register_login_call_refresh_revoke() {
    let env = env().await;
    // Discovery as an MCP client does it.
    let r = env
        .http
        .post(format!("{}/mcp", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        www.contains("/.well-known/oauth-protected-resource/mcp"),
        "{www}"
    );
    let prm: Value = env
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            env.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["authorization_servers"], json!([env.base]));
    assert_eq!(prm["resource"], format!("{}/mcp", env.base));
    let meta: Value = env
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            env.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], env.base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
    ] {
        assert!(
            meta[endpoint].as_str().unwrap().starts_with(&env.base),
            "{endpoint}"
        );
    }

    let client_id = env.register().await;
    let redirect = env.login(&client_id).await;
    assert_eq!(redirect["state"], "client-state");
    assert_eq!(redirect["iss"], env.base);
    assert!(!redirect.contains_key("error"));
    // The upstream leg: the proxy's own PKCE and no scope in the code grant.
    let upstream = env.emu.last_authorization().unwrap();
    assert!(
        upstream
            .iter()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );
    assert!(
        upstream
            .iter()
            .any(|(k, v)| k == "redirect_uri" && *v == format!("{}/auth/callback", env.base))
    );
    assert!(
        !upstream
            .iter()
            .any(|(k, v)| k == "code_challenge" && *v == challenge(&verifier()))
    );

    let tokens = env.redeem(&client_id, &redirect["code"]).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid");
    assert_eq!(tokens["expires_in"], 3600);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = env.mcp(&access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.starts_with("demo-user "),
        "tools see the upstream token: {body}"
    );

    // Refresh rotates; the used refresh token is refused.
    let form = |rt: &str| {
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("client_id".to_owned(), client_id.clone()),
            ("refresh_token".to_owned(), rt.to_owned()),
        ]
    };
    let as_refs = |f: &Vec<(String, String)>| -> Vec<(String, String)> { f.clone() };
    let f = as_refs(&form(&refresh));
    let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (status, _, renewed) = env.token(&f).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let access2 = renewed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(renewed["refresh_token"], tokens["refresh_token"]);
    assert_eq!(env.mcp(&access2).await.0, StatusCode::OK);
    // A used refresh token is refused (and ends the login: see
    // a_reused_refresh_token_revokes_the_login).
    let (status, _, reused) = env.token(&f).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"], "invalid_grant");
    assert_eq!(env.mcp(&access2).await.0, StatusCode::UNAUTHORIZED);

    // Only the proxy's own tokens are accepted, not the domain's.
    let domain_token = env.emu.mint_user_token("demo-user");
    assert_eq!(env.mcp(&domain_token).await.0, StatusCode::UNAUTHORIZED);

    // Revocation ends the login: every token of it gets 401.
    assert_eq!(env.revoke(&client_id, &access2).await, StatusCode::OK);
    let (status, _) = env.mcp(&access2).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(env.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.revoke(&client_id, "unknown-token").await,
        StatusCode::OK
    );
}

/// Defect: a client registered without the `refresh_token` grant (RFC 7591
/// `grant_types: ["authorization_code"]`) was given refresh tokens all the same,
/// and could use them.
#[tokio::test]
async fn a_client_registered_without_refresh_gets_no_refresh_token() {
    let env = env().await;
    let client_id = env.register_for(&["authorization_code"]).await;
    let code = env.login(&client_id).await["code"].clone();
    let body = env.redeem(&client_id, &code).await;
    assert!(body["access_token"].is_string(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let (status, answer) = env.mcp(body["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Nor may it refresh with another client's refresh token (or any other).
    let refreshable = env.register().await;
    let code = env.login(&refreshable).await["code"].clone();
    let tokens = env.redeem(&refreshable, &code).await;
    let refresh = tokens["refresh_token"].as_str().expect("registered for it");
    let (status, _, body) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unauthorized_client", "{body}");
    // The refreshable client's token was not spent by the attempt.
    let (status, _, body) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &refreshable),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Defect: `/authorize` without `state` was refused (`invalid_request`), although
/// OAuth 2.1 leaves `state` to the client when it uses PKCE, which the proxy
/// requires: a compliant client that sends none could not log in. The redirect
/// back then carries no `state` either.
#[tokio::test]
async fn a_client_that_sends_no_state_logs_in_with_pkce() {
    let env = env().await;
    let client_id = env.register().await;
    let url = env
        .authorize_url(&client_id, &[])
        .replace("&state=client-state", "");
    assert!(!url.contains("state="), "{url}");
    // The consent page and the redirect back to the client, as any login's.
    let q = env.login_at(&url).await;
    assert!(!q.contains_key("state"), "{q:?}");
    let tokens = env.redeem(&client_id, &q["code"]).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
}

#[tokio::test]
async fn registration_refuses_foreign_redirect_uris_and_bad_metadata() {
    let env = env().await;
    for (body, error) in [
        (
            json!({"redirect_uris": ["https://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://127.0.0.1:1/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (json!({"client_name": "x"}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ] {
        let r = env
            .http
            .post(format!("{}/register", env.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], error, "{body}");
    }
    assert!(env.store.is_empty(), "refused registrations store nothing");
}

/// A native client registers its loopback redirect URI once and listens on
/// whatever port is free at each login (RFC 8252 section 7.3): the login completes
/// on the new port, and the code is redeemed with that URI.
#[tokio::test]
async fn a_loopback_client_may_come_back_on_another_port() {
    let env = env().await;
    let client_id = env.register().await;
    let moved = REDIRECT.replace(":9/", ":51000/");
    let b = browser();
    let url = env
        .authorize_url(&client_id, &[])
        .replace("127.0.0.1%3A9", "127.0.0.1%3A51000");
    let consent = location(&env.get(&b, &url).await);
    let page = env.get(&b, &consent).await.text().await.unwrap();
    assert!(page.contains(&moved), "the page names the port used");
    let (txn, csrf) = (hidden(&page, "txn"), hidden(&page, "csrf"));
    let upstream = location(&env.post_consent(&b, &txn, &csrf, "approve").await);
    let callback = location(&env.get(&b, &upstream).await);
    let done = location(&env.get(&b, &callback).await);
    assert!(done.starts_with(&moved), "{done}");
    let code = query(&done)["code"].clone();
    let verifier = verifier();
    let redeem = |redirect_uri: String| {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", client_id.clone()),
            ("code", code.clone()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.clone()),
        ];
        env.http
            .post(format!("{}/token", env.base))
            .form(&form)
            .send()
    };
    let r = redeem(moved.clone()).await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn authorize_errors_are_pages_or_rfc_redirects_and_store_nothing() {
    let env = env().await;
    let client_id = env.register().await;
    let browser = browser();
    // Errors about the client or its redirect URI: a page, never a redirect.
    for url in [
        env.authorize_url("unknown-client", &[]),
        env.authorize_url(&client_id, &[])
            .replace("%2Fcallback", "%2Fcallback2"),
        env.authorize_url(&client_id, &[])
            .replace("127.0.0.1%3A9", "localhost%3A9"),
    ] {
        let r = env.get(&browser, &url).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(r.headers().get("location").is_none());
        assert_eq!(r.headers()["x-frame-options"], "DENY");
    }
    // Other errors: back to the client with error, state and iss.
    let no_pkce = env
        .authorize_url(&client_id, &[])
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    let cases = [
        (no_pkce, "invalid_request"),
        (
            env.authorize_url(&client_id, &[])
                .replace("code_challenge=", "x="),
            "invalid_request",
        ),
        (
            env.authorize_url(&client_id, &[])
                .replace("%2Fmcp", "%2Fother"),
            "invalid_target",
        ),
        (
            env.authorize_url(&client_id, &[])
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            env.authorize_url(&client_id, &[("scope", "bad\"scope")]),
            "invalid_scope",
        ),
    ];
    for (url, error) in cases {
        let r = env.get(&browser, &url).await;
        let q = query(&location(&r));
        assert_eq!(q["error"], error, "{url}");
        assert_eq!(q["state"], "client-state");
        assert_eq!(q["iss"], env.base);
    }
    // A trailing slash on the resource is the same resource.
    let url = env
        .authorize_url(&client_id, &[])
        .replace("%2Fmcp", "%2Fmcp%2F");
    assert!(location(&env.get(&browser, &url).await).contains("/consent?txn="));
    assert_eq!(env.store.count("txn"), 1);
    assert_eq!(env.state_count(), 1, "only the one valid transaction");
}

#[tokio::test]
async fn token_endpoint_errors_follow_rfc6749() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let (status, headers, body) = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            (
                "code_verifier",
                "wrong-verifier-wrong-verifier-wrong-verifier-00",
            ),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(env.state_count(), 0, "a spent code leaves nothing behind");
    // The right verifier is too late now: the code was single use.
    let v = verifier();
    let (status, _, body) = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &v),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Reused code, racing: exactly one of two concurrent redemptions wins.
    let code = env.login(&client_id).await["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.as_str()),
    ];
    let (a, b) = tokio::join!(env.token(&form), env.token(&form));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);

    let (status, headers, body) = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "unknown"),
            ("code", "x"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &v),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, body) = env.token(&[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let (status, _, body) = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, _, body) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", "nope"),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn consent_is_bound_to_the_browser_and_csrf_protected() {
    let env = env().await;
    let client_id = env.register().await;
    let victim = browser();
    let attacker = browser();
    let (txn, csrf, html) = env.open_consent(&attacker, &client_id).await;
    assert!(html.contains("Test &lt;Client&gt;"), "the name is escaped");
    assert!(html.contains(REDIRECT));
    assert!(html.contains("<button type=\"submit\" name=\"action\" value=\"approve\">"));
    // Reloading keeps the form valid.
    let consent_url = format!("{}/consent?txn={txn}", env.base);
    let again = env.get(&attacker, &consent_url).await;
    let headers = again.headers().clone();
    assert_eq!(hidden(&again.text().await.unwrap(), "csrf"), csrf);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert!(
        csp.contains(env.emu.domain_url().origin().ascii_serialization().as_str()),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    // Another browser (no cookie) can neither see nor approve this consent.
    assert_eq!(
        env.get(&victim, &consent_url).await.status(),
        StatusCode::BAD_REQUEST
    );
    let r = env.post_consent(&victim, &txn, &csrf, "approve").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A wrong CSRF token is refused.
    let r = env.post_consent(&attacker, &txn, "forged", "approve").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The attacker approves in its own browser, then hands the upstream login to
    // the victim: the callback, in the victim's browser, is refused.
    let upstream = location(&env.post_consent(&attacker, &txn, &csrf, "approve").await);
    let callback = location(&env.get(&victim, &upstream).await);
    let r = env.get(&victim, &callback).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.headers().get("location").is_none(),
        "never redirected to the client"
    );
    assert_eq!(
        env.store.count("txn"),
        1,
        "a refused callback does not consume the login"
    );
    assert_eq!(env.store.count("code"), 0);
    // A tampered cookie is refused too: a login's own cookie name with another
    // value, or its value under another name.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = env.get(&bare, &env.authorize_url(&client_id, &[])).await;
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (name, value) = set_cookie
        .split_once(';')
        .and_then(|(pair, _)| pair.split_once('='))
        .unwrap();
    let consent = location(&r);
    let genuine = format!("{name}={value}");
    let forged = [
        format!("{name}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        format!("ocx_consent={value}"),
    ];
    let get = |url: &str, cookie: &str| bare.get(url).header("cookie", cookie).send();
    for cookie in &forged {
        let r = get(&consent, cookie).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "consent page, {cookie}"
        );
    }
    let page = get(&consent, &genuine).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let approved = bare
        .post(format!("{}/consent", env.base))
        .header("cookie", &genuine)
        .form(&[
            ("txn", hidden(&html, "txn").as_str()),
            ("csrf", hidden(&html, "csrf").as_str()),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    let upstream = location(&approved);
    let its_callback = location(&bare.get(&upstream).send().await.unwrap());
    for cookie in &forged {
        let r = get(&its_callback, cookie).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "callback, {cookie}");
    }
    let done = location(&get(&its_callback, &genuine).await.unwrap());
    assert!(query(&done).contains_key("code"), "{done}");
    // The browser that started it completes it, once.
    let done = location(&env.get(&attacker, &callback).await);
    assert!(query(&done).contains_key("code"));
    let replay = env.get(&attacker, &callback).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    // An unknown state is a page.
    let r = env
        .get(
            &attacker,
            &format!("{}/auth/callback?state=nope&code=x", env.base),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A user who signs in from two applications at once (or whose application opens
/// the login twice) has two logins open in one browser: each completes, in either
/// order. With one consent cookie per browser, the second login's cookie replaced
/// the first's, and the first was refused as "started in another browser".
#[tokio::test]
async fn two_logins_open_in_one_browser_both_complete() {
    let env = env().await;
    let first_client = env.register().await;
    let second_client = env.register().await;
    let b = browser();
    let (first, first_csrf, _, first_cookie) = env.open_login(&b, &first_client).await;
    let (second, second_csrf, _, second_cookie) = env.open_login(&b, &second_client).await;
    assert_ne!(first_cookie, second_cookie);
    // Both approved, then the callbacks in the opposite order.
    let mut callbacks = Vec::new();
    for (txn, csrf, cookie) in [
        (&first, &first_csrf, &first_cookie),
        (&second, &second_csrf, &second_cookie),
    ] {
        let r = env.post_consent(&b, txn, csrf, "approve").await;
        assert!(
            r.status().is_redirection(),
            "approving {txn}: {}",
            r.status()
        );
        let upstream = location(&r);
        callbacks.push((location(&env.get(&b, &upstream).await), cookie));
    }
    for (callback, cookie) in callbacks.iter().rev() {
        let r = env.get(&b, callback).await;
        assert!(r.status().is_redirection(), "{}", r.status());
        assert!(query(&location(&r)).contains_key("code"));
        // The finished login's cookie is cleared, and no other.
        assert_eq!(set_cookies(&r), [((*cookie).clone(), None)]);
    }
    assert_eq!(env.store.count("txn"), 0);
    assert_eq!(env.store.count("code"), 2);
}

/// A browser that applies `Set-Cookie` as RFC 6265 says browsers do and sends its
/// cookies oldest first (reqwest's jar keeps no order).
#[derive(Default)]
struct OrderedJar(Vec<(String, String)>);

impl OrderedJar {
    fn keep(&mut self, response: &reqwest::Response) {
        for (name, value) in set_cookies(response) {
            self.0.retain(|(n, _)| *n != name);
            if let Some(value) = value {
                self.0.push((name, value));
            }
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

/// A page that sends a user's browser to `/authorize` again and again leaves it at
/// most eight consent cookies, the newest: a `Cookie` header that keeps growing
/// would shut the user out of the server wherever a proxy in front limits headers.
#[tokio::test]
async fn a_browser_holds_at_most_eight_consent_cookies_the_newest() {
    let env = env().await;
    let client_id = env.register().await;
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut jar = OrderedJar::default();
    let mut logins = Vec::new();
    for i in 0..20 {
        let r = bare
            .get(env.authorize_url(&client_id, &[]))
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap();
        jar.keep(&r);
        logins.push(location(&r));
        assert!(jar.0.len() <= 8, "after {i}: {}", jar.header());
    }
    assert_eq!(jar.0.len(), 8);
    for (i, consent) in logins.iter().enumerate() {
        let r = bare
            .get(consent)
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap();
        let expected = if i >= 12 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status(), expected, "login {i}");
    }
    // Names that are not the proxy's are never echoed back.
    let r = bare
        .get(env.authorize_url(&client_id, &[]))
        .header(
            "cookie",
            format!("{}; ocx_consent_x=1; other=2", jar.header()),
        )
        .send()
        .await
        .unwrap();
    let names: Vec<String> = set_cookies(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2, "one cleared, one set: {names:?}");
    assert_eq!(names[0], jar.0[0].0, "the oldest is cleared");
}

#[tokio::test]
async fn denied_consent_and_expired_transactions() {
    let env = env().await;
    let client_id = env.register().await;
    let b = browser();
    let (txn, csrf, _, cookie) = env.open_login(&b, &client_id).await;
    let denied = env.post_consent(&b, &txn, &csrf, "deny").await;
    assert_eq!(
        set_cookies(&denied),
        [(cookie, None)],
        "its cookie is cleared"
    );
    let q = query(&location(&denied));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "client-state");
    assert_eq!(q["iss"], env.base);
    assert_eq!(env.state_count(), 0);

    let (txn, csrf, _) = env.open_consent(&b, &client_id).await;
    env.clock.advance(Duration::from_secs(16 * 60));
    let r = env.post_consent(&b, &txn, &csrf, "approve").await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "an expired login is refused"
    );
    assert_eq!(env.state_count(), 0);
}

#[tokio::test]
async fn upstream_errors_at_the_callback_reach_the_client_as_rfc_errors() {
    let env = env().await;
    let client_id = env.register().await;
    type Arm = Box<dyn Fn(&Emulator)>;
    let cases: Vec<(Arm, &str)> = vec![
        (
            Box::new(|e: &Emulator| e.deny_next_logins(1)),
            "access_denied",
        ),
        (
            Box::new(|e: &Emulator| e.inject_fault(Fault::Status(503), 1)),
            "temporarily_unavailable",
        ),
        (
            Box::new(|e: &Emulator| e.inject_fault(Fault::GarbageBody, 1)),
            "server_error",
        ),
        (
            Box::new(|e: &Emulator| {
                e.inject_fault(
                    Fault::Respond {
                        status: 400,
                        body: r#"{"error":"invalid_grant"}"#.into(),
                    },
                    1,
                )
            }),
            "server_error",
        ),
    ];
    for (arm, error) in cases {
        let b = browser();
        let (txn, csrf, _) = env.open_consent(&b, &client_id).await;
        let upstream = location(&env.post_consent(&b, &txn, &csrf, "approve").await);
        arm(&env.emu);
        let callback = location(&env.get(&b, &upstream).await);
        let q = query(&location(&env.get(&b, &callback).await));
        assert_eq!(q.get("error").map(String::as_str), Some(error));
        assert_eq!(q["state"], "client-state");
        assert_eq!(q["iss"], env.base);
        assert!(!q.contains_key("code"));
        assert_eq!(env.state_count(), 0, "{error}: nothing stored");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let env = env().await;
    let big = "x".repeat(20 * 1024);
    for path in ["/token", "/revoke", "/consent"] {
        let r = env
            .http
            .post(format!("{}{path}", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("a={big}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    let r = env
        .http
        .post(format!("{}/register", env.base))
        .header("content-type", "application/json")
        .body(format!("{{\"client_name\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(env.store.is_empty());
}

#[tokio::test]
async fn calls_keep_working_across_upstream_expiry_with_one_refresh() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    assert_eq!(
        tokens["expires_in"], 3600,
        "refreshable: the proxy's token outlives the upstream one"
    );
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (_, first) = env.mcp(&access).await;
    let refreshes = env.emu.counters().refresh_grants;
    env.clock.advance(Duration::from_secs(250));
    let calls: Vec<_> = (0..8).map(|_| env.mcp(&access)).collect();
    let answers = futures_join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_ne!(*body, first, "OCI sees a new upstream token (new jti)");
        assert_eq!(*body, answers[0].1);
    }
    assert_eq!(
        env.emu.counters().refresh_grants,
        refreshes + 1,
        "one refresh for 8 calls"
    );
    // Long after the first upstream token expired.
    env.clock.advance(Duration::from_secs(600));
    let (status, later) = env.mcp(&access).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(later, answers[0].1);

    // The domain refuses the refresh: the login ends.
    env.clock.advance(Duration::from_secs(300));
    env.emu.inject_fault(
        Fault::Respond {
            status: 400,
            body: r#"{"error":"invalid_grant"}"#.into(),
        },
        1,
    );
    assert_eq!(env.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(env.store.count("set"), 0, "the set is dropped");
}

async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    // Poll them together.
    let mut pinned = pinned;
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn without_upstream_refresh_tokens_the_client_is_told_by_a_short_lifetime() {
    let env = env_with(Options {
        refresh: false,
        upstream_ttl: Duration::from_secs(600),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    assert_eq!(tokens["expires_in"], 600);
    assert!(tokens.get("refresh_token").is_none());
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(env.mcp(access).await.0, StatusCode::OK);
    env.clock.advance(Duration::from_secs(601));
    assert_eq!(env.mcp(access).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn consent_off_goes_straight_to_the_domain_still_bound_to_the_browser() {
    let env = env_with(Options {
        consent: false,
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let b = browser();
    let upstream = location(&env.get(&b, &env.authorize_url(&client_id, &[])).await);
    assert!(upstream.starts_with(env.emu.domain_url().as_str()));
    let callback = location(&env.get(&b, &upstream).await);
    assert_eq!(
        env.get(&browser(), &callback).await.status(),
        StatusCode::BAD_REQUEST
    );
    let done = location(&env.get(&b, &callback).await);
    assert!(query(&done).contains_key("code"));
}

#[tokio::test]
async fn no_secret_in_logs_html_or_errors() {
    let (capture, _guard) = common::LogCapture::start();
    let env = env().await;
    let client_id = env.register().await;
    let b = browser();
    let (txn, csrf, html) = env.open_consent(&b, &client_id).await;
    let upstream = location(&env.post_consent(&b, &txn, &csrf, "approve").await);
    let callback = location(&env.get(&b, &upstream).await);
    let upstream_code = query(&callback)["code"].clone();
    let done = location(&env.get(&b, &callback).await);
    let code = query(&done)["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, body) = env.mcp(&access).await;
    let (status, _, refused) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &format!("{refresh}x")),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(env.revoke(&client_id, &access).await, StatusCode::OK);
    let logs = capture.text();
    assert!(logs.contains("oauth proxy token"), "{logs}");
    assert!(logs.contains(&client_id), "events name the client");
    let upstream_jti = body.split(' ').nth(1).unwrap().to_owned();
    for (name, secret) in [
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("code", code.as_str()),
        ("upstream code", upstream_code.as_str()),
        ("csrf token", csrf.as_str()),
        ("client secret", env.emu.client_secret().expose_secret()),
        ("upstream jti", upstream_jti.as_str()),
    ] {
        capture.assert_free_of(name, secret);
        assert!(
            !html.contains(secret) || name == "csrf token",
            "{name} in html"
        );
        assert!(!refused.to_string().contains(secret), "{name} in an error");
    }
    let key = String::from_utf8_lossy(&SIGNING_KEY).into_owned();
    assert!(!logs.contains(&key));
}

#[tokio::test]
async fn proxy_debug_and_config_refusals() {
    let build = |key: &[u8], base: &str| {
        OAuthProxy::builder()
            .base_url(base)
            .domain_url("http://127.0.0.1:1")
            .client_credentials("id", "very-secret-value")
            .signing_key(key)
            .build()
    };
    let err = build(&[1; 31], "http://127.0.0.1:8000").unwrap_err();
    assert!(err.to_string().contains("32 bytes"), "{err}");
    assert!(
        build(&[1; 32], "http://example.com").is_err(),
        "http only on loopback"
    );
    assert!(
        build(&[1; 32], "https://example.com/path").is_err(),
        "an origin"
    );
    let proxy = build(&[1; 32], "http://127.0.0.1:8000").unwrap();
    let debug = format!("{proxy:?} {:?}", proxy.bearer_auth());
    assert!(!debug.contains("very-secret-value"), "{debug}");
    assert_eq!(proxy.issuer(), "http://127.0.0.1:8000");
    let store = MemoryStore::default();
    store
        .put("c", "k", b"stored-value".to_vec(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains("stored-value"));
}

#[tokio::test]
async fn a_reused_code_revokes_the_tokens_it_gave() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    let v = verifier();
    let (status, _, body) = env
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &v),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(env.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, _, _) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn json_endpoints_allow_browser_clients_and_pages_do_not() {
    let env = env().await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/register",
        "/token",
        "/revoke",
    ] {
        let r = env
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", env.base))
            .header("origin", "http://localhost:6274")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(r.headers()["access-control-allow-origin"], "*", "{path}");
    }
    let r = env
        .http
        .post(format!("{}/token", env.base))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = env
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            env.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = env
        .http
        .get(format!("{}/authorize", env.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// The domain rotates refresh tokens: once it has answered a refresh, the old one
/// is spent. A store that fails a write or a read right after (once or twice) must
/// not lose the new one, which ended the login at the next refresh.
#[tokio::test]
async fn a_store_failing_after_an_upstream_refresh_does_not_lose_the_login() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    for (call, collection, times) in [(Call::Put, "set", 2), (Call::Get, "revoked", 2)] {
        // The domain's token has expired: this call refreshes it.
        env.clock.advance(Duration::from_secs(350));
        let refreshes = env.emu.counters().refresh_grants;
        for _ in 0..times {
            env.failures.arm(call, collection);
        }
        let (status, body) = env.mcp(&access).await;
        assert_eq!(status, StatusCode::OK, "{call:?} {collection}: {body}");
        assert_eq!(env.failures.pending(), 0, "{call:?} {collection}");
        assert_eq!(env.emu.counters().refresh_grants, refreshes + 1);
    }
    // The rotated refresh token was kept: the next refresh works too.
    env.clock.advance(Duration::from_secs(350));
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    assert_eq!(env.store.count("set"), 1);
}

/// A client's registration lives 30 days from its last grant, refreshes included:
/// a login refreshed every day for longer keeps working (it ended on day 30 with
/// `invalid_client`, the registration gone).
#[tokio::test]
async fn a_client_that_keeps_refreshing_keeps_its_registration() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    for day in 1..=32 {
        env.clock.advance(Duration::from_secs(24 * 3600));
        let (status, _, body) = env.refresh(&client_id, &refresh).await;
        assert_eq!(status, StatusCode::OK, "day {day}: {body}");
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
    }
}

/// The domain answers a refresh with an access token the proxy cannot validate
/// (and a rotated refresh token): the old token keeps serving while valid, and the
/// callers that follow do not each refresh again (each was a rotation and a round
/// trip to a domain whose tokens cannot be read).
#[tokio::test]
async fn an_unvalidated_refresh_keeps_the_old_token_and_is_not_repeated_at_once() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (_, first) = env.mcp(&access).await;
    // Within the refresh margin: this call refreshes.
    env.clock.advance(Duration::from_secs(250));
    env.emu.inject_fault(
        Fault::Respond {
            status: 200,
            body: r#"{"access_token":"not-a-jwt","token_type":"Bearer","expires_in":3600,"refresh_token":"rotated"}"#.into(),
        },
        1,
    );
    let requests = env.emu.counters().exchange_requests;
    for _ in 0..4 {
        assert_eq!(env.mcp(&access).await, (StatusCode::OK, first.clone()));
    }
    assert_eq!(
        env.emu.counters().exchange_requests,
        requests + 1,
        "one refresh, not one per call"
    );
}

#[tokio::test]
async fn transient_refresh_failures_keep_the_login() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (_, first) = env.mcp(&access).await;
    // Within the refresh margin, a failed refresh keeps the still valid token.
    env.clock.advance(Duration::from_secs(250));
    env.emu.inject_fault(
        Fault::Respond {
            status: 401,
            body: r#"{"error":"invalid_client"}"#.into(),
        },
        1,
    );
    assert_eq!(env.mcp(&access).await, (StatusCode::OK, first.clone()));
    // Expired and the domain down: 503, the login is kept.
    env.clock.advance(Duration::from_secs(100));
    env.emu.inject_fault(Fault::Status(503), 1);
    assert_eq!(env.mcp(&access).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(env.store.count("set"), 1);
    // The domain is back (after the 5 s back-off of the failed refresh).
    env.clock.advance(Duration::from_secs(6));
    let (status, body) = env.mcp(&access).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body, first);
}

/// Defect: callers of one expired login while the domain failed each tried the
/// domain in turn, queued on the set's lock (with a hanging domain, each waited
/// for every caller before it: 20 s apiece). After a failed refresh the set is left
/// alone for 5 s: the callers queued behind it are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_an_expired_login_do_not_each_retry_a_failing_domain() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    env.clock.advance(Duration::from_secs(400));
    let down = env.emu.add_fault(FaultRule::token(Fault::Status(503)));
    let requests = env.emu.counters().exchange_requests;
    let calls = tokio::join!(
        env.mcp(&access),
        env.mcp(&access),
        env.mcp(&access),
        env.mcp(&access)
    );
    for (status, _) in [calls.0, calls.1, calls.2, calls.3] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        env.emu.counters().exchange_requests,
        requests + 1,
        "one refresh for the four callers"
    );
    // Within the back-off, a caller does not ask the domain.
    env.clock.advance(Duration::from_secs(4));
    assert_eq!(env.mcp(&access).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(env.emu.counters().exchange_requests, requests + 1);
    // After it, the domain is asked again; back up, the login works.
    env.emu.fault_control().remove(down);
    env.clock.advance(Duration::from_secs(2));
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    assert_eq!(env.emu.counters().exchange_requests, requests + 2);
    assert_eq!(env.store.count("set"), 1);
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_login() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // Another client cannot revoke it.
    let other = env.register().await;
    assert_eq!(env.revoke(&other, refresh).await, StatusCode::OK);
    assert_eq!(env.mcp(access).await.0, StatusCode::OK);
    assert_eq!(
        env.revoke("unknown", refresh).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(env.revoke(&client_id, refresh).await, StatusCode::OK);
    assert_eq!(env.mcp(access).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = env
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", refresh),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(env.store.count("set"), 0);
}

/// A revocation the store cannot carry out answers 503 (RFC 7009 section 2.2.1),
/// never a 200 that revoked nothing; retried, it ends the login.
#[tokio::test]
async fn a_revocation_the_store_fails_answers_503_and_a_retry_ends_the_login() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // The token's record cannot be read.
    env.failures.arm(Call::Get, "jti");
    assert_eq!(
        env.revoke(&client_id, access).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The login's set cannot be deleted.
    env.failures.arm(Call::Delete, "set");
    assert_eq!(
        env.revoke(&client_id, refresh).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        env.failures.pending(),
        0,
        "both failures met the revocation"
    );
    assert_eq!(env.store.count("set"), 1);
    // Retried, the revocation ends the login.
    assert_eq!(env.revoke(&client_id, refresh).await, StatusCode::OK);
    assert_eq!(env.store.count("set"), 0);
    assert_eq!(env.mcp(access).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = env.refresh(&client_id, refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

/// A 503 from `/token` spends nothing: when the store fails while the tokens are
/// issued, the code or refresh token is given back, so the client's retry succeeds
/// (it was taken for a replay, which ended the login).
#[tokio::test]
async fn a_grant_the_store_fails_midway_can_be_retried() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let v = verifier();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.as_str()),
    ];
    for (call, collection) in [(Call::Put, "jti"), (Call::Get, "set")] {
        env.failures.arm(call, collection);
        let (status, _, body) = env.token(&form).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(env.failures.pending(), 0, "{call:?} {collection}");
    }
    let tokens = env.redeem(&client_id, &code).await;
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The same for a refresh: its token is spent before the new ones are stored.
    for (call, collection) in [
        (Call::Put, "jti"),
        (Call::Put, "refresh"),
        (Call::Get, "set"),
    ] {
        env.failures.arm(call, collection);
        let (status, _, body) = env.refresh(&client_id, &refresh).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{call:?} {collection}: {body}"
        );
        assert_eq!(env.failures.pending(), 0, "{call:?} {collection}");
    }
    let (status, _, body) = env.refresh(&client_id, &refresh).await;
    assert_eq!(status, StatusCode::OK, "the retry refreshes: {body}");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(env.mcp(access).await.0, StatusCode::OK);
    refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(env.refresh(&client_id, &refresh).await.0, StatusCode::OK);
    assert_eq!(env.store.count("set"), 1, "the login lives on");
}

/// Defect: a code given back after a store failure got a fresh five minutes, so a
/// code could be kept alive past its lifetime by failed redemptions. It keeps the
/// expiry it was issued with.
#[tokio::test]
async fn a_code_given_back_keeps_its_expiry() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let v = verifier();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", v.as_str()),
    ];
    env.clock.advance(Duration::from_secs(4 * 60));
    env.failures.arm(Call::Put, "jti");
    let (status, _, body) = env.token(&form).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(env.failures.pending(), 0);
    // Five minutes and a second after it was issued: expired.
    env.clock.advance(Duration::from_secs(61));
    let (status, _, body) = env.token(&form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
}

/// The give-back deletes the code's used-marker before it restores the code: a
/// retry that redeems the restored code at once writes its own marker, which must
/// stand (restoring first and deleting after would erase it, and a later replay of
/// the code would go unnoticed instead of ending the login).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_a_give_back_keeps_its_replay_marker() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let form: Vec<(String, String)> = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier().as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // The client's retry, run inside the give-back right after the code is back.
    let (http, url, retry) = (
        env.http.clone(),
        format!("{}/token", env.base),
        form.clone(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    env.after_put.arm(
        "code",
        Box::pin(async move {
            let status = http.post(url).form(&retry).send().await.unwrap().status();
            let _ = tx.send(status);
        }),
    );
    env.failures.arm(Call::Put, "jti");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, body) = env.token(&pairs).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        rx.await.unwrap(),
        StatusCode::OK,
        "the retry redeemed the code"
    );
    assert_eq!(env.store.count("used"), 1, "the retry's marker stands");
    // So a replay of the code is caught, and ends the login.
    let (status, _, body) = env.token(&pairs).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(env.store.count("set"), 0);
}

/// A code past its own expiry is refused even while the store still holds it (a
/// record kept longer than its code lives, or a store whose TTLs run late), and its
/// login ends; a record stored before codes carried their expiry still redeems.
#[tokio::test]
async fn a_code_past_its_expiry_is_refused_even_if_the_store_holds_it() {
    let env = env().await;
    let client_id = env.register().await;
    let now = 1_900_000_000_u64;
    for (expires_at, expected) in [
        (Some(now - 1), StatusCode::BAD_REQUEST),
        (None, StatusCode::OK),
    ] {
        let code = env.login(&client_id).await["code"].clone();
        let key = sha256_b64(&code);
        let bytes = env
            .store
            .get("code", &key)
            .await
            .unwrap()
            .expect("the code's record");
        let mut record: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(record["expires_at"].as_u64().unwrap() > now, "{record}");
        match expires_at {
            Some(at) => record["expires_at"] = json!(at),
            None => {
                record.as_object_mut().unwrap().remove("expires_at");
            }
        }
        let bytes = serde_json::to_vec(&record).unwrap();
        env.store
            .put("code", &key, bytes, Duration::from_secs(3600))
            .await
            .unwrap();
        let sets = env.store.count("set");
        let v = verifier();
        let (status, _, body) = env
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &v),
            ])
            .await;
        assert_eq!(status, expected, "{expires_at:?}: {body}");
        if expected == StatusCode::BAD_REQUEST {
            assert_eq!(body["error_description"], "the code has expired");
            assert_eq!(env.store.count("set"), sets - 1, "its login ended");
        }
    }
}

#[tokio::test]
async fn a_full_store_fails_requests_cleanly() {
    let env = env_with(Options {
        store_entries: 2,
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    // The transaction fits; the code and token set of the callback do not.
    let b = browser();
    let (txn, csrf, _) = env.open_consent(&b, &client_id).await;
    let upstream = location(&env.post_consent(&b, &txn, &csrf, "approve").await);
    let callback = location(&env.get(&b, &upstream).await);
    let q = query(&location(&env.get(&b, &callback).await));
    assert_eq!(q["error"], "temporarily_unavailable");
    assert_eq!(q["state"], "client-state");
    assert_eq!(env.state_count(), 0, "the half-made login is cleaned up");
    // A second client is over the client collection's share of a store this small:
    // registration answers 503 temporarily_unavailable, not a panic or a hang.
    let r = env
        .http
        .post(format!("{}/register", env.base))
        .json(&json!({"redirect_uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

/// The `set_id` behind one of the proxy's access tokens (from its `jti` record).
async fn set_id_of(env: &Env, access: &str) -> String {
    use base64::Engine as _;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let record: Value =
        serde_json::from_slice(&env.store.get("jti", jti).await.unwrap().unwrap()).unwrap();
    record["set_id"].as_str().unwrap().to_owned()
}

/// Review finding 2: a revocation during an upstream refresh is not undone when
/// the refresh stores the renewed set.
#[tokio::test]
async fn a_revocation_during_an_upstream_refresh_stays_revoked() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    env.clock.advance(Duration::from_secs(350));
    // The refresh at the domain takes a while; the revocation lands meanwhile.
    env.emu
        .inject_fault(Fault::Delay(Duration::from_millis(800)), 1);
    let (_, revoked) = tokio::join!(env.mcp(&access), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.revoke(&client_id, &access).await
    });
    assert_eq!(revoked, StatusCode::OK);
    assert_eq!(
        env.store.count("set"),
        0,
        "the refresh did not recreate the set"
    );
    let (status, _, body) = env.refresh(&client_id, &refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

/// Review finding 3: a refresh the domain refuses because another refresher
/// rotated the refresh token meanwhile does not end the login.
#[tokio::test]
async fn a_refused_stale_refresh_token_does_not_end_a_login_refreshed_meanwhile() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let set_id = set_id_of(&env, &access).await;
    let good = env.store.get("set", &set_id).await.unwrap().unwrap();
    // The set as this caller reads it holds a refresh token the domain refuses...
    let mut stale: Value = serde_json::from_slice(&good).unwrap();
    stale["refresh_token"] = json!("rotated-out-refresh-token");
    env.store
        .put(
            "set",
            &set_id,
            serde_json::to_vec(&stale).unwrap(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    env.clock.advance(Duration::from_secs(350));
    env.emu
        .inject_fault(Fault::Delay(Duration::from_millis(800)), 1);
    // ...and while the domain answers, another refresher stores the current one.
    let (call, ()) = tokio::join!(env.mcp(&access), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.store
            .put("set", &set_id, good.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
    });
    assert_ne!(call.0, StatusCode::OK, "{call:?}");
    assert_eq!(env.store.count("set"), 1, "the login is kept");
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
}

/// Review finding 4: a refresh token used twice revokes the login (OAuth 2.1
/// section 4.3.1).
#[tokio::test]
async fn a_reused_refresh_token_revokes_the_login() {
    let env = env().await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, _, rotated) = env.refresh(&client_id, &first).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let access = rotated["access_token"].as_str().unwrap().to_owned();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    // The first token comes back: whoever holds it, the login ends.
    let (status, _, body) = env.refresh(&client_id, &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(env.store.count("set"), 0);
    assert_eq!(env.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, _) = env.refresh(&client_id, &second).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Review finding 4: a transient failure does not burn the refresh token.
#[tokio::test]
async fn a_transient_failure_does_not_burn_the_refresh_token() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    env.clock.advance(Duration::from_secs(350));
    env.emu.inject_fault(Fault::Status(503), 1);
    let (status, _, body) = env.refresh(&client_id, &refresh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Within the 5 s back-off the domain is not asked again.
    let requests = env.emu.counters().exchange_requests;
    let (status, headers, body) = env.refresh(&client_id, &refresh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(env.emu.counters().exchange_requests, requests);
    env.clock.advance(Duration::from_secs(6));
    let (status, _, body) = env.refresh(&client_id, &refresh).await;
    assert_eq!(status, StatusCode::OK, "the same token works again: {body}");
    assert_eq!(env.store.count("set"), 1);
}

/// Review finding 1: a client nobody logs in with is kept an hour, one that
/// redeemed a code 30 days.
#[tokio::test]
async fn unused_registrations_expire_within_an_hour_used_ones_are_kept() {
    let env = env().await;
    let unused = env.register().await;
    let used = env.register().await;
    let code = env.login(&used).await["code"].clone();
    env.redeem(&used, &code).await;
    env.clock.advance(Duration::from_secs(3601));
    assert_eq!(env.store.count("client"), 1, "the unused client is gone");
    let r = env.get(&browser(), &env.authorize_url(&unused, &[])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let code = env.login(&used).await["code"].clone();
    env.redeem(&used, &code).await;
}

/// Review finding 1: unauthenticated registrations and logins cannot fill the
/// MemoryStore and crowd out token state.
#[tokio::test]
async fn junk_registrations_cannot_crowd_out_logins() {
    let env = env_with(Options {
        store_entries: 40,
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    // Someone registers clients until the store refuses them.
    let mut refused = false;
    for _ in 0..60 {
        let r = env
            .http
            .post(format!("{}/register", env.base))
            .json(&json!({"redirect_uris": [REDIRECT]}))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::CREATED {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            refused = true;
            break;
        }
    }
    assert!(refused, "the client collection is capped");
    assert!(env.store.count("client") < 40 / 2);
    // An existing client still logs in, redeems and refreshes.
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let (status, _, body) = env
        .refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Review, Low: upstream lifetimes as large as a u64 do not overflow (a panic in
/// the handler) at the callback or at a refresh.
#[tokio::test]
async fn huge_upstream_lifetimes_do_not_overflow() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        ..Options::default()
    })
    .await;
    let huge = |emu: &Emulator, refresh_token: &str| Fault::Respond {
        status: 200,
        body: json!({
            "access_token": emu.mint_user_token("demo-user"),
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": refresh_token,
            "refresh_expires_in": u64::MAX,
        })
        .to_string(),
    };
    let client_id = env.register().await;
    let b = browser();
    let (txn, csrf, _) = env.open_consent(&b, &client_id).await;
    let upstream = location(&env.post_consent(&b, &txn, &csrf, "approve").await);
    let callback = location(&env.get(&b, &upstream).await);
    env.emu
        .inject_fault(huge(&env.emu, "upstream-refresh-1"), 1);
    let r = b
        .get(&callback)
        .send()
        .await
        .expect("an answer, not a panic");
    let done = query(&location(&r));
    let tokens = env.redeem(&client_id, &done["code"]).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    // The upstream token (minted for an hour) is about to expire: refreshed.
    env.clock.advance(Duration::from_secs(3550));
    env.emu
        .inject_fault(huge(&env.emu, "upstream-refresh-2"), 1);
    let (status, body) = env.mcp(&access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set_id = set_id_of(&env, &access).await;
    let set: Value =
        serde_json::from_slice(&env.store.get("set", &set_id).await.unwrap().unwrap()).unwrap();
    assert_eq!(set["refresh_token"], "upstream-refresh-2", "refreshed");
}

/// A store that counts the reads (`get`, `take`) made through it.
type Counting = Hooked<CountReads>;

#[derive(Debug, Default)]
struct CountReads(std::sync::atomic::AtomicUsize);

impl Around for CountReads {
    fn before(&self, call: Call, _: &str, _: &str) -> Option<Act> {
        if matches!(call, Call::Get | Call::Take) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        None
    }
}

impl Hooked<CountReads> {
    fn counting(inner: Arc<dyn oci_token_exchange::Store>) -> Self {
        Hooked::new(inner, CountReads::default())
    }

    fn reads(&self) -> usize {
        self.around().0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Issue 11: warm calls are answered from the replica's remembered validations
/// (no store read) within the TTL, each token only for itself; the store is read
/// again after the TTL; a revocation on this replica takes effect at once; with
/// a TTL of zero every call reads the token's record and its login (2 reads).
#[tokio::test]
async fn warm_calls_read_nothing_from_the_store_within_the_validation_ttl() {
    let ttl = Duration::from_secs(30);
    let env = env_with(Options {
        validation_ttl: Some(ttl),
        ..Options::default()
    })
    .await;
    let mut users = Vec::new();
    for _ in 0..2 {
        let client_id = env.register().await;
        let code = env.login(&client_id).await["code"].clone();
        let tokens = env.redeem(&client_id, &code).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let (status, first) = env.mcp(&access).await;
        assert_eq!(status, StatusCode::OK);
        users.push((client_id, access, first));
    }
    assert_ne!(users[0].2, users[1].2, "two logins, two tokens");
    let reads = env.proxy_store.reads();
    for round in 0..10 {
        for (_, access, identity) in &users {
            let (status, seen) = env.mcp(access).await;
            assert_eq!(status, StatusCode::OK, "round {round}");
            assert_eq!(&seen, identity, "each token answers for itself only");
        }
    }
    assert_eq!(
        env.proxy_store.reads(),
        reads,
        "20 warm calls, 0 store reads"
    );

    // After the TTL the store is consulted again (the record and the login), then
    // remembered again.
    env.clock.advance(ttl + Duration::from_secs(1));
    assert_eq!(env.mcp(&users[0].1).await.0, StatusCode::OK);
    assert_eq!(env.proxy_store.reads(), reads + 2);
    assert_eq!(env.mcp(&users[0].1).await.0, StatusCode::OK);
    assert_eq!(env.proxy_store.reads(), reads + 2);

    // A revocation here takes effect at once, within the TTL.
    assert_eq!(env.revoke(&users[0].0, &users[0].1).await, StatusCode::OK);
    assert_eq!(env.mcp(&users[0].1).await.0, StatusCode::UNAUTHORIZED);
    // The other login still works (from the store: the revocation dropped every
    // remembered validation of this replica).
    assert_eq!(env.mcp(&users[1].1).await.0, StatusCode::OK);

    // Off: every call reads the record and the login.
    let off = env_with(Options {
        validation_ttl: Some(Duration::ZERO),
        ..Options::default()
    })
    .await;
    let client_id = off.register().await;
    let code = off.login(&client_id).await["code"].clone();
    let access = off.redeem(&client_id, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reads = off.proxy_store.reads();
    for _ in 0..3 {
        assert_eq!(off.mcp(&access).await.0, StatusCode::OK);
    }
    assert_eq!(off.proxy_store.reads(), reads + 6);
}

/// Issue 11: a token revoked through another replica sharing the store is
/// refused here once this replica's remembered validation expires (the
/// documented trade-off: until then this replica still accepts it).
#[tokio::test]
async fn a_token_revoked_on_another_replica_is_refused_after_the_ttl() {
    let ttl = Duration::from_secs(5);
    let env = env_with(Options {
        validation_ttl: Some(ttl),
        ..Options::default()
    })
    .await;
    // Replica B: the same issuer and store, its own memory.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = format!("http://{}", listener.local_addr().unwrap());
    let _replica = serve_replica(
        listener,
        &env.base,
        &env.emu,
        &env.proxy_store,
        &env.clock,
        true,
        Some(ttl),
    );
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let access = env.redeem(&client_id, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    let revoked = env
        .http
        .post(format!("{b}/revoke"))
        .form(&[("client_id", client_id.as_str()), ("token", &access)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let on_b = env
        .http
        .post(format!("{b}/mcp"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), StatusCode::UNAUTHORIZED, "at once on B");
    // A remembers its validation for up to the TTL...
    assert_eq!(env.mcp(&access).await.0, StatusCode::OK);
    // ...and refuses once it has passed.
    env.clock.advance(ttl);
    assert_eq!(env.mcp(&access).await.0, StatusCode::UNAUTHORIZED);
}

/// A store whose refresh-lock attempts take a second each.
#[derive(Debug)]
struct SlowLocks;

/// An act armed to run once, right after the next put to its collection.
#[derive(Clone, Default)]
struct AfterPut(Arc<Mutex<Option<(String, Act)>>>);

impl AfterPut {
    fn arm(&self, collection: &str, act: Act) {
        *self.0.lock().unwrap() = Some((collection.to_owned(), act));
    }
}

/// The proxy store's hooks in `Env`: armed failures and an armed after-put act.
struct Hooks {
    failures: Failures,
    after_put: AfterPut,
}

impl Around for Hooks {
    fn fail(&self, call: Call, collection: &str, key: &str) -> bool {
        self.failures.fail(call, collection, key)
    }

    fn after(&self, call: Call, collection: &str, _: &str) -> Option<Act> {
        if call != Call::Put {
            return None;
        }
        let mut armed = self.after_put.0.lock().unwrap();
        if armed.as_ref().is_some_and(|(c, _)| c == collection) {
            armed.take().map(|(_, act)| act)
        } else {
            None
        }
    }
}

impl Around for SlowLocks {
    fn before(&self, call: Call, collection: &str, _: &str) -> Option<Act> {
        (call == Call::PutIfAbsent && collection == "refresh_lock")
            .then(|| Box::pin(tokio::time::sleep(Duration::from_secs(1))) as Act)
    }
}

/// Review, Low: waiting for another refresher's lock is bounded in time (about
/// 10 s), not in attempts, so a slow store does not stretch it to minutes.
#[tokio::test]
async fn the_wait_for_a_refresh_lock_has_a_deadline() {
    let env = env_with(Options {
        upstream_ttl: Duration::from_secs(300),
        slow_locks: true,
        ..Options::default()
    })
    .await;
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let tokens = env.redeem(&client_id, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let set_id = set_id_of(&env, &access).await;
    // Another refresher holds the set's lock and never finishes.
    assert!(
        env.store
            .put_if_absent(
                "refresh_lock",
                &set_id,
                b"someone-else".to_vec(),
                Duration::from_secs(600)
            )
            .await
            .unwrap()
    );
    env.clock.advance(Duration::from_secs(250));
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), env.mcp(&access))
        .await
        .expect("the wait ends after about 10 s, not 200 slow attempts");
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Around a store: its next read of a token set, once armed, pauses after reading
/// (so it answers with what it read before the pause) until released.
#[derive(Debug, Default)]
struct PausingSets {
    armed: std::sync::atomic::AtomicBool,
    /// Signalled when the armed read has read and paused.
    paused: Arc<tokio::sync::Notify>,
    /// Ends the pause.
    release: Arc<tokio::sync::Notify>,
}

impl Around for PausingSets {
    fn after(&self, call: Call, collection: &str, _: &str) -> Option<Act> {
        let pause = call == Call::Get
            && collection == "set"
            && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst);
        let (paused, release) = (Arc::clone(&self.paused), Arc::clone(&self.release));
        pause.then(|| {
            Box::pin(async move {
                paused.notify_one();
                release.notified().await;
            }) as Act
        })
    }
}

/// Review: the race the validation cache's epoch exists for. A cold call reads
/// the login, then (paused) the login is revoked on the same replica, then the
/// call goes on: it may still be answered, but what it read must not be
/// remembered, so the NEXT call with the token is refused at once.
#[tokio::test]
async fn a_validation_racing_a_revocation_is_not_remembered() {
    let ttl = Duration::from_secs(30);
    let env = env_with(Options {
        validation_ttl: Some(ttl),
        ..Options::default()
    })
    .await;
    // Replica B: the same issuer and store, reads of token sets pausable.
    let pausing = Arc::new(Hooked::new(
        Arc::new(env.store.clone()),
        PausingSets::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = format!("http://{}", listener.local_addr().unwrap());
    let _replica = serve_replica(
        listener,
        &env.base,
        &env.emu,
        &Arc::new(Counting::counting(pausing.clone())),
        &env.clock,
        true,
        Some(ttl),
    );
    let client_id = env.register().await;
    let code = env.login(&client_id).await["code"].clone();
    let access = env.redeem(&client_id, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let call_b = |http: reqwest::Client, access: String, b: String| async move {
        http.post(format!("{b}/mcp"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    };

    // A cold call on B: it reads the login, then pauses.
    pausing
        .around()
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cold = tokio::spawn(call_b(env.http.clone(), access.clone(), b.clone()));
    tokio::time::timeout(Duration::from_secs(10), pausing.around().paused.notified())
        .await
        .expect("the cold call reads the login");
    // The login ends on B meanwhile.
    let revoked = tokio::time::timeout(
        Duration::from_secs(10),
        env.http
            .post(format!("{b}/revoke"))
            .form(&[("client_id", client_id.as_str()), ("token", &access)])
            .send(),
    )
    .await
    .expect("the revocation does not wait for the paused call")
    .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    pausing.around().release.notify_one();
    let first = tokio::time::timeout(Duration::from_secs(10), cold)
        .await
        .expect("the paused call ends once released")
        .unwrap();
    assert!(
        matches!(first, StatusCode::OK | StatusCode::UNAUTHORIZED),
        "{first}"
    );
    // What the paused call read was not remembered.
    assert_eq!(
        call_b(env.http.clone(), access.clone(), b.clone()).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Review: the validation cache's lifetime is bounded (a revocation elsewhere
/// reaches every replica within it): 60 s is accepted, more is refused.
#[tokio::test]
async fn a_validation_cache_ttl_over_a_minute_is_refused() {
    let build = |ttl: Duration| {
        OAuthProxy::builder()
            .base_url("http://127.0.0.1:8000")
            .domain_url("http://127.0.0.1:1")
            .client_credentials("id", "very-secret-value")
            .signing_key([1; 32])
            .validation_cache_ttl(ttl)
            .build()
    };
    assert!(build(Duration::ZERO).is_ok());
    assert!(build(Duration::from_secs(60)).is_ok());
    for ttl in [
        Duration::from_secs(60) + Duration::from_nanos(1),
        Duration::from_secs(3600),
        Duration::MAX,
    ] {
        let err = build(ttl).unwrap_err();
        assert_eq!(
            err.kind(),
            oci_token_exchange::ErrorKind::InvalidConfig,
            "{ttl:?}"
        );
        assert!(err.to_string().contains("at most 60 s"), "{err}");
    }
}
