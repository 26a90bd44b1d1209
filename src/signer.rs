//! One signing entry point above [`sign`](crate::sign): a [`Signer`] over any
//! [`CredentialsProvider`] (a user's token-exchange sessions, an API key, or your
//! own), in the shape of reqsign's `Signer` over a `ProvideCredential`.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::Clock;
use crate::credentials::{ApiKey, Credentials, CredentialsProvider};
use crate::error::Result;
use crate::exchange::TokenExchange;
use crate::key::SigningKey;
use crate::secret::SecretString;
use crate::session::{
    BoxFuture, ExchangeStats, OciSession, SessionProvider, SessionStore, TokenExchangeSignerBuilder,
};
use crate::signing::{KeyId, sign_http_request, sign_reqwest_request};

/// Signs OCI requests with the credentials of its provider `P`, dated by the
/// provider's clock. The same methods serve every provider:
///
/// - [`TokenExchangeSigner`] (`Signer<SessionProvider>`): as one logged-in user,
///   exchanging the user's token for a session when needed;
/// - [`ApiKeySigner`] (`Signer<ApiKey>`): with a fixed API key or session token;
/// - `Signer<YourProvider>` for any [`CredentialsProvider`].
///
/// Each signing method returns the [`Credentials`] it used; after a 401 from OCI,
/// pass them to [`Signer::refused`] to learn whether a retry with new credentials
/// may help. A `Signer` is itself a `CredentialsProvider`, so an
/// `Arc<TokenExchangeSigner>` is an `Arc<dyn CredentialsProvider>` (for the
/// middleware, for example).
#[derive(Clone, Debug)]
pub struct Signer<P> {
    provider: P,
}

/// Signs as one logged-in user: see [`SessionProvider`] for the session lifecycle.
pub type TokenExchangeSigner = Signer<SessionProvider>;

/// Signs with a fixed API key (or a session token from `oci session authenticate`),
/// for calls that are not made on behalf of a logged-in user.
pub type ApiKeySigner = Signer<ApiKey>;

impl<P: CredentialsProvider> Signer<P> {
    /// A signer over `provider`.
    #[must_use]
    pub fn from_provider(provider: P) -> Self {
        Self { provider }
    }

    /// Signs a `reqwest::Request` (in-memory body) now, and returns the credentials
    /// used.
    ///
    /// # Errors
    /// The provider's errors (for a [`TokenExchangeSigner`], those of
    /// [`SessionProvider::session`]) and the signing errors of
    /// [`sign_reqwest_request`]; the request is untouched on error.
    pub async fn sign_reqwest(&self, request: &mut reqwest::Request) -> Result<Credentials> {
        let credentials = self.provider.credentials().await?;
        sign_reqwest_request(request, &credentials.signing_params(self.provider.now()))?;
        Ok(credentials)
    }

    /// Signs an `http::Request` (in-memory body) now, and returns the credentials
    /// used.
    ///
    /// # Errors
    /// As [`Signer::sign_reqwest`], with the errors of
    /// [`sign_http_request`](crate::sign_http_request).
    pub async fn sign_http<B: AsRef<[u8]>>(
        &self,
        request: &mut http::Request<B>,
    ) -> Result<Credentials> {
        let credentials = self.provider.credentials().await?;
        sign_http_request(request, &credentials.signing_params(self.provider.now()))?;
        Ok(credentials)
    }

    /// OCI answered 401 to a request signed with `used`: `true` if the provider
    /// dropped them and signing again may help (for a [`TokenExchangeSigner`],
    /// at most once a minute: see [`SessionProvider::session_refused`]); `false`
    /// means return the 401.
    #[must_use = "`false` means a retry with new credentials will not help"]
    pub fn refused(&self, used: &Credentials) -> bool {
        self.provider.refused(used)
    }

    /// The credentials provider.
    #[must_use]
    pub fn provider(&self) -> &P {
        &self.provider
    }
}

impl<P: CredentialsProvider> CredentialsProvider for Signer<P> {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials>> {
        self.provider.credentials()
    }

    fn refused(&self, used: &Credentials) -> bool {
        self.provider.refused(used)
    }

    fn now(&self) -> SystemTime {
        self.provider.now()
    }
}

impl Signer<SessionProvider> {
    /// A builder for a signer that exchanges through `exchange`.
    #[must_use]
    pub fn builder(exchange: TokenExchange) -> TokenExchangeSignerBuilder {
        TokenExchangeSignerBuilder::new(exchange)
    }

    /// The signer the cache creates for one token.
    pub(crate) fn for_cached_token(
        token: Arc<SecretString>,
        exchange: TokenExchange,
        pool: crate::key::KeyPool,
        clock: Arc<dyn Clock>,
        margin: std::time::Duration,
        stats: Arc<ExchangeStats>,
        replicas: Option<Arc<SessionStore>>,
    ) -> Self {
        Self::from_provider(SessionProvider::for_cached_token(
            token, exchange, pool, clock, margin, stats, replicas,
        ))
    }

    /// The current session, exchanging first if needed: see
    /// [`SessionProvider::session`].
    ///
    /// # Errors
    /// As [`SessionProvider::session`].
    pub async fn session(&self) -> Result<Arc<OciSession>> {
        self.provider.session().await
    }

    /// See [`SessionProvider::current_session`].
    #[must_use]
    pub fn current_session(&self) -> Option<Arc<OciSession>> {
        self.provider.current_session()
    }

    /// See [`SessionProvider::invalidate`].
    pub fn invalidate(&self) {
        self.provider.invalidate();
    }

    /// See [`SessionProvider::session_refused`].
    #[must_use = "`false` means a retry with new credentials will not help"]
    pub fn session_refused(&self, session: &Arc<OciSession>) -> bool {
        self.provider.session_refused(session)
    }

    /// The clock this signer uses.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.provider.clock()
    }
}

impl Signer<ApiKey> {
    /// An API key: the key id `tenancy/user/fingerprint` and its private key;
    /// signature dates from the system clock (see [`Signer::with_clock`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKeyId`](crate::ErrorKind::InvalidKeyId) for a malformed
    /// part.
    pub fn new(tenancy: &str, user: &str, fingerprint: &str, key: SigningKey) -> Result<Self> {
        Ok(Self::from_provider(ApiKey::new(
            key,
            KeyId::api_key(tenancy, user, fingerprint)?,
        )))
    }

    /// Reads `profile` of an OCI configuration file: see
    /// [`ApiKey::from_config_file`].
    ///
    /// # Errors
    /// As [`ApiKey::from_config_file`].
    pub fn from_config_file(path: Option<&Path>, profile: &str) -> Result<Self> {
        Ok(Self::from_provider(ApiKey::from_config_file(
            path, profile,
        )?))
    }

    /// Dates signatures with `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self::from_provider(self.provider.with_clock(clock))
    }

    /// The profile's `region`, if any.
    #[must_use]
    pub fn region(&self) -> Option<&str> {
        self.provider.region()
    }

    /// The key id.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        self.provider.key_id()
    }
}
