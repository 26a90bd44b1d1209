//! Configuration of a [`TokenExchange`]: the builder, its defaults and checks.

use std::sync::Arc;
use std::time::Duration;

use super::auth::{ClientAuthentication, ClientSecretBasic};
use super::domain;
use super::{Inner, RequestedToken, TokenExchange};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;
use crate::{http_util, protocol};

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
            .join(protocol::TOKEN_PATH)
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
            None => http_util::client_without_redirects(connect_timeout, None)?,
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
