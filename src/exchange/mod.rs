//! OAuth token exchange at an OCI IAM identity domain: the user's JWT for a UPST
//! bound to a session public key.

mod domain;
mod upst;

use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use url::Url;

pub use domain::commercial_domain_url;
#[cfg(feature = "mcp")]
pub(crate) use domain::{is_loopback, parse_domain_url};
pub use upst::Upst;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, HttpDetails, Result};
use crate::jwt::Claims;
use crate::key::PublicKey;
use crate::secret::SecretString;

/// `grant_type` of RFC 8693 token exchange.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` the identity domain expects: the bare literal `jwt`.
const SUBJECT_TOKEN_TYPE: &str = "jwt";
/// Path of the token endpoint below the domain URL.
const TOKEN_PATH: &str = "oauth2/v1/token";
/// Largest response body read from the token endpoint.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Longest `error_description` kept in an error.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// Default connect timeout for the client this crate builds.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of one exchange attempt (connect, send, receive).
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default number of attempts (the first plus two retries), as the Go SDK.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default delay before the first retry; doubled for each further retry.
pub(crate) const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Default upper bound of one retry delay, and of an honoured `Retry-After`.
pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The token the exchange requests.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RequestedToken {
    /// A user principal session token (`urn:oci:token-type:oci-upst`): the default.
    #[default]
    Upst,
    /// A resource principal session token (`urn:oci:token-type:oci-rpst`), as the Go
    /// and Java SDKs can request.
    Rpst {
        /// The `res_type` form field.
        res_type: String,
        /// The optional `rpst_exp` form field, sent verbatim (its unit is not
        /// documented by Oracle).
        rpst_exp: Option<String>,
    },
}

impl RequestedToken {
    fn type_uri(&self) -> &'static str {
        match self {
            Self::Upst => "urn:oci:token-type:oci-upst",
            Self::Rpst { .. } => "urn:oci:token-type:oci-rpst",
        }
    }
}

/// How the client authenticates itself to the token endpoint.
///
/// The identity domain's default is HTTP Basic with the OAuth client's id and
/// secret ([`ClientSecretBasic`]). The Go and Java SDKs can also authenticate with
/// an OCI request signature (instance principal); implement this trait for that.
pub trait ClientAuthentication: Send + Sync + fmt::Debug {
    /// Adds the client's credentials to the token request (headers, or form fields
    /// appended to `form`), before it is sent.
    ///
    /// # Errors
    /// Any error stops the exchange and is returned to the caller.
    fn authenticate(
        &self,
        headers: &mut http::HeaderMap,
        form: &mut Vec<(String, String)>,
    ) -> Result<()>;
}

/// HTTP Basic client authentication: `Authorization: Basic base64(id ":" secret)`,
/// standard padded base64 of the UTF-8 bytes, without form-encoding first (as every
/// OCI SDK does).
#[derive(Clone)]
pub struct ClientSecretBasic {
    header: http::HeaderValue,
}

impl ClientSecretBasic {
    /// Credentials of an OAuth client of the identity domain.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] if the id is empty or contains `:`, or the secret
    /// is empty.
    pub fn new(client_id: &str, client_secret: &SecretString) -> Result<Self> {
        if client_id.is_empty()
            || client_id.contains(':')
            || client_id.chars().any(char::is_control)
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "client id must be non-empty, without ':' or control characters",
            ));
        }
        if client_secret.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "client secret is empty",
            ));
        }
        let credentials =
            zeroize::Zeroizing::new(format!("{client_id}:{}", client_secret.expose_secret()));
        let encoded =
            zeroize::Zeroizing::new(format!("Basic {}", STANDARD.encode(credentials.as_bytes())));
        let mut header = http::HeaderValue::from_str(&encoded).map_err(|_| {
            Error::new(
                ErrorKind::InvalidConfig,
                "client credentials are not encodable",
            )
        })?;
        header.set_sensitive(true);
        Ok(Self { header })
    }
}

impl fmt::Debug for ClientSecretBasic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecretBasic([redacted])")
    }
}

impl ClientAuthentication for ClientSecretBasic {
    fn authenticate(
        &self,
        headers: &mut http::HeaderMap,
        _form: &mut Vec<(String, String)>,
    ) -> Result<()> {
        headers.insert(http::header::AUTHORIZATION, self.header.clone());
        Ok(())
    }
}

/// Builds a [`TokenExchange`]. `build()` validates everything and does no I/O.
#[derive(Debug, Default)]
pub struct TokenExchangeBuilder {
    domain_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    auth: Option<Arc<dyn ClientAuthentication>>,
    http_client: Option<reqwest::Client>,
    connect_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_attempts: Option<u32>,
    initial_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    requested: RequestedToken,
    extra_fields: Vec<(String, String)>,
    clock: Option<Arc<dyn Clock>>,
}

impl TokenExchangeBuilder {
    /// The identity domain's URL, e.g.
    /// `https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com`
    /// (required). A trailing `/` and an explicit `:443` are fine; a path, query,
    /// fragment or user info is an error; `http` is accepted only for loopback hosts.
    #[must_use]
    pub fn domain_url(mut self, url: impl Into<String>) -> Self {
        self.domain_url = Some(url.into());
        self
    }

    /// The OAuth client's id and secret, for HTTP Basic authentication.
    #[must_use]
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        self.client_id = Some(client_id.into());
        self.client_secret = Some(client_secret.into());
        self
    }

    /// Another way for the client to authenticate (replaces client credentials).
    #[must_use]
    pub fn client_authentication(mut self, auth: Arc<dyn ClientAuthentication>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// A `reqwest::Client` to share. Build it with
    /// `.redirect(reqwest::redirect::Policy::none())`: a client that follows a
    /// redirect re-sends the form (subject token included) to the new location
    /// before this crate sees the answer, which it then refuses. This crate's own
    /// client never follows redirects. The connect timeout then is that client's.
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Connect timeout of the client this crate builds (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Timeout of one attempt, from sending to the end of the response (default 15 s).
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Attempts per exchange, at least 1 (default 3, as the Go SDK). Only
    /// 429, 5xx, timeouts and transport failures are retried.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Backoff before the first retry and the cap of any delay (defaults 250 ms
    /// and 8 s). Each delay is
    /// drawn at random between half and all of the current step (jitter). A
    /// `Retry-After` longer than the cap ends the retries.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = Some(initial);
        self.max_backoff = Some(max);
        self
    }

    /// The token to request (default: a UPST).
    #[must_use]
    pub fn requested_token(mut self, token: RequestedToken) -> Self {
        self.requested = token;
        self
    }

    /// An extra form field sent with every exchange.
    #[must_use]
    pub fn extra_field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_fields.push((name.into(), value.into()));
        self
    }

    /// The clock used to check the subject token's expiry (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the field: a missing or invalid domain URL,
    /// missing or invalid client credentials, zero attempts or timeouts, a reserved
    /// extra field name, or a failure to build the HTTP client.
    pub fn build(self) -> Result<TokenExchange> {
        let invalid = |m: &'static str| Error::new(ErrorKind::InvalidConfig, m);
        let domain = domain::parse_domain_url(
            self.domain_url
                .as_deref()
                .ok_or_else(|| invalid("domain url is required"))?,
        )?;
        let token_url = domain
            .join(TOKEN_PATH)
            .map_err(|_| invalid("cannot build the token endpoint url"))?;
        let auth: Arc<dyn ClientAuthentication> =
            match (self.auth, self.client_id, self.client_secret) {
                (Some(auth), None, None) => auth,
                (None, Some(id), Some(secret)) => Arc::new(ClientSecretBasic::new(&id, &secret)?),
                (None, _, _) => return Err(invalid("client credentials are required")),
                (Some(_), _, _) => {
                    return Err(invalid(
                        "give either client credentials or a client authentication, not both",
                    ));
                }
            };
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(invalid("max attempts must be at least 1"));
        }
        let attempt_timeout = self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
        let connect_timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if attempt_timeout.is_zero() || connect_timeout.is_zero() {
            return Err(invalid("timeouts must be greater than zero"));
        }
        let initial_backoff = self.initial_backoff.unwrap_or(DEFAULT_INITIAL_BACKOFF);
        let max_backoff = self.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF);
        if initial_backoff > max_backoff {
            return Err(invalid("initial backoff exceeds the maximum backoff"));
        }
        const RESERVED: [&str; 7] = [
            "grant_type",
            "requested_token_type",
            "subject_token",
            "subject_token_type",
            "public_key",
            "res_type",
            "rpst_exp",
        ];
        if self
            .extra_fields
            .iter()
            .any(|(n, _)| RESERVED.contains(&n.as_str()) || n.is_empty())
        {
            return Err(invalid(
                "extra field name is empty or one the exchange sets itself",
            ));
        }
        let http = match self.http_client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(connect_timeout)
                .build()
                .map_err(|e| invalid("cannot build the http client").with_source(e))?,
        };
        Ok(TokenExchange {
            inner: Arc::new(Inner {
                token_url,
                auth,
                http,
                attempt_timeout,
                max_attempts,
                initial_backoff,
                max_backoff,
                requested: self.requested,
                extra_fields: self.extra_fields,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            }),
        })
    }
}

struct Inner {
    token_url: Url,
    auth: Arc<dyn ClientAuthentication>,
    http: reqwest::Client,
    attempt_timeout: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    requested: RequestedToken,
    extra_fields: Vec<(String, String)>,
    clock: Arc<dyn Clock>,
}

/// A client of an identity domain's token endpoint. Cheap to clone; clones share one
/// connection pool.
///
/// Constructing it does no network I/O; each [`TokenExchange::exchange`] is one
/// exchange (with bounded retries).
#[derive(Clone)]
pub struct TokenExchange {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchange")
            .field("token_url", &self.inner.token_url.as_str())
            .field("auth", &self.inner.auth)
            .field("max_attempts", &self.inner.max_attempts)
            .field("attempt_timeout", &self.inner.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// Reads the subject token locally: a JWT that has not expired at `now`.
pub(crate) fn check_subject(token: &str, now: SystemTime) -> Result<Claims> {
    let claims = Claims::decode(token, ErrorKind::SubjectTokenMalformed, "subject token")?;
    let expires_at = claims.time("exp");
    if expires_at.is_some_and(|exp| exp <= now) {
        return Err(Error::new(
            ErrorKind::SubjectTokenExpired,
            "subject token has expired; the user must log in again",
        ));
    }
    Ok(claims)
}

impl TokenExchange {
    /// A builder.
    #[must_use]
    pub fn builder() -> TokenExchangeBuilder {
        TokenExchangeBuilder::default()
    }

    /// The token endpoint URL.
    #[must_use]
    pub fn token_url(&self) -> &Url {
        &self.inner.token_url
    }

    /// Exchanges `subject_token` (the user's JWT) for a session token bound to
    /// `public_key`.
    ///
    /// The subject token is checked locally first: a token that is not a JWT, or has
    /// expired, fails without any network call. Then up to `max_attempts` requests
    /// are made, retrying only 429, 5xx, timeouts and transport failures, with
    /// jittered exponential backoff and honouring `Retry-After`. The returned UPST's
    /// `jwk` claim must match `public_key`.
    ///
    /// # Errors
    /// [`ErrorKind::SubjectTokenMalformed`], [`ErrorKind::SubjectTokenExpired`],
    /// [`ErrorKind::ExchangeRejected`] (with status, OAuth error and
    /// `opc-request-id`), [`ErrorKind::MalformedResponse`],
    /// [`ErrorKind::Transport`] or [`ErrorKind::Timeout`]. No message contains the
    /// subject token, the UPST or the client secret.
    pub async fn exchange(
        &self,
        subject_token: &SecretString,
        public_key: &PublicKey,
    ) -> Result<Upst> {
        let inner = &self.inner;
        check_subject(subject_token.expose_secret(), inner.clock.now())?;
        let mut form: Vec<(String, String)> = vec![
            ("grant_type".into(), GRANT_TYPE.into()),
            (
                "requested_token_type".into(),
                inner.requested.type_uri().into(),
            ),
            (
                "subject_token".into(),
                subject_token.expose_secret().to_owned(),
            ),
            ("subject_token_type".into(), SUBJECT_TOKEN_TYPE.into()),
            ("public_key".into(), public_key.to_spki_base64()),
        ];
        if let RequestedToken::Rpst { res_type, rpst_exp } = &inner.requested {
            form.push(("res_type".into(), res_type.clone()));
            if let Some(exp) = rpst_exp {
                form.push(("rpst_exp".into(), exp.clone()));
            }
        }
        form.extend(inner.extra_fields.iter().cloned());
        let mut headers = http::HeaderMap::new();
        inner.auth.authenticate(&mut headers, &mut form)?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let body = zeroize::Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish(),
        );
        drop(zeroize::Zeroizing::new(form));
        let secrets = [subject_token.expose_secret()];

        let mut backoff = inner.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = self.attempt(&headers, body.as_bytes(), &secrets).await;
            let err = match result {
                Ok(token) => {
                    let upst = Upst::parse(token.expose_secret())?;
                    if upst.public_key() != public_key {
                        return Err(Error::new(
                            ErrorKind::MalformedResponse,
                            "session token is bound to a different public key than the one sent",
                        ));
                    }
                    return Ok(upst);
                }
                Err(err) => err.0,
            };
            if !err.is_retryable() || attempt >= inner.max_attempts {
                return Err(err);
            }
            let mut delay = jitter(backoff);
            if let Some(after) = err.retry_after() {
                if after > inner.max_backoff {
                    return Err(err);
                }
                delay = delay.max(after);
            }
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(inner.max_backoff);
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        secrets: &[&str],
    ) -> Result<SecretString, AttemptError> {
        let inner = &self.inner;
        let response = inner
            .http
            .post(inner.token_url.clone())
            .headers(headers.clone())
            .body(body.to_vec())
            .timeout(inner.attempt_timeout)
            .send()
            .await
            .map_err(transport_error)?;
        if response.url() != &inner.token_url {
            return Err(AttemptError(Error::new(
                ErrorKind::ExchangeRejected,
                "the http client followed a redirect from the token endpoint; configure it without redirects",
            )));
        }
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut details = HttpDetails {
            status: Some(status.as_u16()),
            opc_request_id: header("opc-request-id").map(|id| truncate(&id, 100)),
            retry_after: header("retry-after")
                .and_then(|v| parse_retry_after(&v, inner.clock.now())),
            ..HttpDetails::default()
        };
        let bytes = read_limited(response).await?;
        if status.is_success() {
            #[derive(serde::Deserialize)]
            struct TokenResponse {
                token: String,
            }
            return match serde_json::from_slice::<TokenResponse>(&bytes) {
                Ok(r) => Ok(SecretString::new(r.token)),
                Err(_) => Err(AttemptError(
                    Error::new(
                        ErrorKind::MalformedResponse,
                        "token response is not json with a 'token' string",
                    )
                    .with_http(details),
                )),
            };
        }
        if status.is_redirection() {
            return Err(AttemptError(
                Error::new(
                    ErrorKind::ExchangeRejected,
                    "token endpoint answered with a redirect, which is not followed",
                )
                .with_http(details),
            ));
        }
        if let Ok(serde_json::Value::Object(map)) =
            serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            let field = |n: &str| {
                map.get(n)
                    .and_then(|v| v.as_str())
                    .map(|s| scrub(s, secrets))
            };
            details.oauth_error = field("error").map(|e| truncate(&e, 64));
            details.oauth_error_description =
                field("error_description").map(|d| truncate(&d, MAX_DESCRIPTION_CHARS));
        }
        Err(AttemptError(
            Error::new(
                ErrorKind::ExchangeRejected,
                "identity domain refused the token exchange",
            )
            .with_http(details),
        ))
    }
}

/// An attempt's error (a newtype so `?` does not mix it up with final errors).
struct AttemptError(Error);

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

fn transport_error(e: reqwest::Error) -> AttemptError {
    // reqwest's message can include the URL (never the body); keep it as source only.
    let err = if e.is_timeout() {
        Error::new(ErrorKind::Timeout, "token exchange timed out")
    } else if e.is_connect() {
        Error::new(
            ErrorKind::Transport,
            "cannot connect to the identity domain",
        )
    } else {
        Error::new(ErrorKind::Transport, "token exchange request failed")
    };
    AttemptError(err.with_source(e.without_url()))
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, AttemptError> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(AttemptError(Error::new(
                ErrorKind::MalformedResponse,
                "token endpoint response is too large",
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Replaces any secret echoed by the server, and control characters.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    // The whole secret, then each dot-separated part (a JWT's header, payload and
    // signature), longest first.
    let mut pieces: Vec<&str> = secrets
        .iter()
        .flat_map(|s| std::iter::once(*s).chain(s.split('.')))
        .filter(|p| p.len() >= 8)
        .collect();
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for piece in pieces {
        out = out.replace(piece, "[redacted]");
    }
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A delay drawn uniformly from [step/2, step].
fn jitter(step: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = step / 2;
    let extra = half.as_nanos() as u64;
    half + Duration::from_nanos(if extra == 0 { 0 } else { random % (extra + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_plain_base64_of_id_colon_secret() {
        let auth = ClientSecretBasic::new("client", &SecretString::new("s3cr=t+/")).expect("valid");
        let mut headers = http::HeaderMap::new();
        auth.authenticate(&mut headers, &mut Vec::new())
            .expect("ok");
        assert_eq!(headers["authorization"], "Basic Y2xpZW50OnMzY3I9dCsv");
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{auth:?}").contains("Y2xp"));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now + Duration::from_secs(7)), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn scrub_removes_echoed_secrets_and_their_parts() {
        let s = scrub("bad token eyJabcdefgh\n", &["eyJabcdefgh"]);
        assert_eq!(s, "bad token [redacted] ");
        let s = scrub(
            "payload eyJwYXlsb2Fk was rejected",
            &["eyJoZWFkZXI.eyJwYXlsb2Fk.c2lnbmF0dXJlMTIz"],
        );
        assert_eq!(s, "payload [redacted] was rejected");
    }
}
