//! Turning this crate's errors into MCP tool results.

use std::fmt;

use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::model::{CallToolResponse, CallToolResult, ErrorData};
use serde_json::json;

use crate::error::Error;

/// The tool result for a failure of this crate, for the model to read.
///
/// When the user must log in again (`is_reauth_required()`: their token expired,
/// or the identity domain refused it), the result says so in a fixed shape,
/// `{"error": "reauthentication_required", ...}`, instead of a generic failure;
/// otherwise `{"error": "oci_auth_failed", "retryable": ..}` with the (secret-free)
/// message.
#[must_use]
pub fn tool_error(error: &Error) -> CallToolResult {
    if error.is_reauth_required() {
        CallToolResult::structured_error(json!({
            "error": "reauthentication_required",
            "message": "the user's login has expired or was refused; log in again and retry",
        }))
    } else {
        CallToolResult::structured_error(json!({
            "error": "oci_auth_failed",
            "message": error.to_string(),
            "retryable": error.is_retryable(),
        }))
    }
}

/// The error type of a tool that calls OCI, so that tool code can use `?` on this
/// crate's errors, on HTTP failures and on MCP errors alike.
///
/// Return `Result<CallToolResult, ToolError>` (or `Result<Json<T>, ToolError>`) from
/// a `#[tool]`. What the client sees:
///
/// - an [`Error`] of this crate: the structured tool error of [`tool_error`]
///   (`reauthentication_required` when the user must log in again);
/// - a failed HTTP call to OCI: a structured tool error
///   `{"error": "oci_request_failed", "message": .., "retryable": ..}` (retryable
///   for timeouts and connection failures) whose message never contains the URL
///   (signed URLs can carry credentials);
/// - an [`ErrorData`] (for example [`ToolError::invalid_params`]): that MCP
///   protocol error.
pub struct ToolError(Repr);

enum Repr {
    Oci(Error),
    Http { message: String, retryable: bool },
    Protocol(ErrorData),
}

impl ToolError {
    /// An MCP `invalid_params` error: the tool's arguments are unusable.
    #[must_use]
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self(Repr::Protocol(ErrorData::invalid_params(
            message.into(),
            None,
        )))
    }

    /// The result the client receives (`Ok`) or the protocol error (`Err`).
    ///
    /// # Errors
    /// The [`ErrorData`] when this is a protocol error.
    pub fn into_result(self) -> Result<CallToolResult, ErrorData> {
        match self.0 {
            Repr::Oci(error) => Ok(tool_error(&error)),
            Repr::Http { message, retryable } => Ok(CallToolResult::structured_error(json!({
                "error": "oci_request_failed",
                "message": message,
                "retryable": retryable,
            }))),
            Repr::Protocol(data) => Err(data),
        }
    }
}

impl fmt::Debug for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Oci(error) => f.debug_tuple("ToolError").field(error).finish(),
            Repr::Http { message, .. } => f.debug_tuple("ToolError").field(message).finish(),
            Repr::Protocol(data) => f.debug_tuple("ToolError").field(&data.message).finish(),
        }
    }
}

impl From<Error> for ToolError {
    fn from(error: Error) -> Self {
        Self(Repr::Oci(error))
    }
}

impl From<ErrorData> for ToolError {
    fn from(data: ErrorData) -> Self {
        Self(Repr::Protocol(data))
    }
}

impl From<reqwest::Error> for ToolError {
    fn from(error: reqwest::Error) -> Self {
        // Only a call that never got an answer is worth repeating as it is.
        let retryable = error.is_timeout() || error.is_connect();
        // reqwest's message names the URL; a signed URL must not reach the model.
        Self(Repr::Http {
            message: format!("oci request failed: {}", error.without_url()),
            retryable,
        })
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        self.into_result().map(Into::into)
    }
}

#[cfg(feature = "middleware")]
impl From<reqwest_middleware::Error> for ToolError {
    fn from(error: reqwest_middleware::Error) -> Self {
        match error {
            reqwest_middleware::Error::Reqwest(e) => e.into(),
            reqwest_middleware::Error::Middleware(e) => match e.downcast::<Error>() {
                Ok(oci) => oci.into(),
                // Only this crate's middleware is expected here; others' messages are
                // not known to be free of URLs.
                Err(_) => Self(Repr::Http {
                    message: "oci request failed in a middleware".into(),
                    retryable: false,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

    use std::time::Duration;

    use super::*;

    /// The `retryable` of the structured tool error an HTTP failure becomes.
    fn retryable(error: impl Into<ToolError>) -> serde_json::Value {
        let result = error.into().into_result().expect("a tool result");
        assert_eq!(result.is_error, Some(true));
        let body = result.structured_content.expect("structured");
        assert_eq!(body["error"], "oci_request_failed", "{body}");
        body["retryable"].clone()
    }

    /// Review fix (issue 9): only an HTTP call that never got an answer (timeout,
    /// connection failure) is retryable; any other reqwest failure, and an unknown
    /// middleware's error, is not (all were `retryable: true` before).
    #[tokio::test]
    async fn only_timeouts_and_connect_failures_are_retryable() {
        let http = reqwest::Client::new();

        // Nothing listens on a port just released: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("refused");
        assert!(refused.is_connect(), "{refused:?}");
        assert_eq!(retryable(refused), true);

        // A listener that never accepts nor answers: the request times out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let timeout = http
            .get(format!("http://{}/", silent.local_addr().unwrap()))
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .expect_err("times out");
        assert!(timeout.is_timeout(), "{timeout:?}");
        assert_eq!(retryable(timeout), true);

        // An answer that is an error status, and a request that could not be built.
        let status = reqwest::Response::from(
            http::Response::builder()
                .status(500)
                .body(String::new())
                .unwrap(),
        )
        .error_for_status()
        .expect_err("500");
        assert!(status.is_status(), "{status:?}");
        assert_eq!(retryable(status), false);
        let builder = http
            .get("http://bad host/")
            .send()
            .await
            .expect_err("no such url");
        assert!(builder.is_builder(), "{builder:?}");
        assert_eq!(retryable(builder), false);

        // Another middleware's error: its nature is unknown.
        #[cfg(feature = "middleware")]
        assert_eq!(
            retryable(reqwest_middleware::Error::middleware(
                std::io::Error::other("some middleware failed")
            )),
            false
        );
    }
}
