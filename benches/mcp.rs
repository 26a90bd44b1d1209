//! A warm `oci_request` tool call through the example MCP server, beside the same
//! signed request made directly, both against the emulator on loopback.
//!
//! - `mcp/oci_request_warm`: rmcp client -> example server (bearer validation,
//!   cached signer, signing) -> emulator control plane, session already exchanged;
//! - `mcp/oci_request_warm_stateless`: the same through the example server run with
//!   `MCP_STATELESS=on`: rmcp's `StreamableHttpServerConfig` with
//!   `legacy_session_mode: false` and `json_response: true` (no MCP session, each
//!   POST answered with one `application/json` body instead of an SSE stream).
//!   The bench stops with a message when the example does not honour the
//!   variable (its initialize answer still carries an `Mcp-Session-Id`);
//! - `mcp/oci_request_warm_pooled` and `mcp/oci_request_warm_stateless_pooled`: the
//!   same two with the rmcp client on a pooled `reqwest` client. rmcp's default
//!   client opens a TCP connection for every request (it turns pooling off against
//!   stalls on reused connections; the one seen here, 44 ms per stateful call, came
//!   from the server writing without `TCP_NODELAY`, which the example server now
//!   sets), so the two ids above pay a connect and an accept per call;
//! - `mcp/raw_oci_request_stateless` and `mcp/raw_whoami_stateless`: the stateless
//!   server's side alone: one JSON-RPC `tools/call` POSTed with a plain pooled
//!   `reqwest` client, no MCP client library. `whoami` makes no OCI call, so it is
//!   the floor of the server's MCP layers (HTTP, rmcp, bearer check, signer lookup);
//!   `oci_request` less `whoami` is the signed OCI call made from the server;
//! - `mcp/direct_signed_request`: sign with a ready session and send;
//! - `mcp/server_round_trip`: a GET of the example server's RFC 9728 metadata
//!   (no token, no tool, no OCI call): the floor a tool call pays for its extra hop
//!   (a second process, its wake-ups, HTTP both ways) before the server does any
//!   work.
//!
//! The example server is built in release mode and run as a child process.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oci_token_exchange::{
    Emulator, SecretString, TokenExchange, TokenExchangeSigner, UserTokenOptions,
};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

fn build_example() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--example",
            "mcp_server",
            "--features",
            "mcp,emulator",
            "--message-format=json",
        ])
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "mcp_server")
        .find_map(|m| m["executable"].as_str().map(Into::into))
        .expect("executable")
}

/// A running example server and its MCP URL.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(executable: &std::path::Path, emulator: &Emulator, stateless: bool) -> Server {
    let mut command = Command::new(executable);
    command
        .env("OCI_DOMAIN_URL", emulator.domain_url().as_str())
        .env("OCI_CLIENT_ID", emulator.client_id())
        .env(
            "OCI_CLIENT_SECRET",
            emulator.client_secret().expose_secret(),
        )
        .env("OCI_API_BASE", emulator.api_url().as_str())
        .env("MCP_BIND", "127.0.0.1:0")
        .env("MCP_AUDIENCE", "https://mcp.example.com/")
        .env_remove("MCP_STATELESS")
        // Two users' worth of keys: the default pool's 48 would compete for the
        // cores while the measurement runs.
        .env("MCP_KEY_POOL", "2")
        .stdout(Stdio::piped());
    if stateless {
        command.env("MCP_STATELESS", "on");
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    Server { child, url }
}

/// Whether the server at `url` answers an initialize without an MCP session, in
/// one JSON body.
async fn is_stateless(url: &str, token: &str) -> bool {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "probe", "version": "0"}}
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.headers().get("mcp-session-id").is_none()
        && response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ()>;

/// An rmcp client of `url`: rmcp's default (a connection per request) or, when
/// `pooled`, one on a pooled `reqwest` client that follows no redirects.
async fn connect(url: &str, token: &str, pooled: bool) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token.to_owned());
    let transport = if pooled {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        StreamableHttpClientTransport::with_client(http, config)
    } else {
        StreamableHttpClientTransport::from_config(config)
    };
    ().serve(transport).await.unwrap()
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The emulator stands for OCI, another host: it runs on a runtime of its own, so
    // a request reaches it through a wake-up of another thread, as the example
    // server's requests reach it through another process. (On the client's runtime,
    // the direct request would be served by the thread that sent it.)
    let emulator_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = emulator_runtime.block_on(Emulator::start()).unwrap();
    let executable = build_example();
    let stateful = start_server(&executable, &emulator, false);
    let stateless = start_server(&executable, &emulator, true);
    let token = emulator.mint_user_token_with(
        &UserTokenOptions::new("bench@example.com").audience("https://mcp.example.com/"),
    );
    assert!(
        runtime.block_on(is_stateless(&stateless.url, &token)),
        "the example server ignored MCP_STATELESS=on: its initialize answer carries an \
         Mcp-Session-Id or an SSE stream"
    );
    let client = runtime.block_on(connect(&stateful.url, &token, false));
    let stateless_client = runtime.block_on(connect(&stateless.url, &token, false));
    let pooled = runtime.block_on(connect(&stateful.url, &token, true));
    let stateless_pooled = runtime.block_on(connect(&stateless.url, &token, true));
    let instances = json!({"path": "/20160918/instances"});
    let args = instances.as_object().cloned().unwrap();
    let call = |client: &Client| {
        runtime.block_on(async {
            let result = client
                .call_tool(CallToolRequestParams::new("oci_request").with_arguments(args.clone()))
                .await
                .unwrap();
            assert_eq!(result.structured_content.as_ref().unwrap()["status"], 200);
        });
    };
    call(&client); // warm: the exchange happens here
    call(&stateless_client);
    call(&pooled);
    call(&stateless_pooled);

    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .unwrap();
    let signer = TokenExchangeSigner::builder(exchange)
        .subject_token(SecretString::new(token.clone()))
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let api = emulator.api_url().join("/20160918/instances").unwrap();
    let direct = || {
        runtime.block_on(async {
            let mut request = http.get(api.clone()).build().unwrap();
            signer.sign_reqwest(&mut request).await.unwrap();
            assert_eq!(http.execute(request).await.unwrap().status(), 200);
        });
    };
    direct();
    let metadata = {
        let mut url = reqwest::Url::parse(&stateless.url).unwrap();
        let path = format!("/.well-known/oauth-protected-resource{}", url.path());
        url.set_path(&path);
        url
    };
    let round_trip = || {
        runtime.block_on(async {
            let response = http.get(metadata.clone()).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        });
    };
    round_trip();
    let raw = |name: &str, arguments: serde_json::Value| {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                          "params": {"name": name, "arguments": arguments}});
        runtime.block_on(async {
            let response = http
                .post(&stateless.url)
                .bearer_auth(&token)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                status.is_success() && text.contains("\"result\""),
                "{status} {text}"
            );
        });
    };
    raw("oci_request", instances.clone());
    raw("whoami", json!({}));

    let mut group = c.benchmark_group("mcp");
    group
        .sample_size(200)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("oci_request_warm", |b| b.iter(|| call(&client)));
    group.bench_function("oci_request_warm_stateless", |b| {
        b.iter(|| call(&stateless_client));
    });
    group.bench_function("oci_request_warm_pooled", |b| b.iter(|| call(&pooled)));
    group.bench_function("oci_request_warm_stateless_pooled", |b| {
        b.iter(|| call(&stateless_pooled));
    });
    group.bench_function("direct_signed_request", |b| b.iter(direct));
    group.bench_function("server_round_trip", |b| b.iter(round_trip));
    group.bench_function("raw_oci_request_stateless", |b| {
        b.iter(|| raw("oci_request", instances.clone()));
    });
    group.bench_function("raw_whoami_stateless", |b| {
        b.iter(|| raw("whoami", json!({})));
    });
    group.finish();
    assert_eq!(
        emulator.exchanges_for("bench@example.com"),
        3,
        "one exchange per server and one direct, all warm"
    );
    drop(stateful);
    drop(stateless);
}

criterion_group!(mcp, benches);
criterion_main!(mcp);
