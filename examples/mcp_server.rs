//! An MCP server whose tools call OCI as the user who logged in.
//!
//! Streamable HTTP at `http://$MCP_BIND/mcp` (default `127.0.0.1:8000`). Set
//! `OCI_DOMAIN_URL`, `OCI_CLIENT_ID`, `OCI_CLIENT_SECRET`, `OCI_API_BASE` (and
//! optionally `MCP_AUDIENCE`); with no `OCI_DOMAIN_URL` it starts the emulator and
//! prints a demo bearer token. Bearer tokens are validated through the domain's
//! discovery document; a missing, invalid or expired one gets 401 with
//! `WWW-Authenticate: Bearer resource_metadata="..."`.
//!
//! Tools: `whoami` and `oci_request {method?, path, body?}`.
//!
//! ```text
//! cargo run --example mcp_server --features mcp,emulator
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;

use axum::ServiceExt as _;
use oci_token_exchange::{AccessToken, BearerAuth, SignerCache, TokenExchange, tool_error};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct OciTools {
    signers: SignerCache,
    http: reqwest::Client,
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

#[tool_router]
impl OciTools {
    #[tool(description = "Who you are in OCI: your token's subject and your OCI user and tenancy")]
    async fn whoami(&self, token: AccessToken) -> Result<CallToolResult, ErrorData> {
        let session = match token.signer(&self.signers).await {
            Ok(signer) => signer.session().await,
            Err(e) => Err(e),
        };
        Ok(match session {
            Ok(s) => CallToolResult::structured(json!({
                "subject": token.subject(),
                "jti": token.jti(),
                "user_ocid": s.user_ocid(),
                "tenancy_ocid": s.tenancy_ocid(),
                "upst_expires_at": httpdate::fmt_http_date(s.expires_at()),
            })),
            Err(e) => tool_error(&e),
        })
    }

    #[tool(description = "Call the OCI REST API as you; returns {status, body}")]
    async fn oci_request(
        &self,
        token: AccessToken,
        Parameters(request): Parameters<OciRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        if !request.path.starts_with('/') || request.path.starts_with("//") {
            return Err(ErrorData::invalid_params(
                "path must start with a single '/'",
                None,
            ));
        }
        let signer = match token.signer(&self.signers).await {
            Ok(signer) => signer,
            Err(e) => return Ok(tool_error(&e)),
        };
        let method = request
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let body = match request.body {
            None => None,
            Some(Value::String(text)) => Some(text),
            Some(json) => Some(json.to_string()),
        };
        let url = format!("{}{}", self.api_base, request.path);
        // One retry with a fresh session if OCI no longer accepts the current one.
        for attempt in 0..2 {
            let mut builder = self.http.request(
                method
                    .parse()
                    .map_err(|_| ErrorData::invalid_params("invalid method", None))?,
                &url,
            );
            if let Some(body) = &body {
                builder = builder
                    .header("content-type", "application/json")
                    .body(body.clone());
            }
            let mut http_request = builder
                .build()
                .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
            let session = match signer.sign_reqwest(&mut http_request).await {
                Ok(session) => session,
                Err(e) => return Ok(tool_error(&e)),
            };
            let response =
                self.http.execute(http_request).await.map_err(|e| {
                    ErrorData::internal_error(format!("oci request failed: {e}"), None)
                })?;
            let status = response.status().as_u16();
            // The guarded path: at most one 401-driven renewal a minute.
            if status == 401 && attempt == 0 && signer.refused(&session) {
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            return Ok(CallToolResult::structured(
                json!({"status": status, "body": body}),
            ));
        }
        Err(ErrorData::internal_error(
            "unreachable: the loop returns",
            None,
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

    // Without a real domain, the emulator plays the identity domain and OCI.
    #[cfg(feature = "emulator")]
    let mut _emulator = None;
    let (domain_url, client_id, client_secret, api_base) = match var("OCI_DOMAIN_URL") {
        Some(domain) => {
            let required = |name: &str| var(name).ok_or_else(|| format!("{name} is not set"));
            (
                domain,
                required("OCI_CLIENT_ID")?,
                required("OCI_CLIENT_SECRET")?,
                required("OCI_API_BASE")?,
            )
        }
        #[cfg(feature = "emulator")]
        None => {
            let emulator = oci_token_exchange::Emulator::start().await?;
            println!(
                "emulator: identity domain and OCI at {}",
                emulator.domain_url()
            );
            println!(
                "demo bearer token: {}",
                emulator.mint_user_token("demo@example.com")
            );
            let config = (
                emulator.domain_url().to_string(),
                emulator.client_id().to_owned(),
                emulator.client_secret().expose_secret().to_owned(),
                emulator.api_url().to_string(),
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
        .client_credentials(client_id, client_secret)
        .build()?;
    let mut auth = BearerAuth::builder()
        .domain_url(domain_url.as_str())
        .resource(format!("http://{address}/mcp"));
    match var("MCP_AUDIENCE") {
        Some(audience) => auth = auth.audience(audience),
        None => {
            eprintln!("mcp_server: MCP_AUDIENCE is not set; accepting tokens for any audience");
            auth = auth.allow_any_audience();
        }
    }
    let auth = auth.build()?;
    let tools = OciTools {
        signers: SignerCache::builder(exchange).build(),
        http: reqwest::Client::new(),
        api_base: api_base.trim_end_matches('/').to_owned(),
        tool_router: OciTools::tool_router(),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = tower::Layer::layer(&auth.layer(), axum::Router::new().nest_service("/mcp", mcp));
    println!("listening on http://{address}/mcp");
    axum::serve(listener, app.into_make_service()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp_server: {e}");
            ExitCode::from(2)
        }
    }
}
