//! Bearer-token validation: the [`BearerAuth`] checks and its builder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value};
use url::Url;

use super::jwks::{JwksSettings, KeyCache, Miss};
use super::layer::BearerAuthLayer;
use super::metadata::{METADATA_PATH, metadata_paths};
use super::token::AccessToken;
use super::validations::Validations;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::parse_domain_url;
use crate::jwt::{self, numeric_date};
use crate::secret::SecretString;

/// Default clock-skew allowance for `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default minimum time between two JWKS fetches caused by unknown `kid`s.
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Default longest time keys are trusted without a successful refresh.
const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of a remembered positive validation.
const DEFAULT_VALIDATION_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime of a remembered validation the builder accepts (a remembered
/// validation also ends when the keys are next replaced, at least hourly).
const MAX_VALIDATION_TTL: Duration = Duration::from_secs(3600);

/// Why a request is refused.
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    /// RFC 6750 error code, if a token was presented.
    pub(crate) error: Option<&'static str>,
    pub(crate) description: &'static str,
    pub(crate) scope: Option<String>,
}

impl Rejection {
    pub(super) fn missing() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: None,
            description: "a bearer token is required",
            scope: None,
        }
    }

    pub(crate) fn invalid(description: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: Some("invalid_token"),
            description,
            scope: None,
        }
    }

    fn unavailable() -> Self {
        Self::unavailable_because("the identity domain's signing keys cannot be fetched")
    }

    pub(crate) fn unavailable_because(description: &'static str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: None,
            description,
            scope: None,
        }
    }
}

pub(super) struct Inner {
    pub(super) domain_url: Url,
    pub(super) resource: String,
    pub(super) metadata_paths: Vec<String>,
    resource_metadata_url: String,
    /// The authorization server named in the RFC 9728 metadata.
    pub(super) authorization_server: String,
    /// Proxy mode: the [`OAuthProxy`](crate::OAuthProxy) whose own tokens are accepted.
    #[cfg(feature = "oauth-proxy")]
    proxy: Option<Arc<crate::proxy::Inner>>,
    audience: Option<String>,
    pub(super) required_scopes: Vec<String>,
    leeway: Duration,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyCache>,
    /// Positive validations remembered (the proxy's own tokens: the proxy's).
    validations: Validations<Remembered>,
    counters: Counters,
}

/// What a [`BearerAuth`] has validated since it was built (clones share it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BearerAuthStats {
    /// Tokens accepted after the full check (signature, claims).
    pub checked: u64,
    /// Tokens accepted from a remembered validation
    /// ([`BearerAuthBuilder::validation_cache_ttl`]).
    pub remembered: u64,
    /// Tokens refused, or not checked because the keys were unavailable.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    checked: AtomicU64,
    remembered: AtomicU64,
    refused: AtomicU64,
}

/// A remembered validation: what it gave, and the key it was checked with.
#[derive(Clone)]
struct Remembered {
    access: AccessToken,
    kid: Option<String>,
    /// The keys' generation when it was checked.
    generation: u64,
}

/// Validates bearer tokens issued by an OCI IAM identity domain, as the MCP
/// authorization spec asks of a resource server.
///
/// - the signature, against the domain's JWKS found through OIDC discovery
///   (`{domain}/.well-known/openid-configuration`), RS256 only; keys are cached and
///   re-fetched when a token names an unknown `kid`, at most once per refetch
///   interval (default 60 s), so a flood of bogus `kid`s cannot hammer the domain.
///   An unknown `kid` on a token that says (`iat`, unverified, at most the leeway
///   ahead of now) it was issued no earlier than the keys in hand were fetched, or
///   on any token after a failed fetch, may be a key the domain rolled to since:
///   for those the interval is 5 s, and while a fetch cannot be made the answer is
///   503 (with `Retry-After`), not 401 (which sends the user to log in again). An
///   unknown `kid` on an older token is refused 401 once the keys are known good.
///   Fetches run in the background: tokens naming a known key never wait for the
///   domain. Keys are refreshed hourly, keys under 2048 bits are ignored, and keys
///   not refreshed for the maximum key age (default 24 h) are no longer trusted
///   (503 until a fetch succeeds);
/// - `iss` (the discovery document's issuer), `exp` (required) and `nbf` as JWT
///   NumericDates (fractions allowed) with a small leeway (default 30 s) against the
///   configured clock, the audience when configured, and the required scopes;
///   a `crit` header is refused.
///
/// A positive validation is remembered for a short while (default 60 s, never past
/// the token's `exp`), keyed by the SHA-256 of the whole token: a
/// warm call with the same token skips the signature check and the parse, but not
/// the keys' state: it stands only while the keys it was checked with are still
/// the ones in hand, still name its `kid` and are still trusted. See
/// [`BearerAuthBuilder::validation_cache_ttl`].
///
/// Refusals: 401 with `WWW-Authenticate: Bearer resource_metadata="..."` (plus
/// `error="invalid_token"` when a bearer token was presented; none for a missing
/// token or another scheme, RFC 6750 section 3.1), 403 `insufficient_scope`,
/// 503 when the keys cannot be fetched. Accepted requests carry an
/// [`AccessToken`] in their extensions. It also serves RFC 9728 protected-resource
/// metadata at `/.well-known/oauth-protected-resource` and its path-inserted form
/// (`/.well-known/oauth-protected-resource/mcp` for a resource at `/mcp`).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct BearerAuth {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("domain_url", &self.inner.domain_url.as_str())
            .field("authorization_server", &self.inner.authorization_server)
            .field("resource", &self.inner.resource)
            .field("audience", &self.inner.audience)
            .field("required_scopes", &self.inner.required_scopes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BearerAuth`].
#[derive(Debug, Default)]
pub struct BearerAuthBuilder {
    domain_url: Option<String>,
    resource: Option<String>,
    audience: Option<String>,
    any_audience: bool,
    required_scopes: Vec<String>,
    leeway: Option<Duration>,
    refetch_interval: Option<Duration>,
    max_key_age: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
    validation_ttl: Option<Duration>,
}

impl BearerAuthBuilder {
    /// The identity domain that issues the tokens (required); same rules as
    /// [`TokenExchangeBuilder::domain_url`](crate::TokenExchangeBuilder::domain_url).
    #[must_use]
    pub fn domain_url(mut self, url: impl Into<String>) -> Self {
        self.domain_url = Some(url.into());
        self
    }

    /// This server's MCP endpoint as clients reach it, e.g.
    /// `https://mcp.example.com/mcp` (required): the RFC 9728 `resource`.
    #[must_use]
    pub fn resource(mut self, url: impl Into<String>) -> Self {
        self.resource = Some(url.into());
        self
    }

    /// The audience the token's `aud` must contain: this server, as the identity
    /// domain names it. Required, unless [`BearerAuthBuilder::allow_any_audience`]:
    /// without it, a token the user got for another application of the same domain
    /// would be accepted here (and used to act as them in OCI).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Accepts tokens for any audience. Only for development (the emulator) or
    /// when every token of the domain is meant for this server.
    #[must_use]
    pub fn allow_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Scopes every token must carry (default: none).
    #[must_use]
    pub fn required_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default 30 s).
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }

    /// Minimum time between JWKS fetches caused by unknown `kid`s (default 60 s;
    /// at most 5 s after a failed fetch or for tokens issued after the last one).
    #[must_use]
    pub fn jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = Some(interval);
        self
    }

    /// How long keys are trusted without a successful refresh, while the domain
    /// cannot be reached (default 24 h); then validation answers unavailable until
    /// a fetch succeeds.
    #[must_use]
    pub fn max_key_age(mut self, age: Duration) -> Self {
        self.max_key_age = Some(age);
        self
    }

    /// The clock for `exp`/`nbf` checks and key ages (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long a positive validation is remembered (default 60 s, at most 1 h; zero
    /// turns it off). The same token is then accepted without a new signature
    /// check until the earlier of this and its `exp` (within the leeway after it, it
    /// is checked each time), and only while
    /// the keys it was checked with stand: a fetch of the domain's keys (hourly, or
    /// for an unknown `kid`) makes it checked again, so a withdrawn key is dropped as
    /// soon as it would be without the cache; keys past the maximum age are not
    /// trusted for it either. Tokens are JWTs, checked offline: nothing else ends
    /// one sooner. Entries weigh at most 32 MiB in all.
    #[must_use]
    pub fn validation_cache_ttl(mut self, ttl: Duration) -> Self {
        self.validation_ttl = Some(ttl);
        self
    }

    /// The HTTP client for discovery and JWKS (default: one without redirects and
    /// with 10 s timeouts).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Validates the configuration; no I/O.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a missing or invalid domain URL or resource,
    /// when neither an audience nor `allow_any_audience` was given, or for a
    /// validation cache TTL over 1 h.
    pub fn build(self) -> Result<BearerAuth> {
        let invalid = |m: &'static str| Error::new(ErrorKind::InvalidConfig, m);
        let validation_ttl = self.validation_ttl.unwrap_or(DEFAULT_VALIDATION_TTL);
        if validation_ttl > MAX_VALIDATION_TTL {
            return Err(invalid("the validation cache TTL must be at most 1 hour"));
        }
        if self.audience.is_none() && !self.any_audience {
            return Err(invalid(
                "an audience is required (or call allow_any_audience explicitly)",
            ));
        }
        let domain_url = parse_domain_url(
            self.domain_url
                .as_deref()
                .ok_or_else(|| invalid("domain url is required"))?,
        )?;
        let resource = Url::parse(
            self.resource
                .as_deref()
                .ok_or_else(|| invalid("resource url is required"))?,
        )
        .map_err(|_| invalid("resource is not a valid url"))?;
        if !matches!(resource.scheme(), "https" | "http")
            || resource.query().is_some()
            || resource.fragment().is_some()
        {
            return Err(invalid(
                "resource must be an http(s) url without query or fragment",
            ));
        }
        let metadata_paths = metadata_paths(resource.path());
        let origin = resource.origin().ascii_serialization();
        let resource_metadata_url = format!(
            "{origin}{}",
            metadata_paths.last().map_or(METADATA_PATH, String::as_str)
        );
        let http = match self.http {
            Some(client) => client,
            None => crate::http_util::client_without_redirects(
                Duration::from_secs(5),
                Some(Duration::from_secs(10)),
            )?,
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let leeway = self.leeway.unwrap_or(DEFAULT_LEEWAY);
        let keys = KeyCache::new(JwksSettings {
            domain_url: domain_url.clone(),
            http,
            clock: Arc::clone(&clock),
            refetch_interval: self.refetch_interval.unwrap_or(DEFAULT_REFETCH_INTERVAL),
            max_key_age: self.max_key_age.unwrap_or(DEFAULT_MAX_KEY_AGE),
            leeway,
        });
        Ok(BearerAuth {
            inner: Arc::new(Inner {
                authorization_server: domain_url.as_str().trim_end_matches('/').to_owned(),
                #[cfg(feature = "oauth-proxy")]
                proxy: None,
                domain_url,
                resource: resource.as_str().to_owned(),
                metadata_paths,
                resource_metadata_url,
                audience: self.audience,
                required_scopes: self.required_scopes,
                leeway,
                clock,
                keys,
                validations: Validations::new(validation_ttl),
                counters: Counters::default(),
            }),
        })
    }
}

impl BearerAuth {
    /// A builder.
    #[must_use]
    pub fn builder() -> BearerAuthBuilder {
        BearerAuthBuilder::default()
    }

    /// The tower layer (usable with axum's `Router::layer`).
    #[must_use]
    pub fn layer(&self) -> BearerAuthLayer {
        BearerAuthLayer { auth: self.clone() }
    }

    /// The URL of this resource's RFC 9728 metadata, as sent in `WWW-Authenticate`.
    #[must_use]
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.resource_metadata_url
    }

    /// What this validator (and its clones) has accepted and refused. In proxy
    /// mode ([`OAuthProxy::bearer_auth`](crate::OAuthProxy::bearer_auth)) the
    /// proxy's own tokens are not counted here.
    #[must_use]
    pub fn stats(&self) -> BearerAuthStats {
        let c = &self.inner.counters;
        BearerAuthStats {
            checked: c.checked.load(Ordering::Relaxed),
            remembered: c.remembered.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Validates a bearer token (without the `Bearer ` prefix).
    ///
    /// # Errors
    /// [`ErrorKind::SignatureRejected`] for a token that is not valid (naming the
    /// failed check, never echoing the token), [`ErrorKind::InsufficientScope`] for a
    /// valid token without the required scopes, [`ErrorKind::Transport`] when the
    /// domain's keys cannot be fetched.
    pub async fn validate(&self, token: &str) -> Result<AccessToken> {
        self.check(token).await.map_err(|r| {
            let kind = match r.status {
                StatusCode::FORBIDDEN => ErrorKind::InsufficientScope,
                StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Transport,
                _ => ErrorKind::SignatureRejected,
            };
            Error::new(kind, r.description)
        })
    }

    /// Proxy mode: a `BearerAuth` for `resource` that accepts the tokens of
    /// `proxy` (issuer `authorization_server`), built from the proxy's validator of
    /// the domain's own tokens.
    #[cfg(feature = "oauth-proxy")]
    pub(crate) fn proxied(
        validator: &BearerAuth,
        resource: &str,
        authorization_server: &str,
        proxy: Arc<crate::proxy::Inner>,
    ) -> BearerAuth {
        let v = &validator.inner;
        let path = Url::parse(resource)
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let metadata_paths = metadata_paths(&path);
        let origin = Url::parse(resource)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let resource_metadata_url = format!(
            "{origin}{}",
            metadata_paths.last().map_or(METADATA_PATH, String::as_str)
        );
        BearerAuth {
            inner: Arc::new(Inner {
                domain_url: v.domain_url.clone(),
                resource: resource.to_owned(),
                metadata_paths,
                resource_metadata_url,
                authorization_server: authorization_server.to_owned(),
                proxy: Some(proxy),
                audience: None,
                required_scopes: Vec::new(),
                leeway: v.leeway,
                clock: Arc::clone(&v.clock),
                keys: Arc::clone(&v.keys),
                // The proxy remembers its own validations.
                validations: Validations::new(Duration::ZERO),
                counters: Counters::default(),
            }),
        }
    }

    pub(super) async fn check(&self, token: &str) -> std::result::Result<AccessToken, Rejection> {
        #[cfg(feature = "oauth-proxy")]
        if let Some(proxy) = &self.inner.proxy {
            return crate::proxy::check(proxy, token).await;
        }
        let counters = &self.inner.counters;
        let checked = self.check_domain_token(token).await;
        let counter = match &checked {
            Ok((_, true)) => &counters.remembered,
            Ok((_, false)) => &counters.checked,
            Err(_) => &counters.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        checked.map(|(access, _)| access)
    }

    /// [`BearerAuth::check`] of a domain token; `true` with a remembered validation.
    async fn check_domain_token(
        &self,
        token: &str,
    ) -> std::result::Result<(AccessToken, bool), Rejection> {
        let inner = &self.inner;
        // Read before the checks (the entry made below counts in this epoch).
        let epoch = inner.validations.epoch();
        if let Some(hit) = inner.validations.get(token, inner.clock.now()).await
            && inner.keys.still_trusts(hit.kid.as_deref(), hit.generation)
        {
            return Ok((hit.access, true));
        }
        let header = jwt::header(token)
            .ok_or_else(|| Rejection::invalid("the token is not an RS256 JWT"))?;
        if header.alg != jsonwebtoken::Algorithm::RS256 || header.crit.is_some() {
            return Err(Rejection::invalid("the token is not an RS256 JWT"));
        }
        let (key, issuer, generation) = inner
            .keys
            .key_for(header.kid.as_deref(), || {
                jwt::Claims::decode(token, ErrorKind::SignatureRejected, "the token")
                    .ok()
                    .and_then(|claims| claims.time("iat"))
            })
            .await
            .map_err(|miss| match miss {
                Miss::Unknown => Rejection::invalid("the token's signing key is unknown"),
                Miss::Unavailable => Rejection::unavailable(),
            })?;
        let claims = jwt::verify(token, &key, Some(&issuer), inner.audience.as_deref())
            .map_err(|refusal| Rejection::invalid(refusal.describe()))?;
        let now = inner.clock.now();
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or_else(|| Rejection::invalid("the token has no exp"))?;
        if exp.checked_add(inner.leeway).is_none_or(|end| end <= now) {
            return Err(Rejection::invalid("the token has expired"));
        }
        let latest = now.checked_add(inner.leeway).unwrap_or(now);
        match claims.get("nbf").map(numeric_date) {
            None => {}
            Some(Some(nbf)) if nbf <= latest => {}
            Some(Some(_)) => return Err(Rejection::invalid("the token is not valid yet")),
            Some(None) => return Err(Rejection::invalid("the token's nbf is not a date")),
        }
        let scopes = scopes_of(&claims);
        let missing = inner.required_scopes.iter().any(|s| !scopes.contains(s));
        if missing {
            return Err(Rejection {
                status: StatusCode::FORBIDDEN,
                error: Some("insufficient_scope"),
                description: "the token lacks a required scope",
                scope: Some(inner.required_scopes.join(" ")),
            });
        }
        let access = AccessToken {
            token: SecretString::new(token),
            claims: Arc::new(claims),
            scopes,
        };
        // Remembered until the earlier of the TTL and the token's `exp`: the leeway
        // past it is the checks' (a token that late is checked each time), so
        // nothing is remembered of a token past its expiry.
        let until = now
            .checked_add(inner.validations.ttl())
            .map_or(exp, |ttl_end| ttl_end.min(exp));
        if now < until {
            let remembered = Remembered {
                access: access.clone(),
                kid: header.kid,
                generation,
            };
            inner
                .validations
                .insert(token, epoch, now, until, remembered)
                .await;
        }
        Ok((access, false))
    }
}

pub(crate) fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    if let Some(scope) = claims.get("scope").and_then(Value::as_str) {
        scopes.extend(scope.split_whitespace().map(str::to_owned));
    }
    match claims.get("scp") {
        Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
        Some(Value::Array(list)) => {
            scopes.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    }
    scopes
}
