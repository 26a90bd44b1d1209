//! OAuth token exchange at an OCI IAM identity domain: the user's JWT for a UPST
//! bound to a session public key.
//!
//! `builder` configures, `auth` authenticates the client, `retry` sends with
//! bounded retries, `response` reads the answer, `domain` checks the domain URL and
//! `upst` reads the session token.

mod auth;
mod builder;
mod domain;
mod response;
mod retry;
mod upst;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;

pub use auth::{ClientAuthentication, ClientSecretBasic};
pub use builder::TokenExchangeBuilder;
pub use domain::commercial_domain_url;
#[cfg(feature = "mcp")]
pub(crate) use domain::{is_loopback, parse_domain_url};
pub use upst::Upst;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::jwt::Claims;
use crate::key::PublicKey;
use crate::protocol;
use crate::secret::SecretString;

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
            Self::Upst => protocol::UPST_TYPE,
            Self::Rpst { .. } => protocol::RPST_TYPE,
        }
    }
}

/// A validated configuration, shared by clones of a [`TokenExchange`].
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
    /// Each attempt is traced (target `oci_token_exchange::exchange`, fields
    /// `attempt`, `status`, `latency_ms`, `opc_request_id`, `outcome`), as is each
    /// retry (`delay_ms`); no field holds a token, the form or a secret.
    ///
    /// # Errors
    /// [`ErrorKind::SubjectTokenMalformed`], [`ErrorKind::SubjectTokenExpired`],
    /// [`ErrorKind::ExchangeRejected`] (with status, OAuth error and
    /// `opc-request-id`), [`ErrorKind::MalformedResponse`],
    /// [`ErrorKind::Transport`] or [`ErrorKind::Timeout`]. No message contains the
    /// subject token, the UPST or the client's secrets
    /// ([`ClientAuthentication::secrets`]), even when the domain echoes them.
    pub async fn exchange(
        &self,
        subject_token: &SecretString,
        public_key: &PublicKey,
    ) -> Result<Upst> {
        let inner = &self.inner;
        check_subject(subject_token.expose_secret(), inner.clock.now())?;
        let mut form: Vec<(String, String)> = vec![
            ("grant_type".into(), protocol::GRANT_TYPE.into()),
            (
                "requested_token_type".into(),
                inner.requested.type_uri().into(),
            ),
            (
                "subject_token".into(),
                subject_token.expose_secret().to_owned(),
            ),
            (
                "subject_token_type".into(),
                protocol::SUBJECT_TOKEN_TYPE.into(),
            ),
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
        let mut secrets = inner.auth.secrets();
        secrets.push(subject_token.expose_secret());

        let reply = retry::send(inner, &headers, body.as_bytes(), &secrets).await?;
        let upst = Upst::parse(reply.token.expose_secret())?;
        if upst.public_key() != public_key {
            return Err(Error::new(
                ErrorKind::MalformedResponse,
                "session token is bound to a different public key than the one sent",
            ));
        }
        Ok(upst)
    }
}
