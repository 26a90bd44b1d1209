//! The authenticated caller's access token, as MCP tool code sees it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
use rmcp::model::ErrorData;
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Map, Value};

use crate::cache::SignerCache;
use crate::credentials::Credentials;
use crate::error::Result;
use crate::secret::SecretString;
use crate::session::TokenExchangeSigner;

/// A validated bearer token and what it says, like FastMCP's `AccessToken`.
///
/// [`BearerAuth`](crate::BearerAuth) puts one into each request it lets through;
/// tool code gets it as a `#[tool]` parameter, with [`access_token`], or with
/// [`AccessToken::from_parts`]. `Debug` never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    pub(crate) token: SecretString,
    pub(crate) claims: Arc<Map<String, Value>>,
    pub(crate) scopes: Vec<String>,
}

impl AccessToken {
    /// The validated token of a request that passed [`BearerAuth`](crate::BearerAuth),
    /// from the HTTP request parts rmcp hands to tools. `None` when there is none
    /// (no validation layer, or stdio transport).
    #[must_use]
    pub fn from_parts(parts: &http::request::Parts) -> Option<Self> {
        parts.extensions.get::<Self>().cloned()
    }

    /// The raw token (the user's JWT): the subject token of the exchange. Do not log it.
    #[must_use]
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// All claims, as validated.
    #[must_use]
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `sub`: the user.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.claim("sub")
    }

    /// `client_id` (or `azp`): the OAuth client the user logged in through.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.claim("client_id").or_else(|| self.claim("azp"))
    }

    /// `jti`: the token's id.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.claim("jti")
    }

    /// `iss`: who issued it.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        self.claim("iss")
    }

    /// The granted scopes (`scope`, space-separated, or `scp`).
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// `exp`.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.claims.get("exp").and_then(crate::jwt::numeric_date)
    }

    /// `aud`: the audiences (resources) the token is for.
    #[must_use]
    pub fn audience(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// This user's signer from `cache`: one call from a tool's token to OCI.
    ///
    /// # Errors
    /// As [`SignerCache::signer_for`]; map it with [`tool_error`](crate::tool_error).
    pub async fn signer(&self, cache: &SignerCache) -> Result<Arc<TokenExchangeSigner>> {
        cache.signer_for(&self.token).await
    }

    /// Signs `request` as this user: their signer from `cache` (exchanging on first
    /// use), then [`Signer::sign_reqwest`](crate::Signer::sign_reqwest). Returns the
    /// credentials used, for [`Signer::refused`](crate::Signer::refused) after a 401.
    ///
    /// With `?` in a tool returning [`ToolError`](crate::ToolError), a failure
    /// becomes the structured tool error (`reauthentication_required` when the user
    /// must log in again).
    ///
    /// # Errors
    /// As [`SignerCache::signer_for`] and the signer's `sign_reqwest`; the request is
    /// untouched on error.
    pub async fn sign_reqwest(
        &self,
        cache: &SignerCache,
        request: &mut reqwest::Request,
    ) -> Result<Credentials> {
        self.signer(cache).await?.sign_reqwest(request).await
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("subject", &self.subject())
            .field("client_id", &self.client_id())
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

/// The authenticated caller's token in tool code, like FastMCP's
/// `get_access_token()`: `None` over stdio or without [`BearerAuth`](crate::BearerAuth).
#[must_use]
pub fn access_token(context: &RequestContext<RoleServer>) -> Option<AccessToken> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(AccessToken::from_parts)
}

fn missing() -> ErrorData {
    ErrorData::invalid_request(
        "no authenticated user: this tool needs a bearer token (streamable HTTP with BearerAuth)",
        None,
    )
}

/// As a `#[tool]` parameter: the caller's token, or a clear MCP error when the
/// request carries none.
impl<C: AsRequestContext> FromContextPart<C> for AccessToken {
    fn from_context_part(context: &mut C) -> std::result::Result<Self, ErrorData> {
        access_token(context.as_request_context()).ok_or_else(missing)
    }
}

/// As a `#[tool]` parameter: the caller's token if there is one.
#[derive(Clone, Debug)]
pub struct OptionalAccessToken(pub Option<AccessToken>);

impl<C: AsRequestContext> FromContextPart<C> for OptionalAccessToken {
    fn from_context_part(context: &mut C) -> std::result::Result<Self, ErrorData> {
        Ok(Self(access_token(context.as_request_context())))
    }
}
