//! The crate's emulator (an identity domain and the OCI control plane on 127.0.0.1)
//! as a standalone process, for servers and load drivers in other processes or
//! languages (e.g. `benches/compare/`).
//!
//! Reads `EMULATOR_REDIRECT_URIS` (comma-separated redirect URIs of the emulated
//! confidential app; none means no browser login succeeds) and `EMULATOR_BIND`
//! (optional; only `127.0.0.1:0` is supported: the emulator always binds a free
//! loopback port). Prints, one per line on stdout:
//!
//! ```text
//! domain: http://127.0.0.1:PORT/
//! api: http://127.0.0.1:PORT/
//! client_id: emulator-client
//! client_secret: emulator-secret
//! ```
//!
//! then serves until killed. Logs go to stderr, filtered by `RUST_LOG` (default
//! `info`).
//!
//! ```text
//! EMULATOR_REDIRECT_URIS=http://127.0.0.1:8000/auth/callback \
//!     cargo run --example emulator --features emulator
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use oci_token_exchange::Emulator;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match var("EMULATOR_BIND").as_deref() {
        None | Some("127.0.0.1:0") => {}
        Some(_) => {
            return Err(
                "EMULATOR_BIND: the emulator binds a free loopback port; only 127.0.0.1:0 \
                 is supported"
                    .into(),
            );
        }
    }
    let mut builder = Emulator::builder();
    for uri in var("EMULATOR_REDIRECT_URIS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|uri| !uri.is_empty())
    {
        builder = builder.redirect_uri(uri);
    }
    let emulator = builder.start().await?;
    tracing::info!(domain = %emulator.domain_url(), "emulator listening");
    println!("domain: {}", emulator.domain_url());
    println!("api: {}", emulator.api_url());
    println!("client_id: {}", emulator.client_id());
    // The emulator's fixed demo secret (`emulator-secret` unless configured), not a
    // real credential: printing it is how clients in other processes learn it.
    println!(
        "client_secret: {}",
        emulator.client_secret().expose_secret()
    );
    std::future::pending::<()>().await;
    drop(emulator);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emulator: {e}");
            ExitCode::from(2)
        }
    }
}
