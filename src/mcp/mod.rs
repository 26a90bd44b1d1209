//! The MCP adapter (feature `mcp`): the caller's token in rmcp tools, bearer-token
//! validation in front of them, and turning this crate's errors into tool results.

mod bearer;
mod jwks;
mod layer;
mod metadata;
mod token;
mod tool;
mod validations;

pub use bearer::{BearerAuth, BearerAuthBuilder, BearerAuthStats};
#[cfg(feature = "oauth-proxy")]
pub(crate) use bearer::{Rejection, scopes_of};
pub use layer::{BearerAuthLayer, BearerAuthService};
pub use token::{AccessToken, OptionalAccessToken, access_token};
pub use tool::{ToolError, tool_error};
#[cfg(feature = "oauth-proxy")]
pub(crate) use validations::Validations;
