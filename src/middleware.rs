//! A `reqwest-middleware` middleware that signs every request as OCI expects.

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use http_body_util::{BodyExt as _, Limited};
use reqwest_middleware::{Middleware, Next};

use crate::credentials::CredentialsProvider;
use crate::error::{Error, ErrorKind, Result};
use crate::signing::{SignableBody, SigningOptions, sign_reqwest_request_with_body};

/// The signer for one request, put in its extensions
/// (`reqwest_middleware::RequestBuilder::with_extension`): one
/// `ClientWithMiddleware` then serves every user, each request signed as its own
/// user. It takes precedence over the middleware's own provider.
#[derive(Clone, Debug)]
pub struct SignWith(Arc<dyn CredentialsProvider>);

impl SignWith {
    /// Sign with `signer` (a user's [`TokenExchangeSigner`](crate::TokenExchangeSigner),
    /// an [`ApiKeySigner`](crate::ApiKeySigner), any provider).
    #[must_use]
    pub fn new(signer: Arc<impl CredentialsProvider + 'static>) -> Self {
        Self(signer)
    }

    /// Sign with an already type-erased provider.
    #[must_use]
    pub fn from_dyn(provider: Arc<dyn CredentialsProvider>) -> Self {
        Self(provider)
    }
}

/// Default largest streamed body buffered to hash it: 16 MiB.
pub(crate) const DEFAULT_MAX_BUFFERED_BODY: usize = 16 * 1024 * 1024;

/// The length and SHA-256 of a request's streamed body, put in the request's
/// extensions (`reqwest_middleware::RequestBuilder::with_extension`) so the
/// middleware signs it without buffering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDigest {
    /// The body's length in bytes.
    pub content_length: u64,
    /// SHA-256 of the body.
    pub sha256: [u8; 32],
}

impl BodyDigest {
    /// The digest of `body` (for a body you also stream, or for tests).
    #[must_use]
    pub fn of(body: &[u8]) -> Self {
        Self {
            content_length: body.len() as u64,
            sha256: crate::key::sha256(body),
        }
    }
}

/// Signs each request with the credentials of a [`CredentialsProvider`] (a
/// [`TokenExchangeSigner`](crate::TokenExchangeSigner), an
/// [`ApiKeySigner`](crate::ApiKeySigner), ...): the request's [`SignWith`]
/// extension when it has one, else the middleware's own provider.
///
/// - In-memory bodies are hashed as they are. A streamed body is signed from a
///   [`BodyDigest`] extension when present; otherwise it is buffered up to a limit
///   (default 16 MiB) and a larger one fails with
///   [`ErrorKind::UnsignableBody`]. A body is never signed as empty.
/// - On a 401 from OCI, the provider is told in every case (it drops the refused
///   credentials if that may help) and, when it did and the body can be replayed,
///   the request is signed again and sent once more; otherwise the 401 is
///   returned.
#[derive(Clone)]
pub struct SigningMiddleware {
    provider: Option<Arc<dyn CredentialsProvider>>,
    options: SigningOptions,
    max_buffered_body: usize,
}

impl fmt::Debug for SigningMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningMiddleware")
            .field("provider", &self.provider)
            .field("max_buffered_body", &self.max_buffered_body)
            .finish_non_exhaustive()
    }
}

impl SigningMiddleware {
    /// Signs with `provider`'s credentials and the default [`SigningOptions`].
    #[must_use]
    pub fn new(provider: Arc<dyn CredentialsProvider>) -> Self {
        Self {
            provider: Some(provider),
            options: SigningOptions::default(),
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
        }
    }

    /// A middleware with no provider of its own: every request names its signer
    /// with a [`SignWith`] extension, and one without fails with
    /// [`ErrorKind::InvalidConfig`] before it is sent. For one client shared by
    /// all users of a server.
    #[must_use]
    pub fn per_request() -> Self {
        Self {
            provider: None,
            options: SigningOptions::default(),
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
        }
    }

    /// Other signing options (for example `exclude_body` for an upload client).
    #[must_use]
    pub fn options(mut self, options: SigningOptions) -> Self {
        self.options = options;
        self
    }

    /// The largest streamed body buffered to hash it.
    #[must_use]
    pub fn max_buffered_body(mut self, bytes: usize) -> Self {
        self.max_buffered_body = bytes;
        self
    }

    /// Buffers a streamed body (within the limit) unless a digest is given.
    async fn prepare(
        &self,
        request: &mut reqwest::Request,
        digest: Option<BodyDigest>,
    ) -> Result<()> {
        let streamed = request.body().is_some_and(|b| b.as_bytes().is_none());
        if !streamed || digest.is_some() || self.options.excludes_body() {
            return Ok(());
        }
        let Some(body) = request.body_mut().take() else {
            return Ok(());
        };
        let too_big = || {
            Error::new(
                ErrorKind::UnsignableBody,
                "streamed body is larger than the buffering limit; attach a BodyDigest or raise the limit",
            )
        };
        let bytes = Limited::new(body, self.max_buffered_body)
            .collect()
            .await
            .map_err(|_| too_big())?
            .to_bytes();
        *request.body_mut() = Some(reqwest::Body::from(bytes));
        Ok(())
    }

    /// The request's signer, else the middleware's.
    fn provider_for(&self, extensions: &Extensions) -> Result<Arc<dyn CredentialsProvider>> {
        extensions
            .get::<SignWith>()
            .map(|s| Arc::clone(&s.0))
            .or_else(|| self.provider.clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    "request has no signer: attach a SignWith extension (this middleware has no default provider)",
                )
            })
    }

    async fn sign(
        provider: &dyn CredentialsProvider,
        options: &SigningOptions,
        request: &mut reqwest::Request,
        digest: Option<BodyDigest>,
    ) -> Result<crate::Credentials> {
        let credentials = provider.credentials().await?;
        let body = digest.map(|d| SignableBody::Precomputed {
            content_length: d.content_length,
            sha256: d.sha256,
        });
        let params = credentials
            .signing_params(provider.now())
            .with_options(options);
        sign_reqwest_request_with_body(request, body, &params)?;
        Ok(credentials)
    }
}

impl Middleware for SigningMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut request: reqwest::Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> crate::session::BoxFuture<'async_trait, reqwest_middleware::Result<reqwest::Response>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let provider = self
                .provider_for(extensions)
                .map_err(reqwest_middleware::Error::middleware)?;
            let digest = extensions.get::<BodyDigest>().copied();
            self.prepare(&mut request, digest)
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            // A copy to replay after a 401 (`None` for a streamed body).
            let replay = request.try_clone();
            let used = Self::sign(&*provider, &self.options, &mut request, digest)
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            let response = next.clone().run(request, extensions).await?;
            if response.status() != http::StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            // Tell the provider first, whether or not the request can be replayed.
            let renewed = provider.refused(&used);
            let Some(mut retry) = replay.filter(|_| renewed) else {
                tracing::debug!(renewed, "401 from OCI returned to the caller");
                return Ok(response);
            };
            tracing::debug!("401 from OCI; retrying once with renewed credentials");
            let used = Self::sign(&*provider, &self.options, &mut retry, digest)
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            let response = next.run(retry, extensions).await?;
            if response.status() == http::StatusCode::UNAUTHORIZED {
                // Told as well (as documented); no second replay whatever it says.
                let _ = provider.refused(&used);
            }
            Ok(response)
        })
    }
}
