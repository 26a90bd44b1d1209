//! The OAuth proxy (feature `oauth-proxy`): an OAuth 2.1 authorization server in
//! front of the MCP server that logs users in at the identity domain.

mod authorize;
mod crypto;
mod model;
mod pages;
mod redirect;
mod register;
mod token;
mod tokens;
mod upstream;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use url::Url;

pub(crate) use validate::check;

use self::redirect::Pattern;
use self::tokens::OwnTokens;
use self::upstream::Upstream;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::parse_domain_url;
use crate::mcp::{AccessToken, BearerAuth};
use crate::secret::SecretString;
use crate::store::{MemoryStore, Store};

/// Default lifetime of the proxy's access tokens.
const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(3600);
/// Default lifetime of the proxy's refresh tokens.
const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Assumed lifetime of the domain's refresh tokens when its answer does not say
/// (the identity domain's default).
const DEFAULT_UPSTREAM_REFRESH_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest signing key accepted.
const MIN_SIGNING_KEY: usize = 32;

/// Everything the endpoints and the bearer check share.
pub(crate) struct Inner {
    /// The public origin, without a trailing slash: the issuer.
    base: String,
    resource: String,
    secure: bool,
    upstream: Upstream,
    tokens: OwnTokens,
    cookie_key: aws_lc_rs::hmac::Key,
    patterns: Vec<Pattern>,
    default_scopes: Vec<String>,
    consent: bool,
    access_lifetime: Duration,
    refresh_lifetime: Duration,
    upstream_refresh_lifetime: Duration,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// One upstream refresh per token set at a time (this process).
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The parsed upstream token of each set, by set id, with the token it is of.
    parsed: moka::future::Cache<String, Arc<(String, AccessToken)>>,
    /// Sets whose last upstream refresh failed (5 s) or gave an access token that
    /// could not be validated (10 s), until when they are not refreshed again: the
    /// callers do not each try (and rotate) in turn while the domain cannot serve.
    refresh_backoff: moka::future::Cache<String, SystemTime>,
    /// Positive bearer validations remembered for a short while.
    validations: crate::mcp::Validations<AccessToken>,
    /// The consent page's `form-action` sources.
    form_action: String,
    /// Registrations allowed now (a token bucket, this process).
    registrations: register::RateLimit,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthProxy")
            .field("base_url", &self.base)
            .field("resource", &self.resource)
            .field("upstream", &self.upstream)
            .field("patterns", &self.patterns)
            .field("default_scopes", &self.default_scopes)
            .field("consent", &self.consent)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The consent cookies' name prefix (`__Host-` under https).
    fn cookie_prefix(&self) -> &'static str {
        if self.secure {
            "__Host-ocx_consent"
        } else {
            "ocx_consent"
        }
    }

    fn callback_url(&self) -> String {
        format!("{}/auth/callback", self.base)
    }
}

/// An OAuth 2.1 authorization server for MCP clients in front of an OCI IAM
/// identity domain, which has no dynamic client registration: FastMCP's
/// `OCIProvider`, in Rust.
///
/// MCP clients register (RFC 7591), run the authorization code flow with PKCE S256
/// against this proxy, see a consent page, and log in at the identity domain; the
/// proxy runs its own PKCE leg with the domain (one confidential app, redirect URL
/// `{base}/auth/callback`), keeps the domain's tokens and hands the client its
/// own: an HS256 access token and a rotating refresh token. The domain's tokens never
/// leave the server. [`OAuthProxy::bearer_auth`] validates the proxy's tokens in
/// front of the MCP endpoint and gives tools the user's domain token as
/// [`AccessToken`], refreshing it at the domain when it is about to expire.
///
/// Lifetimes: clients 30 days, logins (from `/authorize` to the callback) 15
/// minutes, codes 5 minutes, access tokens [`OAuthProxyBuilder::access_token_lifetime`],
/// refresh tokens [`OAuthProxyBuilder::refresh_token_lifetime`]. All state lives in
/// the [`Store`].
///
/// Cheap to clone; `Debug` shows no secret.
#[derive(Clone)]
pub struct OAuthProxy {
    inner: Arc<Inner>,
}

impl fmt::Debug for OAuthProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Builds an [`OAuthProxy`]. `Debug` shows no secret.
#[derive(Default)]
pub struct OAuthProxyBuilder {
    base_url: Option<String>,
    resource: Option<String>,
    domain_url: Option<String>,
    client: Option<(String, SecretString)>,
    signing_key: Option<zeroize::Zeroizing<Vec<u8>>>,
    patterns: Option<Vec<String>>,
    default_scopes: Option<Vec<String>>,
    consent: Option<bool>,
    access_lifetime: Option<Duration>,
    refresh_lifetime: Option<Duration>,
    upstream_refresh_lifetime: Option<Duration>,
    store: Option<Arc<dyn Store>>,
    allow_unencrypted_store: bool,
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
    validation_cache_ttl: Option<Duration>,
    registration_rate: Option<(u32, u32)>,
}

impl fmt::Debug for OAuthProxyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthProxyBuilder")
            .field("base_url", &self.base_url)
            .field("resource", &self.resource)
            .field("domain_url", &self.domain_url)
            .field("client_id", &self.client.as_ref().map(|c| &c.0))
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "[redacted]"),
            )
            .field("patterns", &self.patterns)
            .field("consent", &self.consent)
            .finish_non_exhaustive()
    }
}

impl OAuthProxyBuilder {
    /// The server's public origin as clients reach it, e.g. `https://mcp.example.com`
    /// (required): the issuer of its tokens; the endpoints are under it.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The MCP endpoint's URL, the `aud` of the proxy's tokens (default
    /// `{base}/mcp`).
    #[must_use]
    pub fn resource(mut self, url: impl Into<String>) -> Self {
        self.resource = Some(url.into());
        self
    }

    /// The identity domain (required); same rules as
    /// [`TokenExchangeBuilder::domain_url`](crate::TokenExchangeBuilder::domain_url).
    #[must_use]
    pub fn domain_url(mut self, url: impl Into<String>) -> Self {
        self.domain_url = Some(url.into());
        self
    }

    /// The confidential app of the domain that logs users in (required): grants
    /// Authorization Code and Refresh Token, redirect URL `{base}/auth/callback`.
    #[must_use]
    pub fn client_credentials(
        mut self,
        id: impl Into<String>,
        secret: impl Into<SecretString>,
    ) -> Self {
        self.client = Some((id.into(), secret.into()));
        self
    }

    /// The HS256 key of the proxy's own access tokens and consent cookies
    /// (required, at least 32 bytes; keep it stable across restarts and equal on
    /// every replica).
    #[must_use]
    pub fn signing_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.signing_key = Some(zeroize::Zeroizing::new(key.into()));
        self
    }

    /// The redirect URIs clients may register: exact URLs, or patterns with `*` as
    /// the port and/or a trailing `/*` path (e.g. `https://claude.ai/api/mcp/auth_callback`).
    /// Replaces the default, loopback `http` on any port and path
    /// (`http://127.0.0.1:*/*`, `http://localhost:*/*`, `http://[::1]:*/*`).
    #[must_use]
    pub fn allowed_redirect_uris<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.patterns = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// The scopes asked of the domain when a client asks for none (default
    /// `["openid"]`).
    #[must_use]
    pub fn default_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the user approves each client on a consent page (default true).
    /// Off, `/authorize` goes straight to the domain (still bound to the browser).
    #[must_use]
    pub fn consent(mut self, on: bool) -> Self {
        self.consent = Some(on);
        self
    }

    /// Lifetime of the proxy's access tokens (default 1 h). Without an upstream
    /// refresh token, never past the domain's access token's `exp`.
    #[must_use]
    pub fn access_token_lifetime(mut self, d: Duration) -> Self {
        self.access_lifetime = Some(d);
        self
    }

    /// Lifetime of the proxy's refresh tokens (default 30 days), capped by the life
    /// of the domain's refresh token.
    #[must_use]
    pub fn refresh_token_lifetime(mut self, d: Duration) -> Self {
        self.refresh_lifetime = Some(d);
        self
    }

    /// Lifetime assumed for the domain's refresh tokens when its token response
    /// does not give one (default 7 days, the identity domain's default).
    #[must_use]
    pub fn upstream_refresh_token_lifetime(mut self, d: Duration) -> Self {
        self.upstream_refresh_lifetime = Some(d);
        self
    }

    /// Where the state lives (default: a new [`MemoryStore`], one process). A store
    /// shared with other processes ([`Store::is_shared`], e.g. a Redis store) must
    /// encrypt at rest ([`Store::encrypts_at_rest`], e.g. wrapped in an
    /// `EncryptedStore`): it holds the users' domain tokens.
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Accepts a shared store that does not encrypt (plaintext tokens in Redis).
    /// For tests only.
    #[must_use]
    pub fn allow_unencrypted_store(mut self) -> Self {
        self.allow_unencrypted_store = true;
        self
    }

    /// How long this replica remembers that one of its access tokens is valid
    /// (default 1 s; zero turns it off). Within that time a tool call with the
    /// same token reads nothing from the store (otherwise two reads: the token's
    /// record and its login).
    ///
    /// The trade-off: a revocation, a reused code or refresh token, or a refused
    /// upstream refresh handled by THIS replica takes effect here at once, but
    /// another replica sharing the store may still accept the token for up to
    /// this long. An entry answers only for the exact token validated (keyed by
    /// its hash), and never past the token's expiry or the moment its upstream
    /// token is due for refresh.
    ///
    /// At most 60 s: [`OAuthProxyBuilder::build`] refuses a longer one (a revocation
    /// elsewhere must reach every replica within a minute).
    #[must_use]
    pub fn validation_cache_ttl(mut self, ttl: Duration) -> Self {
        self.validation_cache_ttl = Some(ttl);
        self
    }

    /// How many client registrations (`POST /register`) this process accepts: on
    /// average `per_minute`, at most `burst` at once (default 60 a minute, bursts of
    /// 20: far above what real MCP clients need, which register once per install).
    /// Beyond it `/register` answers 429 `temporarily_unavailable` with
    /// `Retry-After`. The limit is per process and for all callers together:
    /// behind a load balancer the proxy sees the balancer's address, so limiting
    /// each client address is the reverse proxy's job.
    #[must_use]
    pub fn registration_rate(mut self, per_minute: u32, burst: u32) -> Self {
        self.registration_rate = Some((per_minute, burst));
        self
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The HTTP client for the domain (default: no redirects, 5 s connect and 15 s
    /// total timeouts).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Validates the configuration; no I/O (the domain is discovered on first use).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a missing or invalid base URL (an http(s)
    /// origin; http only on loopback), resource, domain URL, client credentials,
    /// redirect URI pattern, default scope, a lifetime under one second, a signing
    /// key shorter than 32 bytes, a validation cache TTL over 60 s, or a shared store
    /// that does not encrypt at rest (unless
    /// [`OAuthProxyBuilder::allow_unencrypted_store`]).
    pub fn build(self) -> Result<OAuthProxy> {
        let invalid = |m: &'static str| Error::new(ErrorKind::InvalidConfig, m);
        let base = Url::parse(
            self.base_url
                .as_deref()
                .ok_or_else(|| invalid("base url is required"))?,
        )
        .map_err(|_| invalid("base url is not a valid url"))?;
        let secure = base.scheme() == "https";
        if !(secure || base.scheme() == "http")
            || base.path() != "/"
            || base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.host_str().is_none()
        {
            return Err(invalid(
                "base url must be an http(s) origin without path, e.g. https://mcp.example.com",
            ));
        }
        if !secure && !crate::exchange::is_loopback(base.host()) {
            return Err(invalid(
                "base url must use https unless it is a loopback host",
            ));
        }
        let base = base.origin().ascii_serialization();
        let resource = match self.resource {
            Some(r) => {
                let url = Url::parse(&r).map_err(|_| invalid("resource is not a valid url"))?;
                if !matches!(url.scheme(), "http" | "https")
                    || url.query().is_some()
                    || url.fragment().is_some()
                {
                    return Err(invalid("resource must be an http(s) url"));
                }
                url.to_string()
            }
            None => format!("{base}/mcp"),
        };
        let domain_url = parse_domain_url(
            self.domain_url
                .as_deref()
                .ok_or_else(|| invalid("domain url is required"))?,
        )?;
        let (client_id, client_secret) = self
            .client
            .ok_or_else(|| invalid("client credentials are required"))?;
        if client_id.is_empty() || client_secret.is_empty() {
            return Err(invalid("client id and secret must not be empty"));
        }
        let key = self
            .signing_key
            .ok_or_else(|| invalid("a signing key is required"))?;
        if key.len() < MIN_SIGNING_KEY {
            return Err(invalid("the signing key must be at least 32 bytes"));
        }
        let patterns = match self.patterns {
            Some(list) => list
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>>>()?,
            None => redirect::DEFAULT_PATTERNS
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>>>()?,
        };
        let default_scopes = self
            .default_scopes
            .unwrap_or_else(|| vec!["openid".to_owned()]);
        if default_scopes.iter().any(|s| !pages::is_scope_token(s)) {
            return Err(invalid("a default scope is not a valid scope token"));
        }
        let lifetimes = [
            self.access_lifetime,
            self.refresh_lifetime,
            self.upstream_refresh_lifetime,
        ];
        if lifetimes.iter().flatten().any(|d| d.as_secs() == 0) {
            return Err(invalid("token lifetimes must be at least one second"));
        }
        let validation_ttl = self
            .validation_cache_ttl
            .unwrap_or(validate::DEFAULT_VALIDATION_TTL);
        if validation_ttl > validate::MAX_VALIDATION_TTL {
            return Err(invalid("the validation cache ttl must be at most 60 s"));
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let http = match self.http {
            Some(c) => c,
            None => crate::http_util::client_without_redirects(
                Duration::from_secs(5),
                Some(Duration::from_secs(15)),
            )?,
        };
        let validator = BearerAuth::builder()
            .domain_url(domain_url.as_str())
            .resource(resource.clone())
            .allow_any_audience()
            .clock(Arc::clone(&clock))
            .http_client(http.clone())
            // Each upstream token is validated once, when it arrives: nothing to
            // remember (the proxy remembers the validations of its own tokens).
            .validation_cache_ttl(Duration::ZERO)
            .build()?;
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(Arc::clone(&clock))));
        if store.is_shared() && !store.encrypts_at_rest() && !self.allow_unencrypted_store {
            return Err(invalid(
                "the store is shared but does not encrypt at rest: wrap it in an EncryptedStore (allow_unencrypted_store is for tests only)",
            ));
        }
        let (per_minute, burst) = self
            .registration_rate
            .unwrap_or(register::DEFAULT_REGISTRATION_RATE);
        if per_minute == 0 || burst == 0 {
            return Err(invalid(
                "the registration rate and burst must be at least 1",
            ));
        }
        let mut form_action = format!("'self' {}", domain_url.origin().ascii_serialization());
        for p in &patterns {
            form_action.push(' ');
            form_action.push_str(&p.origin());
        }
        let inner = Inner {
            tokens: OwnTokens::new(&key, &base, &resource)?,
            cookie_key: crypto::derive_key(&key, "oci-token-exchange proxy consent cookie v1"),
            upstream: Upstream::new(domain_url, client_id, client_secret, http, validator),
            base,
            resource,
            secure,
            patterns,
            default_scopes,
            consent: self.consent.unwrap_or(true),
            access_lifetime: self.access_lifetime.unwrap_or(DEFAULT_ACCESS_LIFETIME),
            refresh_lifetime: self.refresh_lifetime.unwrap_or(DEFAULT_REFRESH_LIFETIME),
            upstream_refresh_lifetime: self
                .upstream_refresh_lifetime
                .unwrap_or(DEFAULT_UPSTREAM_REFRESH_LIFETIME),
            store,
            clock,
            refreshing: Mutex::default(),
            parsed: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            refresh_backoff: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(validate::UNVALIDATED_BACKOFF.max(validate::FAILED_REFRESH_BACKOFF))
                .build(),
            validations: crate::mcp::Validations::new(validation_ttl),
            form_action,
            registrations: register::RateLimit::new(per_minute, burst),
        };
        Ok(OAuthProxy {
            inner: Arc::new(inner),
        })
    }
}

impl OAuthProxy {
    /// A builder.
    #[must_use]
    pub fn builder() -> OAuthProxyBuilder {
        OAuthProxyBuilder::default()
    }

    /// The axum router of every authorization-server endpoint:
    /// `GET /.well-known/oauth-authorization-server`, `POST /register`,
    /// `GET /authorize`, `GET`+`POST /consent`, `GET /auth/callback`,
    /// `POST /token`, `POST /revoke`. Merge it with the MCP routes (under
    /// [`OAuthProxy::bearer_auth`]) at the root of the base URL. The JSON
    /// endpoints answer CORS requests from any origin (they use no cookies); the
    /// pages do not. The RFC 9728 resource metadata is not here: the bearer layer
    /// serves it to requests that reach it, so route
    /// `/.well-known/oauth-protected-resource/mcp` (or a fallback) under that layer.
    pub fn router(&self) -> axum::Router {
        use axum::routing::{get, post};
        // Called from scripts of other origins (browser-based MCP clients), without
        // cookies: CORS for any origin.
        let api = axum::Router::new()
            .route(
                register::METADATA_PATH,
                get(register::metadata).options(pages::preflight),
            )
            .route(
                "/register",
                post(register::register).options(pages::preflight),
            )
            .route("/token", post(token::token).options(pages::preflight))
            .route("/revoke", post(token::revoke).options(pages::preflight))
            .layer(axum::middleware::map_response(pages::allow_any_origin));
        // Browser navigations only: no CORS.
        let pages = axum::Router::new()
            .route("/authorize", get(authorize::authorize))
            .route(
                "/consent",
                get(authorize::consent_page).post(authorize::consent_post),
            )
            .route("/auth/callback", get(authorize::callback));
        api.merge(pages).with_state(Arc::clone(&self.inner))
    }

    /// [`BearerAuth`] in proxy mode, for the MCP endpoint: accepts only this proxy's
    /// own access tokens (signature, `iss`, `aud` = the resource, `exp`, not
    /// revoked), refreshes the user's domain token when it expires within 60 s (one
    /// refresh per login at a time), and gives tools that domain token as
    /// [`AccessToken`]. Its RFC 9728 metadata names this proxy as the authorization
    /// server.
    #[must_use]
    pub fn bearer_auth(&self) -> BearerAuth {
        BearerAuth::proxied(
            &self.inner.upstream.validator,
            &self.inner.resource,
            &self.inner.base,
            Arc::clone(&self.inner),
        )
    }

    /// The issuer (the base URL).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.base
    }
}
