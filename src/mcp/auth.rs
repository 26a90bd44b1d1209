//! Bearer-token validation in front of an MCP server, and its RFC 9728 metadata.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use url::Url;

use super::token::AccessToken;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{is_loopback, parse_domain_url};
use crate::jws::Jws;
use crate::key::PublicKey;
use crate::secret::SecretString;
use crate::session::BoxFuture;

const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// Default clock-skew allowance for `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default minimum time between two JWKS fetches caused by unknown `kid`s.
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Keys older than this are fetched again on the next request, so keys removed
/// from the JWKS stop being trusted.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why a request is refused.
struct Rejection {
    status: StatusCode,
    /// RFC 6750 error code, if a token was presented.
    error: Option<&'static str>,
    description: &'static str,
    scope: Option<String>,
}

impl Rejection {
    fn missing() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: None,
            description: "a bearer token is required",
            scope: None,
        }
    }

    fn invalid(description: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: Some("invalid_token"),
            description,
            scope: None,
        }
    }

    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: None,
            description: "the identity domain's signing keys cannot be fetched",
            scope: None,
        }
    }
}

#[derive(Default)]
struct Keys {
    issuer: Option<String>,
    by_kid: HashMap<String, PublicKey>,
    /// Last successful fetch.
    fetched_at: Option<SystemTime>,
    /// Last fetch attempt, successful or not.
    attempted_at: Option<SystemTime>,
}

struct Inner {
    domain_url: Url,
    resource: String,
    metadata_paths: Vec<String>,
    resource_metadata_url: String,
    audience: Option<String>,
    required_scopes: Vec<String>,
    leeway: Duration,
    refetch_interval: Duration,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    fetch: tokio::sync::Mutex<()>,
}

/// Validates bearer tokens issued by an OCI IAM identity domain, as the MCP
/// authorization spec asks of a resource server.
///
/// - the signature, against the domain's JWKS found through OIDC discovery
///   (`{domain}/.well-known/openid-configuration`), RS256 only; keys are cached and
///   re-fetched when a token names an unknown `kid`, at most once per refetch
///   interval (default 60 s), so a flood of bogus `kid`s cannot hammer the domain;
/// - `iss` (the discovery document's issuer), `exp` and `nbf` with a small leeway
///   (default 30 s), the audience when configured, and the required scopes.
///
/// Refusals: 401 with `WWW-Authenticate: Bearer resource_metadata="..."` (plus
/// `error="invalid_token"` when a token was presented), 403 `insufficient_scope`,
/// 503 when the keys cannot be fetched. Accepted requests carry an
/// [`AccessToken`] in their extensions. It also serves RFC 9728 protected-resource
/// metadata at `/.well-known/oauth-protected-resource` and its path-inserted form
/// (`/.well-known/oauth-protected-resource/mcp` for a resource at `/mcp`).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct BearerAuth {
    inner: Arc<Inner>,
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("domain_url", &self.inner.domain_url.as_str())
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
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
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

    /// Minimum time between JWKS fetches caused by unknown `kid`s (default 60 s).
    #[must_use]
    pub fn jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = Some(interval);
        self
    }

    /// The clock for `exp`/`nbf` checks (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
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
    /// or when neither an audience nor `allow_any_audience` was given.
    pub fn build(self) -> Result<BearerAuth> {
        let invalid = |m: &'static str| Error::new(ErrorKind::InvalidConfig, m);
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
        let path = resource.path().trim_end_matches('/');
        let mut metadata_paths = vec![METADATA_PATH.to_owned()];
        if !path.is_empty() {
            metadata_paths.push(format!("{METADATA_PATH}{path}"));
        }
        let origin = resource.origin().ascii_serialization();
        let resource_metadata_url = format!(
            "{origin}{}",
            metadata_paths.last().map_or(METADATA_PATH, String::as_str)
        );
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| invalid("cannot build the http client").with_source(e))?,
        };
        Ok(BearerAuth {
            inner: Arc::new(Inner {
                domain_url,
                resource: resource.as_str().to_owned(),
                metadata_paths,
                resource_metadata_url,
                audience: self.audience,
                required_scopes: self.required_scopes,
                leeway: self.leeway.unwrap_or(DEFAULT_LEEWAY),
                refetch_interval: self.refetch_interval.unwrap_or(DEFAULT_REFETCH_INTERVAL),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                http,
                keys: RwLock::new(Keys::default()),
                fetch: tokio::sync::Mutex::new(()),
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

    /// The RFC 9728 protected-resource metadata document.
    #[must_use]
    pub fn metadata(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("resource".into(), json!(self.inner.resource));
        doc.insert(
            "authorization_servers".into(),
            json!([self.inner.domain_url.as_str().trim_end_matches('/')]),
        );
        doc.insert("bearer_methods_supported".into(), json!(["header"]));
        if !self.inner.required_scopes.is_empty() {
            doc.insert("scopes_supported".into(), json!(self.inner.required_scopes));
        }
        Value::Object(doc)
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

    async fn check(&self, token: &str) -> std::result::Result<AccessToken, Rejection> {
        let inner = &self.inner;
        let jws =
            Jws::parse(token).ok_or_else(|| Rejection::invalid("the token is not an RS256 JWT"))?;
        let (key, issuer) = self.key_for(jws.kid()).await?;
        if !jws.verify(&key) {
            return Err(Rejection::invalid("the token's signature is not valid"));
        }
        let claims = jws.claims;
        if claims.get("iss").and_then(Value::as_str) != issuer.as_deref() {
            return Err(Rejection::invalid("the token was issued by another issuer"));
        }
        let now = inner.clock.now();
        let time = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        };
        let exp = time("exp").ok_or_else(|| Rejection::invalid("the token has no exp"))?;
        if exp.checked_add(inner.leeway).is_some_and(|end| end <= now) {
            return Err(Rejection::invalid("the token has expired"));
        }
        let latest = now.checked_add(inner.leeway).unwrap_or(now);
        if time("nbf").is_some_and(|nbf| nbf > latest) {
            return Err(Rejection::invalid("the token is not valid yet"));
        }
        if let Some(audience) = &inner.audience {
            let matches = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !matches {
                return Err(Rejection::invalid(
                    "the token is not for this resource (audience)",
                ));
            }
        }
        let scopes = scopes_of(&claims);
        let missing: Vec<&str> = inner
            .required_scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Rejection {
                status: StatusCode::FORBIDDEN,
                error: Some("insufficient_scope"),
                description: "the token lacks a required scope",
                scope: Some(inner.required_scopes.join(" ")),
            });
        }
        Ok(AccessToken {
            token: SecretString::new(token),
            claims: Arc::new(claims),
            scopes,
        })
    }

    /// The key for `kid` and the issuer, fetching the JWKS when the key is unknown
    /// or the keys are older than an hour (at most once per refetch interval).
    async fn key_for(
        &self,
        kid: Option<&str>,
    ) -> std::result::Result<(PublicKey, Option<String>), Rejection> {
        let inner = &self.inner;
        let fresh = |keys: &Keys, now: SystemTime| {
            keys.fetched_at
                .is_some_and(|at| now.duration_since(at).unwrap_or(Duration::ZERO) < JWKS_MAX_AGE)
        };
        {
            let keys = inner.keys.read().unwrap_or_else(PoisonError::into_inner);
            if fresh(&keys, inner.clock.now())
                && let Some(found) = lookup(&keys, kid)
            {
                return Ok(found);
            }
        }
        let _single_flight = inner.fetch.lock().await;
        let now = inner.clock.now();
        {
            let keys = inner.keys.read().unwrap_or_else(PoisonError::into_inner);
            if fresh(&keys, now)
                && let Some(found) = lookup(&keys, kid)
            {
                return Ok(found);
            }
            let recently = keys.attempted_at.is_some_and(|at| {
                now.duration_since(at).unwrap_or(Duration::ZERO) < inner.refetch_interval
            });
            if recently {
                // Rate-limited: answer from what is known, without asking the domain.
                return answer(&keys, kid);
            }
        }
        let fetched = self.fetch_keys().await;
        let mut keys = inner.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.attempted_at = Some(now);
        if let Ok((issuer, by_kid)) = fetched {
            keys.issuer = Some(issuer);
            keys.by_kid = by_kid;
            keys.fetched_at = Some(now);
        }
        answer(&keys, kid)
    }

    async fn get_json(&self, url: &str) -> Result<Map<String, Value>> {
        let failed = || {
            Error::new(
                ErrorKind::Transport,
                "cannot fetch an identity domain document",
            )
        };
        let parsed = Url::parse(url).map_err(|_| failed())?;
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && is_loopback(parsed.host()))
        {
            return Err(failed());
        }
        let mut response = self
            .inner
            .http
            .get(parsed.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| failed().with_source(e.without_url()))?;
        // A caller's client may follow redirects: only the URL asked for counts.
        if !response.status().is_success() || response.url() != &parsed {
            return Err(failed());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed().with_source(e.without_url()))?
        {
            if bytes.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(failed());
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(failed()),
        }
    }

    async fn fetch_keys(&self) -> Result<(String, HashMap<String, PublicKey>)> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.inner.domain_url.as_str().trim_end_matches('/')
        );
        let discovery = self.get_json(&discovery_url).await?;
        let bad = || {
            Error::new(
                ErrorKind::MalformedResponse,
                "discovery document lacks issuer or jwks_uri",
            )
        };
        let issuer = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        let jwks = self.get_json(&jwks_uri).await?;
        let mut by_kid = HashMap::new();
        for jwk in jwks
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |n: &str| jwk.get(n).and_then(Value::as_str);
            if field("kty") != Some("RSA") || field("use").is_some_and(|u| u != "sig") {
                continue;
            }
            if let (Some(n), Some(e)) = (field("n"), field("e"))
                && let Ok(key) = PublicKey::from_jwk_components(n, e)
            {
                by_kid.insert(field("kid").unwrap_or_default().to_owned(), key);
            }
        }
        Ok((issuer, by_kid))
    }

    fn metadata_response(&self, request: &Request<Body>) -> Option<Response<Body>> {
        if request.method() != Method::GET
            || !self
                .inner
                .metadata_paths
                .iter()
                .any(|p| p == request.uri().path())
        {
            return None;
        }
        let mut response = Response::new(Body::from(self.metadata().to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Some(response)
    }

    fn reject(&self, rejection: &Rejection) -> Response<Body> {
        let mut challenge = String::from("Bearer ");
        if let Some(error) = rejection.error {
            challenge.push_str(&format!(
                "error=\"{error}\", error_description=\"{}\", ",
                rejection.description
            ));
        }
        if let Some(scope) = &rejection.scope {
            challenge.push_str(&format!("scope=\"{scope}\", "));
        }
        challenge.push_str(&format!(
            "resource_metadata=\"{}\"",
            self.inner.resource_metadata_url
        ));
        let body = json!({
            "error": rejection.error.unwrap_or("unauthorized"),
            "error_description": rejection.description,
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = rejection.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if rejection.status != StatusCode::SERVICE_UNAVAILABLE
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            headers.insert(http::header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// The bearer token of a request: `Ok(None)` without an Authorization header.
    fn bearer(request: &Request<Body>) -> std::result::Result<Option<&str>, Rejection> {
        let mut values = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Rejection::invalid("more than one authorization header"));
        }
        let value = value
            .to_str()
            .map_err(|_| Rejection::invalid("authorization header is not ascii"))?;
        match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(Some(token.trim()))
            }
            _ => Err(Rejection::invalid("authorization is not a bearer token")),
        }
    }
}

/// The key for `kid` (without a kid, only an unambiguous single key) and the issuer.
fn lookup(keys: &Keys, kid: Option<&str>) -> Option<(PublicKey, Option<String>)> {
    let key = match kid {
        Some(kid) => keys.by_kid.get(kid),
        None if keys.by_kid.len() == 1 => keys.by_kid.values().next(),
        None => None,
    }?;
    Some((key.clone(), keys.issuer.clone()))
}

/// The key, or why there is none: with no keys at all the domain is unreachable
/// (503), not the token bad.
fn answer(
    keys: &Keys,
    kid: Option<&str>,
) -> std::result::Result<(PublicKey, Option<String>), Rejection> {
    match lookup(keys, kid) {
        Some(found) => Ok(found),
        None if keys.by_kid.is_empty() => Err(Rejection::unavailable()),
        None => Err(Rejection::invalid("the token's signing key is unknown")),
    }
}

fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
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

/// The tower layer of [`BearerAuth`].
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    auth: BearerAuth,
}

impl<S> tower::Layer<S> for BearerAuthLayer {
    type Service = BearerAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// The service [`BearerAuthLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct BearerAuthService<S> {
    auth: BearerAuth,
    inner: S,
}

impl<S, ResBody> tower::Service<Request<Body>> for BearerAuthService<S>
where
    S: tower::Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if let Some(response) = auth.metadata_response(&request) {
                return Ok(response);
            }
            let checked = match BearerAuth::bearer(&request) {
                Ok(Some(token)) => auth.check(token).await,
                Ok(None) => Err(Rejection::missing()),
                Err(rejection) => Err(rejection),
            };
            match checked {
                Ok(token) => {
                    request.extensions_mut().insert(token);
                    Ok(inner.call(request).await?.map(Body::new))
                }
                Err(rejection) => Ok(auth.reject(&rejection)),
            }
        })
    }
}
