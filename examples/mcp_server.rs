//! An MCP server whose tools call OCI as the user who logged in.
//!
//! Streamable HTTP at `http://$MCP_BIND/mcp` (default `127.0.0.1:8000`). Set
//! `OCI_DOMAIN_URL`, `OCI_CLIENT_ID`, `OCI_CLIENT_SECRET`, `OCI_API_BASE` and
//! `MCP_AUDIENCE` (required with a real domain: the `aud` that tokens for this server
//! carry); with no `OCI_DOMAIN_URL` it starts the emulator and prints a demo bearer
//! token. Bearer tokens are validated through the domain's discovery document; a
//! missing, invalid or expired one gets 401 with
//! `WWW-Authenticate: Bearer resource_metadata="..."`. Logs go to stderr, filtered
//! by `RUST_LOG` (default `info`).
//!
//! Tools: `whoami` and `oci_request {method?, path, body?}`.
//!
//! ```text
//! cargo run --example mcp_server --features mcp,emulator
//! ```
//!
//! OAuth-proxy mode (feature `oauth-proxy`), on when `MCP_BASE_URL` is set: the server
//! is also the authorization server MCP clients see (discovery, dynamic client
//! registration, PKCE, a consent page) and logs users in at the identity domain; the
//! confidential app's redirect URL is `$MCP_BASE_URL/auth/callback`. Also read:
//! `MCP_JWT_SIGNING_KEY` (at least 32 bytes; required with a real domain),
//! `MCP_ALLOWED_REDIRECT_URIS` (comma-separated patterns; default loopback `http`),
//! `MCP_CONSENT` (`on` or `off`), `MCP_STORAGE` (`memory`, or with feature `redis`
//! `redis://[user:password@]host[:port][/db]` or `rediss://...`: logins shared by
//! replicas and kept across restarts) and `MCP_STORAGE_ENCRYPTION_KEY` (required with
//! Redis: Fernet keys as made by Python's `Fernet.generate_key()`, comma-separated,
//! the first encrypts). On the emulator:
//!
//! ```text
//! MCP_BASE_URL=http://127.0.0.1:8000 cargo run --example mcp_server --features oauth-proxy,emulator
//! ```
//!
//! then point an MCP client (the MCP Inspector, Claude Code, VS Code) at
//! `http://127.0.0.1:8000/mcp`: it registers, opens the consent page in a browser and
//! the emulator logs the demo user in.
//!
//! `MCP_STATELESS` (`on` or `off`, default `off`): with `on`, rmcp's stateless mode
//! with JSON responses. Each POST is answered on its own with
//! `Content-Type: application/json`: no `Mcp-Session-Id`, no session table, no SSE
//! stream per request, so a warm tool call costs less (no session lookup, no SSE
//! framing, no per-session task) and any replica can answer any request without
//! sticky sessions. The price: no server-initiated messages (no progress, logging or
//! sampling requests back to the client, no `GET` stream, no resumption after a
//! dropped connection), and the client's `initialize` is not remembered, so the
//! server cannot tell one client's requests from another's except by their tokens.
//! The tools here need none of that. Keep `off` for servers whose tools send
//! notifications or ask the client anything.
//!
//! Every connection is served with `TCP_NODELAY` (`support::serve`). rmcp writes a
//! stateful session's answer as SSE events; with Nagle's algorithm on, a client that
//! keeps its connection waits for its own delayed ACK, about 44 ms per tool call.
//! Serve your own server the same way. On the client side, rmcp's default client
//! opens a TCP connection for every request (it turns pooling off against stalls
//! on reused connections): `StreamableHttpClientTransport::with_client` with a
//! `reqwest::Client` built with `redirect(Policy::none())` (rmcp's own follows
//! only same-origin 307 and 308) keeps them, which saves a connect and an accept
//! per call.
//!
//! `MCP_KEY_POOL` (default 48): the session keys kept ready for new users, generated
//! in the background from start-up; the pool grows to 256 when a burst drains it and
//! shrinks back after 5 idle minutes. Lower it where memory or start-up CPU matters
//! more than a burst of new users (each key holds about 4.5 KiB and takes about 50 ms
//! of one core to generate).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/server.rs"]
#[allow(dead_code, reason = "the load driver reads what this server does not")]
mod support;

use std::process::ExitCode;
use std::sync::Arc;

use oci_token_exchange::{KeyPool, Store};

use support::{BoxError, ProxySettings, Settings};

/// The user the emulator logs in (proxy mode) or mints a token for (bearer mode).
#[cfg(feature = "emulator")]
const DEMO_USER: &str = "demo@example.com";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn run() -> Result<(), BoxError> {
    let bind = var("MCP_BIND").unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let stateless = match var("MCP_STATELESS").as_deref() {
        None | Some("off") => false,
        Some("on") => true,
        Some(_) => return Err("MCP_STATELESS must be `on` or `off`".into()),
    };
    let mut key_pool = KeyPool::builder();
    if let Some(floor) = var("MCP_KEY_POOL") {
        let floor = floor
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= KeyPool::DEFAULT_CEILING)
            .ok_or_else(|| {
                format!(
                    "MCP_KEY_POOL must be a number of keys from 0 to {}",
                    KeyPool::DEFAULT_CEILING
                )
            })?;
        key_pool = key_pool.floor(floor);
    }
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let address = listener.local_addr()?;
    let base_url = var("MCP_BASE_URL").map(|base| base.trim_end_matches('/').to_owned());
    #[cfg(not(feature = "oauth-proxy"))]
    if base_url.is_some() {
        return Err("MCP_BASE_URL (OAuth-proxy mode) needs the `oauth-proxy` feature".into());
    }
    let resource = match &base_url {
        Some(base) => format!("{base}/mcp"),
        None => format!("http://{address}/mcp"),
    };
    // Without a real domain, the emulator plays the identity domain and OCI.
    #[cfg(feature = "emulator")]
    let mut _emulator = None;
    let (domain_url, client_id, client_secret, api_base, audience) = match var("OCI_DOMAIN_URL") {
        Some(domain) => {
            let required = |name: &str| var(name).ok_or_else(|| format!("{name} is not set"));
            // In proxy mode the server validates its own tokens; the audience is for
            // domain tokens sent directly (bearer mode).
            let audience = match var("MCP_AUDIENCE") {
                Some(audience) => audience,
                None if base_url.is_some() => String::new(),
                None => {
                    return Err(
                        "MCP_AUDIENCE is required with OCI_DOMAIN_URL: set it to the \
                                audience (aud) of the tokens meant for this server, or any token \
                                of the domain would be accepted"
                            .into(),
                    );
                }
            };
            (
                domain,
                required("OCI_CLIENT_ID")?,
                required("OCI_CLIENT_SECRET")?,
                required("OCI_API_BASE")?,
                audience,
            )
        }
        #[cfg(feature = "emulator")]
        None => {
            let mut builder = oci_token_exchange::Emulator::builder();
            if let Some(base) = &base_url {
                // The confidential app's redirect URL, as registered in a real domain.
                builder = builder
                    .redirect_uri(format!("{base}/auth/callback"))
                    .login_subject(DEMO_USER);
            }
            let emulator = builder.start().await?;
            // Demo tokens are minted for this server (the resource URL) unless told.
            let audience = var("MCP_AUDIENCE").unwrap_or_else(|| resource.clone());
            println!(
                "emulator: identity domain and OCI at {}",
                emulator.domain_url()
            );
            if base_url.is_some() {
                println!("demo user: {DEMO_USER} (the emulator logs them in without a page)");
            } else {
                println!(
                    "demo bearer token: {}",
                    emulator.mint_user_token_with(
                        &oci_token_exchange::UserTokenOptions::new(DEMO_USER)
                            .audience(audience.as_str())
                    )
                );
            }
            let config = (
                emulator.domain_url().to_string(),
                emulator.client_id().to_owned(),
                emulator.client_secret().expose_secret().to_owned(),
                emulator.api_url().to_string(),
                audience,
            );
            _emulator = Some(emulator);
            config
        }
        #[cfg(not(feature = "emulator"))]
        None => {
            return Err("set OCI_DOMAIN_URL and friends, or build with --features emulator".into());
        }
    };

    // With MCP_STORAGE=redis://..., replicas share the logins and the users' OCI
    // sessions: one token exchange per user, not one per replica.
    let store = match &base_url {
        Some(_) => store().await?,
        None => None,
    };
    let proxy = match &base_url {
        Some(base) => Some(ProxySettings {
            base: base.clone(),
            signing_key: signing_key(
                cfg!(feature = "emulator") && var("OCI_DOMAIN_URL").is_none(),
            )?,
            consent: match var("MCP_CONSENT").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(_) => return Err("MCP_CONSENT must be `on` or `off`".into()),
            },
            redirect_uris: var("MCP_ALLOWED_REDIRECT_URIS")
                .map(|p| p.split(',').map(|p| p.trim().to_owned()).collect())
                .unwrap_or_default(),
            store: store.clone(),
        }),
        None => None,
    };
    let server = support::build(Settings {
        resource: resource.clone(),
        domain_url,
        client_id,
        client_secret,
        api_base,
        audience,
        proxy,
        sessions: store,
        key_pool: key_pool.build(),
        stateless,
    })?;
    tracing::info!(%resource, stateless, "mcp server listening");
    println!("listening on {resource}");
    support::serve(listener, server.app).await?;
    Ok(())
}

/// The proxy's token-signing secret: `MCP_JWT_SIGNING_KEY`, or a random one on the
/// emulator.
fn signing_key(emulated: bool) -> Result<Vec<u8>, BoxError> {
    match var("MCP_JWT_SIGNING_KEY") {
        Some(key) => Ok(key.into_bytes()),
        None if emulated => {
            let mut key = vec![0_u8; 32];
            aws_lc_rs::rand::fill(&mut key).map_err(|_| "no random numbers")?;
            Ok(key)
        }
        None => Err(
            "MCP_JWT_SIGNING_KEY is required in OAuth-proxy mode with a real \
             domain: a secret of at least 32 bytes that signs this server's tokens"
                .into(),
        ),
    }
}

/// The store `MCP_STORAGE` names: `None` for `memory` (the default, one process),
/// Redis encrypted with `MCP_STORAGE_ENCRYPTION_KEY` for `redis://` or `rediss://`
/// (replicas share logins through it). Never echoes the URL: it may carry a password.
async fn store() -> Result<Option<Arc<dyn Store>>, BoxError> {
    match var("MCP_STORAGE") {
        None => Ok(None),
        Some(s) if s == "memory" => Ok(None),
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Ok(Some(
            support::redis_store(&url, var("MCP_STORAGE_ENCRYPTION_KEY").as_deref()).await?,
        )),
        Some(_) => Err("MCP_STORAGE must be `memory`, `redis://...` or `rediss://...`".into()),
    }
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
            eprintln!("mcp_server: {e}");
            ExitCode::from(2)
        }
    }
}
