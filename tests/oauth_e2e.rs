//! The OAuth proxy end to end: the example server in proxy mode (a process), an MCP
//! client using rmcp's own OAuth support (discovery, dynamic client registration,
//! PKCE), a cookie-keeping "browser" that walks the consent page and the identity
//! domain's login, and the emulator as the identity domain and OCI.
#![cfg(all(feature = "oauth-proxy", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{Emulator, UserTokenOptions};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// The redirect URI the test's MCP client registers (never connected to: the test's
/// "browser" stops at the redirect and hands its URL to the client).
const CLIENT_REDIRECT: &str = "http://127.0.0.1:33418/callback";
/// The server's token-signing secret in these tests.
const SIGNING_KEY: &str = "e2e-signing-key-0123456789-abcdefghijklmnop";

/// The example server as a child process; killed on drop. Its stderr is kept.
struct Server {
    child: Child,
    base: String,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A free loopback port (the server must know its public URL before it binds).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example in proxy mode at a fresh port; `emulator` = `None` lets the example
/// start its own emulator (the README's command).
fn proxy_command(emulator: Option<&Emulator>, port: u16) -> Command {
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(common::example("mcp_server"));
    command
        .env("MCP_BASE_URL", &base)
        .env("MCP_BIND", format!("127.0.0.1:{port}"))
        // Not a test of bursts: a small key pool keeps each start cheap.
        .env("MCP_KEY_POOL", "2")
        .env_remove("MCP_AUDIENCE")
        .env_remove("MCP_CONSENT")
        .env_remove("MCP_STORAGE")
        .env_remove("MCP_ALLOWED_REDIRECT_URIS")
        .env_remove("OCI_DOMAIN_URL")
        .env("RUST_LOG", "oci_token_exchange=trace,info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(emulator) = emulator {
        command
            .env("OCI_DOMAIN_URL", emulator.domain_url().as_str())
            .env("OCI_CLIENT_ID", emulator.client_id())
            .env(
                "OCI_CLIENT_SECRET",
                emulator.client_secret().expose_secret(),
            )
            .env("OCI_API_BASE", emulator.api_url().as_str())
            .env("MCP_JWT_SIGNING_KEY", SIGNING_KEY);
    }
    command
}

fn spawn(command: Command, port: u16) -> Server {
    spawn_for(command, &format!("http://127.0.0.1:{port}"))
}

/// Starts a server whose public origin is `base` (another replica's, behind a
/// "load balancer" that is the test itself).
fn spawn_for(mut command: Command, base: &str) -> Server {
    let mut child = command.spawn().expect("server starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().expect("stderr");
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0_u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("the server exited: {}", stderr.lock().unwrap());
        };
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    let base = base.to_owned();
    assert_eq!(url, format!("{base}/mcp"));
    Server {
        child,
        base,
        url,
        stderr,
    }
}

/// The emulator as the identity domain, with the proxy's callback registered.
async fn domain(port: u16, user: &str) -> Emulator {
    Emulator::builder()
        .redirect_uri(format!("http://127.0.0.1:{port}/auth/callback"))
        .login_subject(user)
        .start()
        .await
        .unwrap()
}

/// A browser: follows nothing by itself, keeps cookies (by name; every server here is
/// on 127.0.0.1, and cookies ignore ports).
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// Every page body seen, to check what the browser was shown.
    pages: Vec<String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            pages: Vec::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies
                .insert(name.trim().to_owned(), value.to_owned());
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let mut request = request;
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.expect("request");
        self.keep_cookies(&response);
        response
    }

    /// Follows redirects from `url` until one leaves for `stop_prefix` (returned) or a
    /// page is shown (its response returned as `Err`). At most 10 hops.
    async fn follow(
        &mut self,
        mut response: reqwest::Response,
        stop_prefix: &str,
    ) -> Result<String, (u16, String)> {
        for _ in 0..10 {
            if !response.status().is_redirection() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                self.pages.push(body.clone());
                return Err((status, body));
            }
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let next = response.url().join(&location).unwrap().to_string();
            if next.starts_with(stop_prefix) {
                return Ok(next);
            }
            response = self.send(self.http.get(&next)).await;
        }
        panic!("more than 10 redirects");
    }

    /// Opens the authorization URL, answers the consent page with `action`, and
    /// returns the URL the client is finally sent to.
    async fn log_in(&mut self, authorization_url: &str, action: &str) -> String {
        let response = self.send(self.http.get(authorization_url)).await;
        let page_url = response.url().clone();
        let (status, page) = self
            .follow(response, CLIENT_REDIRECT)
            .await
            .expect_err("the consent page is shown");
        assert_eq!(status, 200, "{page}");
        let (action_url, mut fields) = form(&page);
        fields.push(("action".to_owned(), action.to_owned()));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        let response = self
            .send(
                self.http
                    .post(page_url.join(&action_url).unwrap())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body),
            )
            .await;
        self.follow(response, CLIENT_REDIRECT)
            .await
            .unwrap_or_else(|(status, page)| panic!("stopped at a page ({status}): {page}"))
    }
}

/// The consent page's form: its action and its hidden fields.
fn form(page: &str) -> (String, Vec<(String, String)>) {
    let start = page.find("<form").expect("a form");
    let form = &page[start..];
    let form = &form[..form.find("</form>").expect("a closed form")];
    let tag_end = form.find('>').unwrap();
    let action = attribute(&form[..tag_end], "action").unwrap_or_default();
    assert_eq!(
        attribute(&form[..tag_end], "method").map(|m| m.to_ascii_lowercase()),
        Some("post".to_owned())
    );
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap()];
        if attribute(tag, "type").as_deref() == Some("hidden") {
            fields.push((
                attribute(tag, "name").unwrap(),
                attribute(tag, "value").unwrap_or_default(),
            ));
        }
    }
    assert!(form.contains(r#"name="action" value="approve""#), "{form}");
    assert!(form.contains(r#"name="action" value="deny""#), "{form}");
    (action, fields)
}

/// A double-quoted attribute of an HTML tag, entity-decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn query(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// An MCP client's whole login, as rmcp does it: discovery from the server's URL,
/// registration, PKCE, the browser, the callback. Returns the connected client and the
/// access token it holds.
async fn log_in(server: &Server, browser: &mut Browser) -> (Client, String) {
    let mut oauth = OAuthState::new(server.url.as_str(), None)
        .await
        .expect("discovery");
    oauth
        .start_authorization(
            AuthorizationRequest::new(CLIENT_REDIRECT).with_client_name("oauth_e2e test client"),
        )
        .await
        .expect("registration and authorization URL");
    let authorization_url = oauth.get_authorization_url().await.unwrap();
    assert!(
        authorization_url.starts_with(&format!("{}/authorize?", server.base)),
        "{authorization_url}"
    );
    let redirected = browser.log_in(&authorization_url, "approve").await;
    let params = query(&redirected);
    assert!(params.contains_key("code"), "{redirected}");
    assert_eq!(params.get("iss"), Some(&server.base), "{redirected}");
    oauth
        .handle_callback_url(&redirected)
        .await
        .expect("the client accepts the code");
    let manager = oauth.into_authorization_manager().expect("authorized");
    let token = manager.get_access_token().await.unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        AuthClient::new(reqwest::Client::default(), manager),
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()),
    );
    let client = ().serve(transport).await.expect("the MCP client connects");
    (client, token)
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(map) = arguments {
        params = params.with_arguments(map);
    }
    let result: CallToolResult = client.call_tool(params).await.expect("tool call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result.structured_content.expect("structured result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_logs_in_through_the_proxy_and_calls_oci_as_the_user() {
    let port = free_port();
    let emulator = domain(port, "alice@example.com").await;
    let server = spawn(proxy_command(Some(&emulator), port), port);
    let mut browser = Browser::new();
    let (client, token) = log_in(&server, &mut browser).await;

    // The client holds the server's own token, never the domain's.
    let own = claims(&token);
    assert_eq!(own["iss"], server.base);
    assert_eq!(own["aud"], server.url);
    assert_eq!(own["sub"], "alice@example.com");
    assert_ne!(own["iss"], emulator.issuer());

    let who = call(&client, "whoami", json!({})).await;
    assert_eq!(who["subject"], "alice@example.com");
    assert_eq!(who["user_ocid"], Emulator::user_ocid("alice@example.com"));
    // Tools see the user's upstream token: its jti is not the proxy token's.
    assert_ne!(who["jti"], own["jti"]);
    for i in 0..3 {
        let get = call(&client, "oci_request", json!({"path": "/20160918/vcns"})).await;
        assert_eq!(get["status"], 200, "{get}");
        assert_eq!(
            get["body"]["principal"]["userId"],
            Emulator::user_ocid("alice@example.com")
        );
        let post = call(
            &client,
            "oci_request",
            json!({"method": "POST", "path": "/20160918/vcns", "body": {"n": i}}),
        )
        .await;
        assert_eq!(post["body"]["body"]["n"], i, "{post}");
    }
    client.cancel().await.unwrap();

    let counters = emulator.counters();
    assert_eq!(counters.logins, 1);
    assert_eq!(counters.code_grants, 1);
    assert_eq!(emulator.exchanges_for("alice@example.com"), 1);
    assert_eq!(counters.rejected_requests, 0);

    // Nothing secret in the server's logs (trace level for the crate).
    let logs = server.logs();
    assert!(!logs.is_empty());
    for secret in [
        token.as_str(),
        SIGNING_KEY,
        emulator.client_secret().expose_secret(),
    ] {
        common::assert_no_secret_in(&logs, secret);
    }
    for page in &browser.pages {
        common::assert_no_secret_in(page, emulator.client_secret().expose_secret());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_logged_in_in_turn_each_see_their_own_identity() {
    let port = free_port();
    let emulator = domain(port, "alice@example.com").await;
    let server = spawn(proxy_command(Some(&emulator), port), port);
    let (alice, _) = log_in(&server, &mut Browser::new()).await;
    emulator.set_login_subject("bob@example.com");
    let (bob, _) = log_in(&server, &mut Browser::new()).await;
    for _ in 0..2 {
        for (client, user) in [(&alice, "alice@example.com"), (&bob, "bob@example.com")] {
            let who = call(client, "whoami", json!({})).await;
            assert_eq!(who["subject"], user);
            assert_eq!(who["user_ocid"], Emulator::user_ocid(user));
        }
    }
    assert_eq!(emulator.exchanges_for("alice@example.com"), 1);
    assert_eq!(emulator.exchanges_for("bob@example.com"), 1);
}

/// The README's command: no domain configured, the example runs its own emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_its_own_emulator_the_example_logs_the_demo_user_in() {
    let port = free_port();
    let server = spawn(proxy_command(None, port), port);
    let (client, _) = log_in(&server, &mut Browser::new()).await;
    let who = call(&client, "whoami", json!({})).await;
    assert_eq!(who["subject"], "demo@example.com");
    let get = call(&client, "oci_request", json!({"path": "/20160918/vcns"})).await;
    assert_eq!(get["status"], 200, "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_reaches_the_client_as_access_denied() {
    let port = free_port();
    let emulator = domain(port, "alice@example.com").await;
    let server = spawn(proxy_command(Some(&emulator), port), port);
    let mut oauth = OAuthState::new(server.url.as_str(), None).await.unwrap();
    oauth
        .start_authorization(AuthorizationRequest::new(CLIENT_REDIRECT))
        .await
        .unwrap();
    let authorization_url = oauth.get_authorization_url().await.unwrap();
    let state = query(&authorization_url)["state"].clone();
    let redirected = Browser::new().log_in(&authorization_url, "deny").await;
    let params = query(&redirected);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(params.get("state"), Some(&state));
    assert!(!params.contains_key("code"));
    assert_eq!(emulator.counters().logins, 0, "the domain was never asked");
}

/// In proxy mode the server is the authorization server clients see, and the MCP
/// endpoint takes only its own tokens: a domain token sent directly is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_publishes_its_metadata_and_refuses_domain_tokens() {
    let port = free_port();
    let emulator = domain(port, "alice@example.com").await;
    let server = spawn(proxy_command(Some(&emulator), port), port);
    let http = reqwest::Client::new();

    let probe = http
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(
            emulator.mint_user_token_with(
                &UserTokenOptions::new("mallory@example.com").audience(server.url.as_str()),
            ),
        )
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 401);
    let challenge = probe.headers()["www-authenticate"].to_str().unwrap();
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", server.base);
    assert!(challenge.contains(&metadata_url), "{challenge}");

    let resource: Value = http
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resource["resource"], server.url);
    assert_eq!(resource["authorization_servers"], json!([server.base]));

    let metadata: Value = http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], server.base);
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
    ] {
        assert!(
            metadata[endpoint]
                .as_str()
                .is_some_and(|url| url.starts_with(&server.base)),
            "{endpoint}: {metadata}"
        );
    }
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert_eq!(emulator.counters().exchanges, 0);
}

/// With a real domain the server's token-signing secret is required, and a short one
/// is refused, without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_needs_a_signing_key_of_32_bytes() {
    let port = free_port();
    let emulator = domain(port, "alice@example.com").await;
    let mut missing = proxy_command(Some(&emulator), port);
    missing.env_remove("MCP_JWT_SIGNING_KEY");
    let output = missing.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MCP_JWT_SIGNING_KEY"), "{stderr}");

    let mut short = proxy_command(Some(&emulator), port);
    short.env("MCP_JWT_SIGNING_KEY", "too-short-secret-123");
    let output = short.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("32 bytes"), "{stderr}");
    assert!(!stderr.contains("too-short-secret-123"), "{stderr}");
}

/// Two replicas of the example on one Redis (`MCP_STORAGE`), as behind a load
/// balancer: a login made through replica A works on replica B and after A restarts,
/// and the user's OCI session is exchanged once for both. Redis holds nothing in
/// plaintext.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_logins_and_sessions_through_redis() {
    let Some(redis) = common::redis::RedisServer::start() else {
        return;
    };
    let fernet_key = oci_token_exchange::FernetKey::generate().unwrap();
    let fernet_key = fernet_key.to_base64();
    let (port_a, port_b) = (free_port(), free_port());
    let emulator = domain(port_a, "alice@example.com").await;
    let base = format!("http://127.0.0.1:{port_a}");
    let replica = |port: u16| {
        let mut command = proxy_command(Some(&emulator), port);
        command
            .env("MCP_BASE_URL", &base)
            .env("MCP_STORAGE", redis.url())
            .env("MCP_STORAGE_ENCRYPTION_KEY", fernet_key.expose_secret());
        command
    };
    let a = spawn_for(replica(port_a), &base);
    let mut browser = Browser::new();
    let (client_a, token) = log_in(&a, &mut browser).await;
    let who = call(&client_a, "whoami", json!({})).await;
    assert_eq!(who["subject"], "alice@example.com");

    // Replica B, reached directly: the token from A is good there.
    let b = spawn_for(replica(port_b), &base);
    let on_b = format!("http://127.0.0.1:{port_b}/mcp");
    let client_b = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(on_b.as_str()).auth_header(token.clone()),
        ))
        .await
        .expect("replica B accepts replica A's login");
    let who = call(&client_b, "whoami", json!({})).await;
    assert_eq!(who["subject"], "alice@example.com");
    let get = call(&client_b, "oci_request", json!({"path": "/20160918/vcns"})).await;
    assert_eq!(get["status"], 200, "{get}");
    assert_eq!(
        emulator.exchanges_for("alice@example.com"),
        1,
        "B used the session A stored"
    );
    client_b.cancel().await.unwrap();
    client_a.cancel().await.unwrap();

    // A restarts: the login survives.
    drop(a);
    let a = spawn_for(replica(port_a), &base);
    let client_a = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(a.url.as_str())
                .auth_header(token.clone()),
        ))
        .await
        .expect("the login survives a restart");
    let who = call(&client_a, "whoami", json!({})).await;
    assert_eq!(who["subject"], "alice@example.com");
    assert_eq!(emulator.exchanges_for("alice@example.com"), 1);
    assert_eq!(emulator.counters().logins, 1);

    // Nothing readable in Redis.
    let dump = redis_dump(&redis.url()).await;
    assert!(!dump.is_empty());
    for secret in [
        token.as_str(),
        SIGNING_KEY,
        emulator.client_secret().expose_secret(),
        fernet_key.expose_secret(),
        "alice@example.com",
    ] {
        common::assert_no_secret_in(&dump, secret);
    }
    drop(b);
}

/// Every key and value in Redis, as text.
#[cfg(feature = "redis")]
async fn redis_dump(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut dump = String::new();
    for key in keys {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap_or(None);
        dump.push_str(&key);
        dump.push('=');
        dump.push_str(&String::from_utf8_lossy(&value.unwrap_or_default()));
        dump.push('\n');
    }
    dump
}
