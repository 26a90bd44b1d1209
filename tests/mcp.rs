//! The MCP adapter end to end: the example server (run as a process) between an
//! rmcp client with bearer tokens and the emulator; and the bearer layer alone.
#![cfg(all(feature = "mcp", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{
    AccessToken, BearerAuth, Clock as _, Emulator, SystemClock, UserTokenOptions,
};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// The example server as a child process; killed on drop.
struct Server {
    child: Child,
    url: String,
    origin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The audience the example server is started with, and that test tokens carry.
const AUDIENCE: &str = "https://mcp.example.com/";

/// A user token for the example server (`aud` = [`AUDIENCE`]).
fn user_token(emulator: &Emulator, subject: &str) -> String {
    emulator.mint_user_token_with(&UserTokenOptions::new(subject).audience(AUDIENCE))
}

/// The example server in real mode (the emulator posing as a real domain), with
/// `MCP_AUDIENCE` set to `audience` when given.
fn server_command(emulator: &Emulator, audience: Option<&str>) -> Command {
    let mut command = Command::new(common::example("mcp_server"));
    command
        .env("OCI_DOMAIN_URL", emulator.domain_url().as_str())
        .env("OCI_CLIENT_ID", emulator.client_id())
        .env(
            "OCI_CLIENT_SECRET",
            emulator.client_secret().expose_secret(),
        )
        .env("OCI_API_BASE", emulator.api_url().as_str())
        .env("MCP_BIND", "127.0.0.1:0")
        .env_remove("MCP_AUDIENCE")
        // A small key pool: these tests are not about bursts of new users, and the
        // default 48 keys would cost seconds of CPU at each start.
        .env("MCP_KEY_POOL", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(audience) = audience {
        command.env("MCP_AUDIENCE", audience);
    }
    command
}

fn start_server(emulator: &Emulator) -> Server {
    let mut command = server_command(emulator, Some(AUDIENCE));
    let mut child = command.spawn().expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server prints its address")
            .expect("utf-8");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    let origin = url.trim_end_matches("/mcp").to_owned();
    Server { child, url, origin }
}

async fn connect(
    server: &Server,
    token: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("client connects")
}

fn structured(result: &CallToolResult) -> &Value {
    result
        .structured_content
        .as_ref()
        .expect("structured result")
}

async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &'static str,
    arguments: Value,
) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(map) = arguments {
        params = params.with_arguments(map);
    }
    client.call_tool(params).await.expect("tool call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_see_their_own_identity_with_one_exchange_each() {
    let emulator = Emulator::start().await.unwrap();
    let server = start_server(&emulator);
    for user in ["alice@example.com", "bob@example.com"] {
        let token = user_token(&emulator, user);
        let client = connect(&server, &token).await;
        for i in 0..3 {
            let who = call(&client, "whoami", json!({})).await;
            assert_ne!(who.is_error, Some(true), "{who:?}");
            let who = structured(&who);
            assert_eq!(who["subject"], user);
            assert_eq!(who["user_ocid"], Emulator::user_ocid(user));
            assert_eq!(
                who["tenancy_ocid"],
                oci_token_exchange::EMULATOR_TENANCY_OCID
            );
            assert!(who["jti"].is_string());
            // RFC 3339, as OCI's APIs write timestamps: 2026-11-30T04:00:00Z.
            let expires = who["upst_expires_at"].as_str().unwrap();
            assert!(
                expires.len() == 20 && expires.ends_with('Z') && &expires[10..11] == "T",
                "{expires}"
            );

            let get = call(
                &client,
                "oci_request",
                json!({"path": "/20160918/instances?limit=5"}),
            )
            .await;
            let get = structured(&get);
            assert_eq!(get["status"], 200, "{get}");
            assert_eq!(
                get["body"]["principal"]["userId"],
                Emulator::user_ocid(user)
            );
            let post = call(
                &client,
                "oci_request",
                json!({"method": "POST", "path": "/20160918/vcns", "body": {"n": i}}),
            )
            .await;
            let post = structured(&post);
            assert_eq!(post["status"], 200, "{post}");
            assert_eq!(post["body"]["body"]["n"], i);
        }
        client.cancel().await.unwrap();
    }
    assert_eq!(emulator.exchanges_for("alice@example.com"), 1);
    assert_eq!(emulator.exchanges_for("bob@example.com"), 1);
    assert_eq!(emulator.counters().rejected_requests, 0);

    // OCI refusing the session once: the tool gets a fresh one and succeeds.
    let client = connect(&server, &user_token(&emulator, "carol@example.com")).await;
    emulator.reject_next_session_tokens(1);
    let result = call(&client, "oci_request", json!({"path": "/20160918/vcns"})).await;
    assert_eq!(structured(&result)["status"], 200);
    assert_eq!(emulator.exchanges_for("carol@example.com"), 2);
}

/// Against a real domain, a server without an audience would accept any token the
/// domain issued for any application: the example refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_without_an_audience_exits_2_with_a_clear_message() {
    let emulator = Emulator::start().await.unwrap();
    let output = server_command(&emulator, None)
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MCP_AUDIENCE is required"), "{stderr}");
    assert!(!stderr.contains(emulator.client_secret().expose_secret()));
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_pool_size_exits_2_with_a_clear_message() {
    let emulator = Emulator::start().await.unwrap();
    for bad in ["many", "-1", "257"] {
        let mut child = server_command(&emulator, Some(AUDIENCE))
            .env("MCP_KEY_POOL", bad)
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        // Bounded: a server that accepted the value would serve until killed.
        let mut waited = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            waited += 1;
            if waited > 300 {
                child.kill().unwrap();
                panic!("MCP_KEY_POOL={bad}: the server did not exit within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "MCP_KEY_POOL={bad}");
        assert!(stderr.contains("MCP_KEY_POOL must be a number"), "{stderr}");
    }
}

/// POSTs an MCP initialize with `authorization` (if any); returns status and challenge.
async fn probe(server: &Server, authorization: Option<String>) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), challenge)
}

fn now_secs() -> u64 {
    #[allow(clippy::disallowed_methods)] // the emulator's tokens use the real clock here
    SystemClock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bearer_tokens_are_refused_with_a_challenge() {
    let emulator = Emulator::start().await.unwrap();
    let server = start_server(&emulator);
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        server.origin
    );

    let (status, challenge) = probe(&server, None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.unwrap(), format!("Bearer {metadata}"));

    let good = emulator
        .mint_user_token_with(&UserTokenOptions::new("u").audience("https://mcp.example.com/"));
    let other = emulator
        .mint_user_token_with(&UserTokenOptions::new("v").audience("https://mcp.example.com/"));
    let forged = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        other.rsplit_once('.').unwrap().1
    );
    let expired = emulator.mint_user_token_with(
        &UserTokenOptions::new("u")
            .audience("https://mcp.example.com/")
            .claim("exp", json!(now_secs() - 3600)),
    );
    let wrong_audience = emulator
        .mint_user_token_with(&UserTokenOptions::new("u").audience("https://other.example/"));
    for (what, token) in [
        ("bad signature", forged),
        ("expired", expired),
        ("wrong audience", wrong_audience),
    ] {
        let (status, challenge) = probe(&server, Some(format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{what}");
        let challenge = challenge.unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(challenge.ends_with(&metadata), "{what}: {challenge}");
    }
    let (status, _) = probe(&server, Some("Basic dXNlcjpwdw==".into())).await;
    assert_eq!(status, 401);
    let (status, _) = probe(&server, Some(format!("Bearer {good}"))).await;
    assert_eq!(status, 200, "the good token passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_between_calls_gets_the_reauth_signal() {
    let emulator = Emulator::start().await.unwrap();
    let server = start_server(&emulator);
    let token = emulator.mint_user_token_with(
        &UserTokenOptions::new("dora")
            .audience(AUDIENCE)
            .ttl(Duration::from_secs(2)),
    );
    let client = connect(&server, &token).await;
    let first = call(&client, "whoami", json!({})).await;
    assert_eq!(structured(&first)["user_ocid"], Emulator::user_ocid("dora"));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Within the bearer check's 30 s leeway, but past the token's exp for OCI.
    let second = call(&client, "oci_request", json!({"path": "/20160918/vcns"})).await;
    assert_eq!(second.is_error, Some(true));
    assert_eq!(
        structured(&second)["error"],
        "reauthentication_required",
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_is_served() {
    let emulator = Emulator::start().await.unwrap();
    let server = start_server(&emulator);
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = reqwest::get(format!("{}{path}", server.origin))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let doc: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(doc["resource"], server.url);
        assert_eq!(
            doc["authorization_servers"],
            json!([emulator.domain_url().as_str().trim_end_matches('/')])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
}

/// The layer alone, in front of a handler that echoes the caller's token.
async fn layer_app(auth: &BearerAuth) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|request: axum::extract::Request| async move {
            let token = request
                .extensions()
                .get::<AccessToken>()
                .cloned()
                .expect("validated token");
            format!(
                "{} {}",
                token.subject().unwrap_or("?"),
                token.scopes().join(",")
            )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scopes_get_403_and_bogus_kids_cannot_hammer_the_domain() {
    let emulator = Emulator::start().await.unwrap();
    let auth = BearerAuth::builder()
        .domain_url(emulator.domain_url().as_str())
        .resource("http://127.0.0.1:1/mcp")
        .allow_any_audience()
        .required_scopes(["oci:read"])
        .build()
        .unwrap();
    let url = layer_app(&auth).await;
    let http = reqwest::Client::new();
    let post = |token: String| http.post(&url).bearer_auth(token).send();

    let scoped =
        emulator.mint_user_token_with(&UserTokenOptions::new("eli").scope("openid oci:read"));
    let response = post(scoped).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "eli openid,oci:read");

    let unscoped = emulator.mint_user_token_with(&UserTokenOptions::new("eli").scope("openid"));
    let response = post(unscoped.clone()).await.unwrap();
    assert_eq!(response.status(), 403);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"oci:read\""), "{challenge}");

    // Unsigned tokens ("c2ln") naming unknown keys, with the claims of one of the
    // emulator's tokens issued at a chosen time.
    let naming = |kid: &str, issued: SystemTime| {
        let iat = issued.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let token =
            emulator.mint_user_token_with(&UserTokenOptions::new("eli").claim("iat", json!(iat)));
        let payload = token.split('.').nth(1).unwrap().to_owned();
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#));
        format!("{header}.{payload}.c2ln")
    };
    // 50 issued before the keys were fetched: refused (401), and not one JWKS
    // fetch more within the refetch interval.
    let before = SystemClock.now() - Duration::from_secs(600);
    for i in 0..50 {
        let response = post(naming(&format!("bogus-{i}"), before)).await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let counters = emulator.counters();
    assert_eq!(
        counters.jwks_requests, 1,
        "keys fetched once, then rate-limited: {counters:?}"
    );
    // One that says it was issued an hour from now (beyond the leeway): forged,
    // refused like the old ones, no fetch.
    let forged = naming("forged", SystemClock.now() + Duration::from_secs(3600));
    assert_eq!(post(forged).await.unwrap().status(), 401);
    assert_eq!(emulator.counters().jwks_requests, 1);
    // Ones that say they were issued after the keys were fetched (perhaps with a
    // key published since): 503 with Retry-After, to try again, and at most one
    // fetch per 5 s.
    let started = tokio::time::Instant::now();
    let later = SystemClock.now() + Duration::from_secs(2);
    for i in 0..20 {
        let response = post(naming(&format!("new-{i}"), later)).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
    }
    let counters = emulator.counters();
    let allowed = 2 + started.elapsed().as_secs() / 5;
    assert!(counters.jwks_requests <= allowed, "{counters:?}");

    // Without an audience, building fails unless any audience is explicitly allowed.
    let err = BearerAuth::builder()
        .domain_url(emulator.domain_url().as_str())
        .resource("http://127.0.0.1:1/mcp")
        .build()
        .expect_err("audience required");
    assert_eq!(err.kind(), oci_token_exchange::ErrorKind::InvalidConfig);

    // A domain that cannot be reached: 503 (not "invalid token"), again within the
    // refetch interval.
    let down = BearerAuth::builder()
        .domain_url("http://127.0.0.1:9")
        .resource("http://127.0.0.1:1/mcp")
        .allow_any_audience()
        .build()
        .unwrap();
    let down_url = layer_app(&down).await;
    for _ in 0..2 {
        let response = http
            .post(&down_url)
            .bearer_auth(emulator.mint_user_token("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }

    let err = auth.validate("not-a-token").await.expect_err("garbage");
    assert!(!err.to_string().contains("not-a-token"));
}

mod stdio {
    use oci_token_exchange::{AccessToken, OptionalAccessToken};
    use rmcp::handler::server::router::tool::ToolRouter;
    use rmcp::model::{CallToolRequestParams, ServerCapabilities, ServerConfig};
    use rmcp::{ServerHandler, ServiceExt as _, tool, tool_handler, tool_router};

    #[derive(Clone)]
    struct Tools {
        tool_router: ToolRouter<Self>,
    }

    #[tool_router]
    impl Tools {
        #[tool(description = "needs a token")]
        async fn strict(&self, token: AccessToken) -> String {
            token.subject().unwrap_or_default().to_owned()
        }

        #[tool(description = "takes a token if there is one")]
        async fn optional(&self, OptionalAccessToken(token): OptionalAccessToken) -> String {
            format!("token present: {}", token.is_some())
        }
    }

    #[tool_handler(router = self.tool_router)]
    impl ServerHandler for Tools {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }
    }

    /// Over a byte stream (as over stdio) there is no HTTP request, so no token.
    #[tokio::test]
    async fn without_http_the_extractors_say_no_token() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let running = Tools {
                tool_router: Tools::tool_router(),
            }
            .serve(tokio::io::split(server_io))
            .await
            .expect("server");
            let _ = running.waiting().await;
        });
        let client = ().serve(tokio::io::split(client_io)).await.expect("client");
        let err = client
            .call_tool(CallToolRequestParams::new("strict"))
            .await
            .expect_err("no token");
        assert!(err.to_string().contains("no authenticated user"), "{err}");
        let optional = client
            .call_tool(CallToolRequestParams::new("optional"))
            .await
            .expect("ok");
        let text = format!("{:?}", optional.content);
        assert!(text.contains("token present: false"), "{text}");
        client.cancel().await.expect("closes");
        server.abort();
    }
}
