//! The MCP adapter (feature `mcp`): the caller's token in rmcp tools, bearer-token
//! validation in front of them, and turning this crate's errors into tool results.

mod auth;
mod token;
mod tool;

pub use auth::{BearerAuth, BearerAuthBuilder, BearerAuthLayer, BearerAuthService};
pub use token::{AccessToken, OptionalAccessToken, access_token};
pub use tool::{ToolError, tool_error};
