//! The MCP adapter (feature `mcp`): the caller's token in rmcp tools, bearer-token
//! validation in front of them, and turning this crate's errors into tool results.

mod bearer;
mod jwks;
mod layer;
mod metadata;
mod token;

pub use bearer::{BearerAuth, BearerAuthBuilder};
pub use layer::{BearerAuthLayer, BearerAuthService};
pub use token::{AccessToken, OptionalAccessToken, access_token};

use rmcp::model::CallToolResult;
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
