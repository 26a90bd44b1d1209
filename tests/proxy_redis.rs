//! The OAuth proxy as replicas behind a load balancer: two `OAuthProxy` servers on
//! their own loopback ports, one Redis (a `redis-server` the test starts), the state
//! encrypted with Fernet. A reqwest client plays the browser and the MCP client and
//! is the load balancer too: it sends each request to the replica the test chooses.
#![cfg(all(feature = "oauth-proxy", feature = "emulator", feature = "redis"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use common::browser::{browser_builder, location, query};
use common::redis::RedisServer;
use oci_token_exchange::{
    AccessToken, Emulator, EncryptedStore, ErrorKind, Fernet, FernetKey, FixedClock, MemoryStore,
    OAuthProxy, RedisStore, Store, StoreFuture,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const SIGNING_KEY: [u8; 32] = *b"replicas-share-this-signing-key!";

/// The tool: answers with the user's upstream token, so the test can look for it in
/// Redis.
async fn echo(request: axum::http::Request<Body>) -> String {
    let token = request.extensions().get::<AccessToken>().unwrap();
    format!(
        "{} {} {}",
        token.subject().unwrap_or("-"),
        token.jti().unwrap_or("-"),
        token.token().expose_secret()
    )
}

/// What every replica shares: the domain, the public base URL, Redis and the keys.
struct Deployment {
    emu: Emulator,
    /// The public origin (the load balancer's): never served; requests to it are
    /// sent to a replica.
    base: String,
    _reserved: std::net::TcpListener,
    redis: RedisServer,
    encryption_keys: String,
    clock: Arc<FixedClock>,
    /// No connection reuse: a dropped replica's connections end with it.
    http: reqwest::Client,
}

/// One server: its own proxy, store connection and port.
struct Replica {
    addr: String,
    store: Arc<EncryptedStore<RedisStore>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn browser() -> reqwest::Client {
    browser_builder().pool_max_idle_per_host(0).build().unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

const VERIFIER: &str = "the-clients-own-verifier-with-enough-characters-1234";

fn challenge() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER))
}

async fn deployment(upstream_ttl: Duration) -> Option<Deployment> {
    let redis = RedisServer::start()?;
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", reserved.local_addr().unwrap());
    let clock = Arc::new(FixedClock::at_unix(1_900_000_000));
    let emu = Emulator::builder()
        .clock(clock.clone())
        .redirect_uri(format!("{base}/auth/callback"))
        .access_token_ttl(upstream_ttl)
        .start()
        .await
        .unwrap();
    let old = FernetKey::generate().unwrap().to_base64();
    let new = FernetKey::generate().unwrap().to_base64();
    Some(Deployment {
        emu,
        base,
        _reserved: reserved,
        redis,
        encryption_keys: format!("{},{}", new.expose_secret(), old.expose_secret()),
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    })
}

impl Deployment {
    /// A replica as `mcp_server` builds one from its environment.
    async fn replica(&self) -> Replica {
        let store = RedisStore::connect(&self.redis.url()).await.unwrap();
        let fernet = Fernet::from_env_value(&self.encryption_keys).unwrap();
        let store = Arc::new(EncryptedStore::new(store, fernet));
        let proxy = OAuthProxy::builder()
            .base_url(&self.base)
            .domain_url(self.emu.domain_url().as_str())
            .client_credentials(self.emu.client_id(), self.emu.client_secret().clone())
            .signing_key(SIGNING_KEY)
            .store(store.clone())
            .clock(self.clock.clone())
            .build()
            .unwrap();
        let mcp = Router::new()
            .route("/mcp", axum::routing::post(echo))
            .layer(proxy.bearer_auth().layer());
        let app = proxy.router().merge(mcp);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Replica {
            addr,
            store,
            server,
        }
    }

    /// `url` (on the public origin) sent to `replica`.
    fn at(&self, replica: &Replica, url: &str) -> String {
        assert!(url.starts_with(&self.base), "{url}");
        format!("{}{}", replica.addr, &url[self.base.len()..])
    }

    async fn register(&self, r: &Replica) -> String {
        let response = self
            .http
            .post(format!("{}/register", r.addr))
            .json(&json!({
                "client_name": "Replicated client",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["client_id"].as_str().unwrap().to_owned()
    }

    fn authorize_url(&self, client_id: &str) -> String {
        let mut url = Url::parse(&format!("{}/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "client-state")
            .append_pair("code_challenge", &challenge())
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &format!("{}/mcp", self.base));
        url.to_string()
    }

    /// The browser leg, each step on the replica `route` picks (step 0: /authorize,
    /// 1: the consent page, 2: the approval, 3: the callback). Returns the client
    /// redirect's query and the domain's code.
    async fn login(
        &self,
        client_id: &str,
        route: [&Replica; 4],
    ) -> (HashMap<String, String>, String) {
        let b = browser();
        let r = b
            .get(self.at(route[0], &self.authorize_url(client_id)))
            .send()
            .await
            .unwrap();
        let consent = location(&r);
        let page = b.get(self.at(route[1], &consent)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let (txn, csrf) = (hidden(&html, "txn"), hidden(&html, "csrf"));
        let approved = b
            .post(format!("{}/consent", route[2].addr))
            .form(&[
                ("txn", txn.as_str()),
                ("csrf", csrf.as_str()),
                ("action", "approve"),
            ])
            .send()
            .await
            .unwrap();
        let upstream = location(&approved);
        assert!(upstream.starts_with(self.emu.domain_url().as_str()));
        let callback = location(&b.get(&upstream).send().await.unwrap());
        let upstream_code = query(&callback)["code"].clone();
        let done = location(&b.get(self.at(route[3], &callback)).send().await.unwrap());
        assert!(done.starts_with(REDIRECT), "{done}");
        (query(&done), upstream_code)
    }

    async fn token(&self, r: &Replica, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/token", r.addr))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn redeem(&self, r: &Replica, client_id: &str, code: &str) -> Value {
        let (status, body) = self
            .token(
                r,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", client_id),
                    ("code", code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", VERIFIER),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn refresh(&self, r: &Replica, client_id: &str, refresh_token: &str) -> Value {
        let (status, body) = self
            .token(
                r,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("refresh_token", refresh_token),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn mcp(&self, r: &Replica, token: &str) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}/mcp", r.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }
}

fn secret_str(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_replica_a_works_on_replica_b_and_after_a_restarts() {
    let Some(d) = deployment(Duration::from_secs(3600)).await else {
        return;
    };
    let a = d.replica().await;
    let b = d.replica().await;

    // Registered on B, logged in across both, the code redeemed on A.
    let client_id = d.register(&b).await;
    let (redirect, upstream_code) = d.login(&client_id, [&a, &b, &a, &b]).await;
    assert_eq!(redirect["state"], "client-state");
    let tokens = d.redeem(&a, &client_id, &redirect["code"]).await;
    let access = secret_str(&tokens, "access_token");
    let refresh = secret_str(&tokens, "refresh_token");

    // Calls on either replica see the user.
    let (status, on_a) = d.mcp(&a, &access).await;
    assert_eq!(status, StatusCode::OK, "{on_a}");
    assert!(on_a.starts_with("demo-user "), "{on_a}");
    let (status, on_b) = d.mcp(&b, &access).await;
    assert_eq!(status, StatusCode::OK, "{on_b}");
    assert_eq!(on_a, on_b);
    let upstream_token = on_a.split(' ').nth(2).unwrap().to_owned();

    // Refresh on B.
    let renewed = d.refresh(&b, &client_id, &refresh).await;
    let access2 = secret_str(&renewed, "access_token");
    let refresh2 = secret_str(&renewed, "refresh_token");
    assert_eq!(d.mcp(&a, &access2).await.0, StatusCode::OK);

    // Nothing in Redis is readable: every value is a Fernet token, and no secret of
    // the login is in a key or a value.
    let dump = d.redis.dump().await;
    assert!(dump.len() >= 4, "client, set, jti, refresh: {}", dump.len());
    let signing_key = String::from_utf8_lossy(&SIGNING_KEY).into_owned();
    let secrets = [
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("renewed access token", access2.as_str()),
        ("renewed refresh token", refresh2.as_str()),
        ("code", redirect["code"].as_str()),
        ("upstream code", upstream_code.as_str()),
        ("upstream access token", upstream_token.as_str()),
        ("client secret", d.emu.client_secret().expose_secret()),
        ("signing key", signing_key.as_str()),
    ];
    for (key, value) in &dump {
        let key = String::from_utf8_lossy(key);
        let text = String::from_utf8_lossy(value);
        assert!(key.starts_with("ocx:"), "{key}");
        assert!(
            text.starts_with("gAAAAA") && !text.contains("demo-user"),
            "{key} holds a value that is not a fernet token"
        );
        for (name, secret) in secrets {
            for part in secret.split('.').filter(|p| p.len() >= 8) {
                assert!(!key.contains(part), "the {name} in the key {key}");
                assert!(!text.contains(part), "the {name} in the value of {key}");
            }
        }
    }

    // A restarts: a new process, the same Redis and keys. The login lives on.
    drop(a);
    let a = d.replica().await;
    let (status, body) = d.mcp(&a, &access2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renewed = d.refresh(&a, &client_id, &refresh2).await;
    let access3 = secret_str(&renewed, "access_token");
    assert_eq!(d.mcp(&b, &access3).await.0, StatusCode::OK);
    assert!(a.store.encrypts_at_rest() && a.store.is_shared());

    // The rotated-out refresh token comes back on A: refused, and the login ends
    // on every replica (OAuth 2.1 section 4.3.1).
    let (status, _) = d
        .token(
            &a,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("refresh_token", &refresh),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // At once on A; on B once its remembered validation of the token (made by the
    // call above) has expired: the default validation cache TTL, 1 s.
    assert_eq!(d.mcp(&a, &access3).await.0, StatusCode::UNAUTHORIZED);
    d.clock.advance(Duration::from_secs(1));
    assert_eq!(d.mcp(&b, &access3).await.0, StatusCode::UNAUTHORIZED);

    // The code was used once, on A: B refuses it again.
    let (status, reused) = d
        .token(
            &b,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &redirect["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refresh_made_by_b_is_used_by_a() {
    let Some(d) = deployment(Duration::from_secs(300)).await else {
        return;
    };
    let a = d.replica().await;
    let b = d.replica().await;
    let client_id = d.register(&a).await;
    let (redirect, _) = d.login(&client_id, [&a, &a, &a, &a]).await;
    let tokens = d.redeem(&a, &client_id, &redirect["code"]).await;
    let access = secret_str(&tokens, "access_token");
    let (_, first) = d.mcp(&a, &access).await;

    // The upstream token nears its expiry: B refreshes it at the domain (the
    // domain rotates refresh tokens and refuses a used one).
    let refreshes = d.emu.counters().refresh_grants;
    d.clock.advance(Duration::from_secs(250));
    let (status, on_b) = d.mcp(&b, &access).await;
    assert_eq!(status, StatusCode::OK, "{on_b}");
    assert_ne!(on_b, first, "a new upstream token");
    assert_eq!(d.emu.counters().refresh_grants, refreshes + 1);
    // A reads the refreshed set from Redis: same token, no second refresh.
    let (status, on_a) = d.mcp(&a, &access).await;
    assert_eq!(status, StatusCode::OK, "{on_a}");
    assert_eq!(on_a, on_b);
    assert_eq!(d.emu.counters().refresh_grants, refreshes + 1);
}

#[tokio::test]
async fn a_wrong_encryption_key_makes_misses_not_errors() {
    let Some(d) = deployment(Duration::from_secs(3600)).await else {
        return;
    };
    let a = d.replica().await;
    let client_id = d.register(&a).await;
    let (redirect, _) = d.login(&client_id, [&a, &a, &a, &a]).await;
    let tokens = d.redeem(&a, &client_id, &redirect["code"]).await;
    let access = secret_str(&tokens, "access_token");

    // A replica configured with another key reads nothing: the login is unknown
    // to it (401), it does not crash or answer 500.
    let store = RedisStore::connect(&d.redis.url()).await.unwrap();
    let other_key = FernetKey::generate().unwrap().to_base64();
    let store = EncryptedStore::new(
        store,
        Fernet::from_env_value(other_key.expose_secret()).unwrap(),
    );
    let proxy = OAuthProxy::builder()
        .base_url(&d.base)
        .domain_url(d.emu.domain_url().as_str())
        .client_credentials(d.emu.client_id(), d.emu.client_secret().clone())
        .signing_key(SIGNING_KEY)
        .store(Arc::new(store))
        .clock(d.clock.clone())
        .build()
        .unwrap();
    let app = proxy.router().merge(
        Router::new()
            .route("/mcp", axum::routing::post(echo))
            .layer(proxy.bearer_auth().layer()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = d
        .http
        .post(format!("{addr}/mcp"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.abort();
    // The right key still reads it.
    assert_eq!(d.mcp(&a, &access).await.0, StatusCode::OK);
}

/// A store that claims to be shared, for the refusal without a Redis.
#[derive(Debug, Default)]
struct SharedPlain(MemoryStore);

impl Store for SharedPlain {
    fn get(&self, c: &str, k: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.0.get(c, k)
    }
    fn put(&self, c: &str, k: &str, v: Vec<u8>, ttl: Duration) -> StoreFuture<'_, ()> {
        self.0.put(c, k, v, ttl)
    }
    fn take(&self, c: &str, k: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.0.take(c, k)
    }
    fn delete(&self, c: &str, k: &str) -> StoreFuture<'_, ()> {
        self.0.delete(c, k)
    }
    fn put_if_absent(&self, c: &str, k: &str, v: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        self.0.put_if_absent(c, k, v, ttl)
    }
    fn delete_if_equal(&self, c: &str, k: &str, expected: &[u8]) -> StoreFuture<'_, bool> {
        self.0.delete_if_equal(c, k, expected)
    }
    fn is_shared(&self) -> bool {
        true
    }
}

fn builder_with(store: Arc<dyn Store>) -> oci_token_exchange::OAuthProxyBuilder {
    OAuthProxy::builder()
        .base_url("http://127.0.0.1:8000")
        .domain_url("http://127.0.0.1:1")
        .client_credentials("id", "secret")
        .signing_key(SIGNING_KEY)
        .store(store)
}

#[test]
fn the_proxy_refuses_a_shared_store_that_does_not_encrypt() {
    let err = builder_with(Arc::new(SharedPlain::default()))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("encrypt"), "{err}");
    builder_with(Arc::new(SharedPlain::default()))
        .allow_unencrypted_store()
        .build()
        .unwrap();
    let fernet = Fernet::new(FernetKey::generate().unwrap());
    builder_with(Arc::new(EncryptedStore::new(
        SharedPlain::default(),
        fernet,
    )))
    .build()
    .unwrap();
    builder_with(Arc::new(MemoryStore::default()))
        .build()
        .unwrap();
}

#[tokio::test]
async fn the_proxy_refuses_a_plain_redis_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let err = builder_with(store.clone()).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    builder_with(store)
        .allow_unencrypted_store()
        .build()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upstream_refreshes_on_two_replicas_keep_the_login() {
    let Some(d) = deployment(Duration::from_secs(300)).await else {
        return;
    };
    let a = d.replica().await;
    let b = d.replica().await;
    let client_id = d.register(&a).await;
    let (redirect, _) = d.login(&client_id, [&a, &a, &a, &a]).await;
    let tokens = d.redeem(&a, &client_id, &redirect["code"]).await;
    let access = secret_str(&tokens, "access_token");
    assert_eq!(d.mcp(&a, &access).await.0, StatusCode::OK);
    d.clock.advance(Duration::from_secs(250));
    // Both replicas find the upstream token near expiry at once; the domain rotates
    // refresh tokens and refuses a used one.
    let (on_a, on_b) = tokio::join!(d.mcp(&a, &access), d.mcp(&b, &access));
    assert_eq!(on_a.0, StatusCode::OK, "{}", on_a.1);
    assert_eq!(on_b.0, StatusCode::OK, "{}", on_b.1);
    assert_eq!(
        d.mcp(&a, &access).await.0,
        StatusCode::OK,
        "the login lives on"
    );
}
