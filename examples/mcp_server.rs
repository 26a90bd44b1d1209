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
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use oci_token_exchange::{
    AccessToken, BearerAuth, SignWith, SignerCache, SigningMiddleware, TokenExchange, ToolError,
};
use reqwest_middleware::ClientWithMiddleware;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The user the emulator logs in (proxy mode) or mints a token for (bearer mode).
#[cfg(feature = "emulator")]
const DEMO_USER: &str = "demo@example.com";

#[derive(Clone)]
struct OciTools {
    signers: SignerCache,
    /// One client for every user: each request names its user's signer (`SignWith`),
    /// and the middleware renews a session OCI refuses and replays the request once.
    http: ClientWithMiddleware,
    api_base: String,
    tool_router: ToolRouter<Self>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct OciRequest {
    /// HTTP method (default GET).
    method: Option<String>,
    /// Path and query below the API base, e.g. `/20160918/instances?compartmentId=...`.
    path: String,
    /// JSON body (or a string sent as-is).
    body: Option<Value>,
}

/// RFC 3339, as OCI's own APIs write timestamps.
fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tool_router]
impl OciTools {
    #[tool(description = "Who you are in OCI: your token's subject and your OCI user and tenancy")]
    async fn whoami(&self, token: AccessToken) -> Result<CallToolResult, ToolError> {
        let session = token.signer(&self.signers).await?.session().await?;
        Ok(CallToolResult::structured(json!({
            "subject": token.subject(),
            "jti": token.jti(),
            "user_ocid": session.user_ocid(),
            "tenancy_ocid": session.tenancy_ocid(),
            "upst_expires_at": rfc3339(session.expires_at()),
        })))
    }

    #[tool(description = "Call the OCI REST API as you; returns {status, body}")]
    async fn oci_request(
        &self,
        token: AccessToken,
        Parameters(request): Parameters<OciRequest>,
    ) -> Result<CallToolResult, ToolError> {
        if !request.path.starts_with('/') || request.path.starts_with("//") {
            return Err(ToolError::invalid_params(
                "path must start with a single '/'",
            ));
        }
        let method = request.method.as_deref().unwrap_or("GET");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ToolError::invalid_params("invalid method"))?;
        let signer = token.signer(&self.signers).await?;
        let mut call = self
            .http
            .request(method, format!("{}{}", self.api_base, request.path))
            .with_extension(SignWith::new(signer));
        if let Some(body) = request.body {
            let body = match body {
                Value::String(text) => text,
                json => json.to_string(),
            };
            call = call.header("content-type", "application/json").body(body);
        }
        let response = call.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        Ok(CallToolResult::structured(
            json!({"status": status, "body": body}),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OciTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("Tools that call Oracle Cloud Infrastructure as the signed-in user.")
    }
}

async fn run() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let bind = var("MCP_BIND").unwrap_or_else(|| "127.0.0.1:8000".to_owned());
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

    let exchange = TokenExchange::builder()
        .domain_url(domain_url.as_str())
        .client_credentials(client_id.as_str(), client_secret.as_str())
        .build()?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::per_request())
        .build();
    let mut signers = SignerCache::builder(exchange);
    // With MCP_STORAGE=redis://..., replicas share the logins and the users' OCI
    // sessions: one token exchange per user, not one per replica.
    #[cfg(feature = "oauth-proxy")]
    let store = match &base_url {
        Some(_) => proxy::store().await?,
        None => None,
    };
    #[cfg(feature = "oauth-proxy")]
    if let Some(store) = &store {
        signers = signers.store(Arc::clone(store));
    }
    let tools = OciTools {
        signers: signers.try_build()?,
        http,
        api_base: api_base.trim_end_matches('/').to_owned(),
        tool_router: OciTools::tool_router(),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let mcp = axum::Router::new().nest_service("/mcp", mcp);
    let app = match &base_url {
        #[cfg(feature = "oauth-proxy")]
        Some(base) => {
            let proxy = proxy::build(proxy::Settings {
                base,
                resource: &resource,
                domain_url: &domain_url,
                client_id: &client_id,
                client_secret: &client_secret,
                emulated: cfg!(feature = "emulator") && var("OCI_DOMAIN_URL").is_none(),
                store,
            })?;
            // The authorization server's endpoints are open; everything else (the MCP
            // endpoint and its RFC 9728 metadata) is behind the proxy's tokens.
            let guarded = tower::Layer::layer(&proxy.bearer_auth().layer(), mcp);
            proxy.router().fallback_service(guarded)
        }
        _ => {
            let auth = BearerAuth::builder()
                .domain_url(domain_url.as_str())
                .resource(resource.as_str())
                .audience(audience)
                .build()?;
            axum::Router::new().fallback_service(tower::Layer::layer(&auth.layer(), mcp))
        }
    };
    tracing::info!(%resource, "mcp server listening");
    println!("listening on {resource}");
    axum::serve(listener, app.into_make_service()).await?;
    Ok(())
}

#[cfg(feature = "oauth-proxy")]
mod proxy {
    //! OAuth-proxy mode: the configuration read from the environment.

    use std::sync::Arc;

    use oci_token_exchange::{OAuthProxy, Store};

    use super::BoxError;

    pub(crate) struct Settings<'a> {
        pub(crate) base: &'a str,
        pub(crate) resource: &'a str,
        pub(crate) domain_url: &'a str,
        pub(crate) client_id: &'a str,
        pub(crate) client_secret: &'a str,
        /// On the emulator: a random signing key when none is given.
        pub(crate) emulated: bool,
        /// Where the state lives (`None`: in this process).
        pub(crate) store: Option<Arc<dyn Store>>,
    }

    pub(crate) fn build(settings: Settings<'_>) -> Result<OAuthProxy, BoxError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let signing_key = match var("MCP_JWT_SIGNING_KEY") {
            Some(key) => key.into_bytes(),
            None if settings.emulated => {
                let mut key = vec![0_u8; 32];
                aws_lc_rs::rand::fill(&mut key).map_err(|_| "no random numbers")?;
                key
            }
            None => {
                return Err(
                    "MCP_JWT_SIGNING_KEY is required in OAuth-proxy mode with a real \
                            domain: a secret of at least 32 bytes that signs this server's tokens"
                        .into(),
                );
            }
        };
        let consent = match var("MCP_CONSENT").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err("MCP_CONSENT must be `on` or `off`".into()),
        };
        let mut builder = OAuthProxy::builder()
            .base_url(settings.base)
            .resource(settings.resource)
            .domain_url(settings.domain_url)
            .client_credentials(settings.client_id, settings.client_secret)
            .signing_key(signing_key)
            .consent(consent);
        if let Some(store) = settings.store {
            builder = builder.store(store);
        }
        if let Some(patterns) = var("MCP_ALLOWED_REDIRECT_URIS") {
            // Operators add patterns (https://claude.ai/api/mcp/auth_callback, ...) to
            // the default: loopback http on any port.
            let patterns = LOOPBACK
                .iter()
                .map(|p| (*p).to_owned())
                .chain(patterns.split(',').map(|p| p.trim().to_owned()))
                .filter(|p| !p.is_empty());
            builder = builder.allowed_redirect_uris(patterns);
        }
        Ok(builder.build()?)
    }

    /// The store `MCP_STORAGE` names: `None` for `memory` (the default, one
    /// process), Redis encrypted with `MCP_STORAGE_ENCRYPTION_KEY` for `redis://` or
    /// `rediss://` (replicas share logins through it). Never echoes the URL: it may
    /// carry a password.
    pub(crate) async fn store() -> Result<Option<Arc<dyn Store>>, BoxError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match var("MCP_STORAGE") {
            None => Ok(None),
            Some(s) if s == "memory" => Ok(None),
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                redis_store(&url, var("MCP_STORAGE_ENCRYPTION_KEY")).await
            }
            Some(_) => Err("MCP_STORAGE must be `memory`, `redis://...` or `rediss://...`".into()),
        }
    }

    #[cfg(feature = "redis")]
    async fn redis_store(
        url: &str,
        key: Option<String>,
    ) -> Result<Option<Arc<dyn Store>>, BoxError> {
        use oci_token_exchange::{EncryptedStore, Fernet, RedisStore};
        let key = key.ok_or(
            "MCP_STORAGE_ENCRYPTION_KEY is required with a Redis MCP_STORAGE: one or more \
             Fernet keys (Fernet.generate_key()), comma-separated, the first encrypts",
        )?;
        let fernet =
            Fernet::from_env_value(&key).map_err(|e| format!("MCP_STORAGE_ENCRYPTION_KEY: {e}"))?;
        let redis = RedisStore::connect(url)
            .await
            .map_err(|e| format!("MCP_STORAGE: {e}"))?;
        tracing::info!(store = ?redis, "oauth proxy state in redis, encrypted");
        Ok(Some(Arc::new(EncryptedStore::new(redis, fernet))))
    }

    #[cfg(not(feature = "redis"))]
    async fn redis_store(_: &str, _: Option<String>) -> Result<Option<Arc<dyn Store>>, BoxError> {
        Err("MCP_STORAGE: this build has no Redis support; build with `--features redis`".into())
    }

    /// The proxy's default redirect URI patterns.
    const LOOPBACK: [&str; 3] = [
        "http://127.0.0.1:*/*",
        "http://localhost:*/*",
        "http://[::1]:*/*",
    ];
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
