//! A warm `oci_request` tool call through the example MCP server, beside the same
//! signed request made directly, both against the emulator on loopback.
//!
//! - `mcp/oci_request_warm`: rmcp client -> example server (bearer validation,
//!   cached signer, signing) -> emulator control plane, session already exchanged;
//! - `mcp/direct_signed_request`: sign with a ready session and send.
//!
//! The example server is built in release mode and run as a child process.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
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

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime.block_on(Emulator::start()).unwrap();
    let mut server = Command::new(build_example())
        .env("OCI_DOMAIN_URL", emulator.domain_url().as_str())
        .env("OCI_CLIENT_ID", emulator.client_id())
        .env(
            "OCI_CLIENT_SECRET",
            emulator.client_secret().expose_secret(),
        )
        .env("OCI_API_BASE", emulator.api_url().as_str())
        .env("MCP_BIND", "127.0.0.1:0")
        .env("MCP_AUDIENCE", "https://mcp.example.com/")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    let token = emulator.mint_user_token_with(
        &UserTokenOptions::new("bench@example.com").audience("https://mcp.example.com/"),
    );
    let client = runtime.block_on(async {
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(token.clone());
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap()
    });
    let args = json!({"path": "/20160918/instances"})
        .as_object()
        .cloned()
        .unwrap();
    let call = || {
        runtime.block_on(async {
            let result = client
                .call_tool(CallToolRequestParams::new("oci_request").with_arguments(args.clone()))
                .await
                .unwrap();
            assert_eq!(result.structured_content.as_ref().unwrap()["status"], 200);
        });
    };
    call(); // warm: the exchange happens here

    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .unwrap();
    let signer = TokenExchangeSigner::builder(exchange)
        .subject_token(SecretString::new(token))
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

    let mut group = c.benchmark_group("mcp");
    group
        .sample_size(200)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("oci_request_warm", |b| b.iter(call));
    group.bench_function("direct_signed_request", |b| b.iter(direct));
    group.finish();
    assert_eq!(
        emulator.exchanges_for("bench@example.com"),
        2,
        "one exchange each, both warm"
    );
    let _ = server.kill();
    let _ = server.wait();
}

criterion_group!(mcp, benches);
criterion_main!(mcp);
