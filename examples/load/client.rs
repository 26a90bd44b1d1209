//! One simulated user: an rmcp client over streamable HTTP with the user's token, its
//! tool calls, and what each call's outcome was.

use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The tools the users call, in turn.
pub const TOOLS: [Tool; 3] = [Tool::Whoami, Tool::Get, Tool::Post];

/// A tool call the driver makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `whoami`, checked against the caller.
    Whoami,
    /// `oci_request` GET.
    Get,
    /// `oci_request` POST with a small JSON body.
    Post,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered, and (for `whoami`) as the caller.
    Ok,
    /// Not answered within the bound: a hang.
    Timeout,
    /// The MCP transport or protocol failed (connection, HTTP status, JSON-RPC error).
    Transport(String),
    /// The tool answered with a structured error: its `error` kind.
    ToolError(String),
    /// `oci_request` answered, but OCI's status was not 200.
    OciStatus(u16),
    /// `whoami` answered with another user's identity. Must never happen.
    IdentityMismatch,
    /// The user could not connect (initialize) or log in.
    Connect(String),
}

impl Outcome {
    /// The kind counted in the report (`None` for success).
    pub fn kind(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Timeout => Some("timeout".to_owned()),
            Self::Transport(what) => Some(format!("transport:{what}")),
            Self::ToolError(kind) => Some(format!("tool_error:{kind}")),
            Self::OciStatus(status) => Some(format!("oci_status:{status}")),
            Self::IdentityMismatch => Some("identity_mismatch".to_owned()),
            Self::Connect(what) => Some(format!("connect:{what}")),
        }
    }
}

/// One call's record, kept for the report and for the fault schedule's checks.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// The user (index into the subjects).
    pub user: usize,
    /// The tool called (`None` for a connect).
    pub tool: Option<Tool>,
    /// Whether it was the user's first call (the cold one: exchange, key).
    pub first: bool,
    /// When it started, from the run's start.
    pub started: Duration,
    /// How long it took (up to the bound), from when it was due in an open loop.
    pub latency: Duration,
    /// Open loop: how late it started, because the call before ran past its turn or
    /// the driver was slow to start it (part of `latency`).
    pub late: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// A connected user.
pub struct User {
    /// Index of the user.
    pub index: usize,
    /// The subject `whoami` must answer.
    pub subject: String,
    client: RunningService<rmcp::RoleClient, ()>,
}

/// Connects (MCP `initialize`) with `token` as the bearer token, within `bound`.
///
/// With `keep_alive` the user's requests share pooled connections. rmcp's default
/// client opens a TCP connection for every request: it turns pooling off against
/// 40 ms stalls it sees when a response body was not fully read before the
/// connection's reuse. The stall measured here came from the server writing its SSE
/// events without `TCP_NODELAY`; the example server sets it. Like rmcp's client, the
/// pooled one follows no redirect that would turn the POST into a GET or carry the
/// session's headers to another origin: it follows none.
pub async fn connect(
    url: &str,
    token: String,
    index: usize,
    subject: String,
    bound: Duration,
    keep_alive: bool,
) -> Result<User, Outcome> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
    let transport = if keep_alive {
        let pooled = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| Outcome::Connect("client".into()))?;
        StreamableHttpClientTransport::with_client(pooled, config)
    } else {
        StreamableHttpClientTransport::from_config(config)
    };
    match tokio::time::timeout(bound, ().serve(transport)).await {
        Err(_) => Err(Outcome::Timeout),
        Ok(Err(e)) => Err(Outcome::Connect(classify_init(&e.to_string()))),
        Ok(Ok(client)) => Ok(User {
            index,
            subject,
            client,
        }),
    }
}

/// A short, stable kind for an initialize failure.
fn classify_init(message: &str) -> String {
    let m = message.to_ascii_lowercase();
    if m.contains("503") || m.contains("service unavailable") {
        "unavailable".to_owned()
    } else if m.contains("401") || m.contains("unauthorized") || m.contains("auth") {
        "unauthorized".to_owned()
    } else if m.contains("connect") || m.contains("refused") || m.contains("reset") {
        "connection".to_owned()
    } else {
        "initialize".to_owned()
    }
}

impl User {
    /// Makes one call, bounded by `bound`.
    pub async fn call(&self, tool: Tool, bound: Duration) -> (Duration, Outcome) {
        let params = match tool {
            Tool::Whoami => CallToolRequestParams::new("whoami"),
            Tool::Get => CallToolRequestParams::new("oci_request").with_arguments(object(json!({
                "method": "GET",
                "path": "/20160918/compartments",
            }))),
            Tool::Post => CallToolRequestParams::new("oci_request").with_arguments(object(json!({
                "method": "POST",
                "path": "/20160918/instances",
                "body": {"displayName": format!("load-{}", self.index), "shape": "VM.Standard.E4.Flex"},
            }))),
        };
        let start = Instant::now();
        let result = tokio::time::timeout(bound, self.client.call_tool(params)).await;
        let latency = start.elapsed();
        let outcome = match result {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => Outcome::Transport(classify_service_error(&e)),
            Ok(Ok(result)) => self.judge(tool, &result),
        };
        (latency, outcome)
    }

    fn judge(&self, tool: Tool, result: &CallToolResult) -> Outcome {
        let content = result.structured_content.as_ref();
        if result.is_error == Some(true) {
            let kind = content
                .and_then(|c| c.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("unstructured");
            return Outcome::ToolError(kind.to_owned());
        }
        let Some(content) = content else {
            return Outcome::ToolError("no_structured_content".to_owned());
        };
        match tool {
            Tool::Whoami => {
                if content.get("subject").and_then(Value::as_str) == Some(self.subject.as_str()) {
                    Outcome::Ok
                } else {
                    Outcome::IdentityMismatch
                }
            }
            Tool::Get | Tool::Post => match content.get("status").and_then(Value::as_u64) {
                Some(200) => Outcome::Ok,
                Some(status) => Outcome::OciStatus(u16::try_from(status).unwrap_or(0)),
                None => Outcome::ToolError("no_status".to_owned()),
            },
        }
    }

    /// Closes the MCP session (bounded).
    pub async fn close(self, bound: Duration) {
        let _ = tokio::time::timeout(bound, self.client.cancel()).await;
    }
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// A short, stable kind for a failed call.
fn classify_service_error(error: &rmcp::ServiceError) -> String {
    match error {
        rmcp::ServiceError::McpError(data) => format!("mcp_error:{}", data.code.0),
        rmcp::ServiceError::TransportSend(_) => "send".to_owned(),
        rmcp::ServiceError::TransportClosed => "closed".to_owned(),
        rmcp::ServiceError::Timeout { .. } => "rmcp_timeout".to_owned(),
        rmcp::ServiceError::Cancelled { .. } => "cancelled".to_owned(),
        _ => "other".to_owned(),
    }
}
