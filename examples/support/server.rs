//! The example MCP server's assembly, shared by `examples/mcp_server.rs` and the load
//! driver (`examples/load/`): the tools, the signer cache, the rmcp service (stateful
//! or stateless), bearer or OAuth-proxy mode, the store. Reads no environment: the
//! callers do.

use std::sync::Arc;
use std::time::SystemTime;

use oci_token_exchange::{
    AccessToken, BearerAuth, KeyPool, SignWith, SignerCache, SigningMiddleware, Store,
    TokenExchange, ToolError,
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

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub(crate) struct OciTools {
    signers: SignerCache,
    /// One client for every user: each request names its user's signer (`SignWith`),
    /// and the middleware renews a session OCI refuses and replays the request once.
    http: ClientWithMiddleware,
    api_base: String,
    tool_router: ToolRouter<Self>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct OciRequest {
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

/// Everything the server is built from.
pub(crate) struct Settings {
    /// The MCP endpoint's public URL (`.../mcp`).
    pub(crate) resource: String,
    pub(crate) domain_url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) api_base: String,
    /// The `aud` of domain tokens sent directly (bearer mode).
    pub(crate) audience: String,
    /// OAuth-proxy mode (`None`: bearer mode).
    pub(crate) proxy: Option<ProxySettings>,
    /// Where the users' OCI sessions are shared with other replicas (`None`: this
    /// process only).
    pub(crate) sessions: Option<Arc<dyn Store>>,
    /// The signer cache's key pool.
    pub(crate) key_pool: KeyPool,
    /// rmcp's stateless mode with JSON responses (see `MCP_STATELESS`).
    pub(crate) stateless: bool,
}

/// OAuth-proxy mode's settings.
pub(crate) struct ProxySettings {
    /// The server's public origin (`MCP_BASE_URL`).
    pub(crate) base: String,
    /// The secret that signs the proxy's tokens (at least 32 bytes).
    pub(crate) signing_key: Vec<u8>,
    /// Whether users see a consent page.
    pub(crate) consent: bool,
    /// Redirect URI patterns allowed besides loopback `http`.
    pub(crate) redirect_uris: Vec<String>,
    /// Where the proxy's state lives (`None`: this process).
    pub(crate) store: Option<Arc<dyn Store>>,
}

/// The assembled server.
pub(crate) struct Server {
    /// Serve with `axum::serve(listener, app.into_make_service())`.
    pub(crate) app: axum::Router,
    /// The signer cache the tools use (its size and counters, for reports).
    pub(crate) signers: SignerCache,
}

/// Serves `app` on `listener` with `TCP_NODELAY` on every connection.
///
/// Without it, Nagle's algorithm holds back a small write until the client has
/// acknowledged the one before, and Linux clients delay that ACK by 40 ms or more:
/// rmcp writes a stateful session's answer as SSE events, so a client that keeps its
/// connection (anything but rmcp's default client, which opens one per request)
/// waited about 44 ms per tool call (`mcp/oci_request_warm_pooled`).
///
/// # Errors
/// The listener failed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, app.into_make_service()).await
}

/// rmcp's transport configuration: stateful sessions with SSE responses (rmcp's
/// default), or stateless with plain JSON responses.
pub(crate) fn transport_config(stateless: bool) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default();
    if stateless {
        config
            .with_legacy_session_mode(false)
            .with_json_response(true)
    } else {
        config
    }
}

/// Builds the server.
///
/// # Errors
/// Invalid settings (URLs, credentials, a proxy without the `oauth-proxy` feature).
pub(crate) fn build(settings: Settings) -> Result<Server, BoxError> {
    let exchange = TokenExchange::builder()
        .domain_url(settings.domain_url.as_str())
        .client_credentials(settings.client_id.as_str(), settings.client_secret.as_str())
        .build()?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::per_request())
        .build();
    let mut signers = SignerCache::builder(exchange).key_pool(settings.key_pool);
    // With a shared store, replicas share the users' OCI sessions: one token exchange
    // per user, not one per replica.
    if let Some(store) = settings.sessions {
        signers = signers.store(store);
    }
    let signers = signers.try_build()?;
    let tools = OciTools {
        signers: signers.clone(),
        http,
        api_base: settings.api_base.trim_end_matches('/').to_owned(),
        tool_router: OciTools::tool_router(),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        transport_config(settings.stateless),
    );
    let mcp = axum::Router::new().nest_service("/mcp", mcp);
    let app = match settings.proxy {
        #[cfg(feature = "oauth-proxy")]
        Some(proxy) => {
            let proxy = proxy::build(
                proxy,
                &settings.resource,
                &settings.domain_url,
                &settings.client_id,
                &settings.client_secret,
            )?;
            // The authorization server's endpoints are open; everything else (the MCP
            // endpoint and its RFC 9728 metadata) is behind the proxy's tokens.
            let guarded = tower::Layer::layer(&proxy.bearer_auth().layer(), mcp);
            proxy.router().fallback_service(guarded)
        }
        #[cfg(not(feature = "oauth-proxy"))]
        Some(_) => return Err("OAuth-proxy mode needs the `oauth-proxy` feature".into()),
        None => {
            let auth = BearerAuth::builder()
                .domain_url(settings.domain_url.as_str())
                .resource(settings.resource.as_str())
                .audience(settings.audience)
                .build()?;
            axum::Router::new().fallback_service(tower::Layer::layer(&auth.layer(), mcp))
        }
    };
    Ok(Server { app, signers })
}

#[cfg(feature = "oauth-proxy")]
mod proxy {
    //! OAuth-proxy mode.

    use oci_token_exchange::OAuthProxy;

    use super::{BoxError, ProxySettings};

    /// The proxy's default redirect URI patterns.
    const LOOPBACK: [&str; 3] = [
        "http://127.0.0.1:*/*",
        "http://localhost:*/*",
        "http://[::1]:*/*",
    ];

    pub(super) fn build(
        settings: ProxySettings,
        resource: &str,
        domain_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<OAuthProxy, BoxError> {
        let mut builder = OAuthProxy::builder()
            .base_url(settings.base.as_str())
            .resource(resource)
            .domain_url(domain_url)
            .client_credentials(client_id, client_secret)
            .signing_key(settings.signing_key)
            .consent(settings.consent);
        if let Some(store) = settings.store {
            builder = builder.store(store);
        }
        if !settings.redirect_uris.is_empty() {
            // Operators add patterns (https://claude.ai/api/mcp/auth_callback, ...) to
            // the default: loopback http on any port.
            let patterns = LOOPBACK
                .iter()
                .map(|p| (*p).to_owned())
                .chain(settings.redirect_uris)
                .filter(|p| !p.is_empty());
            builder = builder.allowed_redirect_uris(patterns);
        }
        Ok(builder.build()?)
    }
}

/// The encrypted Redis store a `redis://` or `rediss://` URL names (`MCP_STORAGE`),
/// encrypted with `fernet_keys` (`MCP_STORAGE_ENCRYPTION_KEY`'s format). Never echoes
/// the URL: it may carry a password.
///
/// # Errors
/// No key, an invalid key, or Redis does not answer.
#[cfg(feature = "redis")]
pub(crate) async fn redis_store(
    url: &str,
    fernet_keys: Option<&str>,
) -> Result<Arc<dyn Store>, BoxError> {
    use oci_token_exchange::{EncryptedStore, Fernet, RedisStore};
    let keys = fernet_keys.ok_or(
        "MCP_STORAGE_ENCRYPTION_KEY is required with a Redis MCP_STORAGE: one or more \
         Fernet keys (Fernet.generate_key()), comma-separated, the first encrypts",
    )?;
    let fernet =
        Fernet::from_env_value(keys).map_err(|e| format!("MCP_STORAGE_ENCRYPTION_KEY: {e}"))?;
    let redis = RedisStore::connect(url)
        .await
        .map_err(|e| format!("MCP_STORAGE: {e}"))?;
    tracing::info!(store = ?redis, "oauth proxy state in redis, encrypted");
    Ok(Arc::new(EncryptedStore::new(redis, fernet)))
}

#[cfg(not(feature = "redis"))]
pub(crate) async fn redis_store(_: &str, _: Option<&str>) -> Result<Arc<dyn Store>, BoxError> {
    Err("MCP_STORAGE: this build has no Redis support; build with `--features redis`".into())
}
