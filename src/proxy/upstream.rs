//! The upstream leg: the identity domain's login endpoints (OIDC discovery, the
//! authorize redirect, the code and refresh grants) and the check of the access
//! tokens it returns.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, ErrorKind, HttpDetails, Result};
use crate::exchange::is_loopback;
use crate::http_util::{BodyError, read_body_limited};
use crate::mcp::{AccessToken, BearerAuth};
use crate::secret::SecretString;

/// Largest discovery document or token response read.
const MAX_BODY: usize = 64 * 1024;

/// The endpoints found by discovery.
#[derive(Clone, Debug)]
pub(super) struct Endpoints {
    pub(super) authorization: Url,
    pub(super) token: Url,
}

/// A token response of the domain.
pub(super) struct Tokens {
    pub(super) access_token: String,
    pub(super) expires_in: Option<u64>,
    pub(super) refresh_token: Option<String>,
    pub(super) refresh_expires_in: Option<u64>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// The identity domain, as the proxy's client.
pub(super) struct Upstream {
    pub(super) domain_url: Url,
    pub(super) client_id: String,
    pub(super) client_secret: SecretString,
    pub(super) http: reqwest::Client,
    /// Validates the domain's access tokens as [`BearerAuth`] does (any audience).
    pub(super) validator: BearerAuth,
    endpoints: tokio::sync::OnceCell<Endpoints>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("domain_url", &self.domain_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn malformed(message: &'static str) -> Error {
    Error::new(ErrorKind::MalformedResponse, message)
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::new(
            ErrorKind::Timeout,
            "the identity domain did not answer in time",
        )
    } else {
        Error::new(ErrorKind::Transport, "cannot reach the identity domain")
            .with_source(e.without_url())
    }
}

/// A URL the proxy may send users or secrets to: https, or http on loopback.
fn endpoint(doc: &Map<String, Value>, name: &str) -> Result<Url> {
    let url = doc
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok())
        .ok_or_else(|| malformed("the discovery document lacks a login endpoint"))?;
    let ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url.host()));
    if !ok || url.fragment().is_some() {
        return Err(malformed("a login endpoint of the domain is not https"));
    }
    Ok(url)
}

impl Upstream {
    pub(super) fn new(
        domain_url: Url,
        client_id: String,
        client_secret: SecretString,
        http: reqwest::Client,
        validator: BearerAuth,
    ) -> Self {
        Self {
            domain_url,
            client_id,
            client_secret,
            http,
            validator,
            endpoints: tokio::sync::OnceCell::new(),
        }
    }

    /// The login endpoints, discovered once (a failed discovery is retried by the
    /// next caller).
    pub(super) async fn endpoints(&self) -> Result<&Endpoints> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.domain_url.as_str().trim_end_matches('/')
                );
                let response = self.http.get(url).send().await.map_err(transport)?;
                if !response.status().is_success() {
                    return Err(Error::new(
                        ErrorKind::Transport,
                        "the identity domain's discovery document is unavailable",
                    )
                    .with_http(HttpDetails {
                        status: Some(response.status().as_u16()),
                        ..HttpDetails::default()
                    }));
                }
                let body = read(response).await?;
                let doc: Map<String, Value> = serde_json::from_slice(&body)
                    .map_err(|_| malformed("the discovery document is not a json object"))?;
                Ok(Endpoints {
                    authorization: endpoint(&doc, "authorization_endpoint")?,
                    token: endpoint(&doc, "token_endpoint")?,
                })
            })
            .await
    }

    /// The `authorization_code` grant: no `scope` (the domain refuses it).
    pub(super) async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens> {
        self.grant(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// The `refresh_token` grant.
    pub(super) async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        self.grant(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<Tokens> {
        let endpoints = self.endpoints().await?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(endpoints.token.clone())
            .basic_auth(
                form_encode(&self.client_id),
                Some(form_encode(self.client_secret.expose_secret())),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = read(response).await?;
        let json: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // Only the error code, never the description: it may echo what was sent.
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .map(str::to_owned);
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                ErrorKind::Transport
            } else {
                ErrorKind::ExchangeRejected
            };
            return Err(
                Error::new(kind, "the identity domain refused the grant").with_http(HttpDetails {
                    status: Some(status.as_u16()),
                    oauth_error: code,
                    ..HttpDetails::default()
                }),
            );
        }
        let json = json.ok_or_else(|| malformed("the token response is not a json object"))?;
        let access_token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("the token response has no access_token"))?
            .to_owned();
        if json
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(malformed("the token response's token_type is not bearer"));
        }
        let seconds = |name: &str| json.get(name).and_then(Value::as_u64);
        Ok(Tokens {
            access_token,
            expires_in: seconds("expires_in"),
            refresh_token: json
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            refresh_expires_in: seconds("refresh_token_expires_in")
                .or_else(|| seconds("refresh_expires_in")),
        })
    }

    /// Checks an access token of the domain as [`BearerAuth`] would.
    pub(super) async fn validate(&self, access_token: &str) -> Result<AccessToken> {
        self.validator.validate(access_token).await
    }
}

/// RFC 6749 section 2.3.1: the Basic credentials are form-encoded first.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read(response: reqwest::Response) -> Result<Vec<u8>> {
    read_body_limited(response, MAX_BODY)
        .await
        .map_err(|e| match e {
            BodyError::Transport(e) => transport(e),
            BodyError::TooLarge => malformed("the identity domain's answer is too large"),
        })
}

/// How an upstream failure reaches the client at the callback (RFC 6749 4.1.2.1).
pub(super) fn callback_error(err: &Error) -> &'static str {
    match err.kind() {
        ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::Storage => "temporarily_unavailable",
        _ => "server_error",
    }
}

/// Seconds in a duration, for `expires_in`.
pub(super) fn secs(d: Duration) -> u64 {
    d.as_secs()
}
