//! An in-process, loopback emulator of the two OCI services this crate talks to: an
//! IAM identity domain (OIDC discovery, JWKS, token exchange, demo user tokens, and
//! the login side: the authorization code flow with PKCE and rotating refresh tokens)
//! and an OCI control plane that verifies request signatures.
//!
//! The login side has no login page: `GET /oauth2/v1/authorize` logs in the current
//! login subject ([`EmulatorBuilder::login_subject`], [`Emulator::set_login_subject`])
//! at once and redirects with a code, so flows run headless. As at OCI:
//! - an unknown `client_id` or a `redirect_uri` not registered with
//!   [`EmulatorBuilder::redirect_uri`] gets a 400 page, never a redirect; other
//!   errors (`response_type` other than `code`, a PKCE method other than `S256`) are
//!   redirected with `error` and the `state`;
//! - PKCE is optional, but a code issued with a challenge needs the matching
//!   `code_verifier`, and one issued without needs none (sending one is refused);
//! - codes are single use (taken atomically, burnt by a failed redemption) and live
//!   5 minutes; the `authorization_code` grant refuses a `scope` parameter;
//! - refresh tokens rotate (each use returns a new one and kills the old) and live
//!   7 days; access tokens are exchangeable like [`Emulator::mint_user_token`]'s;
//! - every grant needs `client_secret_basic`; token responses are `no-store`.
//!
//! The domain's user-token key can be rolled ([`Emulator::rotate_user_token_key`]) to
//! test what a validator does when a token names a key it has not fetched yet.
//!
//! It checks what the real services check, so a request it accepts is shaped as OCI
//! expects; it powers the quickstart, this crate's tests, and your own offline
//! tests. It listens on `127.0.0.1` on a free port and stops when dropped.

mod faults;
mod login;
mod server;

pub use faults::{FaultControl, FaultEndpoint, FaultId, FaultRate, FaultRule, FaultStats};

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{KeySize, SigningKey};
use crate::secret::SecretString;

/// Kid of the key that signs demo user tokens (published in the JWKS).
const USER_TOKEN_KID: &str = "emulator-user-tokens";
/// Kid of the key that signs UPSTs.
const UPST_KID: &str = "emulator-upst";
/// The tenancy every emulated user belongs to.
pub const EMULATOR_TENANCY_OCID: &str = "ocid1.tenancy.oc1..aaaaaaaaemulatortenancy";

/// One failure an endpoint produces instead of its normal answer.
///
/// Queued with [`Emulator::inject_fault`], faults are consumed one per token-endpoint request, whatever its grant (token
/// exchange, `authorization_code`, `refresh_token`), before the request is parsed; a
/// request that meets a fault redeems nothing (a code or refresh token stays usable).
/// [`Fault::MismatchedKey`] only changes a token exchange; another grant that
/// consumes it is answered normally. Standing faults ([`FaultRule`]) apply the same
/// answers to a fraction of the token, JWKS or discovery requests until removed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this HTTP status with an OAuth error body (`server_error`,
    /// `temporarily_unavailable`, ...).
    Status(u16),
    /// Answer 429 with `Retry-After: <seconds>`.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    GarbageBody,
    /// Close the connection without answering (the client reads end of file).
    DropConnection,
    /// Reset the connection without answering: a TCP RST, so the client's read
    /// fails with `ECONNRESET` (what a crashed or overloaded peer or a middlebox
    /// does), not the orderly close of [`Fault::DropConnection`].
    ResetConnection,
    /// Answer 302 to another URL.
    Redirect,
    /// Answer exactly this status and body (`application/json`).
    Respond {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// Issue a UPST bound to a different public key than the one sent.
    MismatchedKey,
}

/// Requests counted by the emulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests to the token endpoint (any grant, any outcome, faults included).
    pub exchange_requests: u64,
    /// Session tokens issued.
    pub exchanges: u64,
    /// Session tokens issued per subject (`sub` of the user token).
    pub exchanges_by_subject: HashMap<String, u64>,
    /// Control-plane requests whose signature verified.
    pub verified_requests: u64,
    /// Control-plane requests rejected with 401.
    pub rejected_requests: u64,
    /// OIDC discovery documents served.
    pub discovery_requests: u64,
    /// JWKS documents served.
    pub jwks_requests: u64,
    /// Requests to the authorization endpoint (any outcome).
    pub authorize_requests: u64,
    /// Users logged in by the authorization endpoint (authorization codes issued).
    pub logins: u64,
    /// Successful `authorization_code` grants.
    pub code_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Faults served (queued or standing, delays included, session rejections
    /// included), all endpoints together.
    pub faults_served_total: u64,
    /// Faults served by `<endpoint>/<kind>`: endpoint `token`, `jwks`, `discovery`
    /// or `api` ([`FaultEndpoint::name`]), kind a [`Fault::name`] or, for `api`,
    /// `session_rejected` (e.g. `token/status`, `jwks/drop_connection`,
    /// `api/session_rejected`).
    pub faults_served: HashMap<String, u64>,
    /// Token-endpoint faults (queued or standing, delays included) served to token
    /// exchanges, by the `sub` of their subject token: how many of a user's exchange
    /// attempts met a fault.
    pub token_faults_by_subject: HashMap<String, u64>,
}

/// The last request the token endpoint received (any grant), as parsed by it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecordedExchange {
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// Whether an `Authorization: Basic` header was sent.
    pub basic_auth: bool,
    /// The form fields, in order, with the secret ones (`subject_token`, `code`,
    /// `code_verifier`, `refresh_token`, `client_secret`) replaced by `[redacted]`.
    pub form: Vec<(String, String)>,
}

/// Options for a demo user token ([`Emulator::mint_user_token_with`]).
#[derive(Clone, Debug)]
pub struct UserTokenOptions {
    subject: String,
    ttl: Duration,
    jti: Option<String>,
    audience: Option<String>,
    scope: Option<String>,
    issuer: Option<String>,
    extra: Map<String, Value>,
}

impl UserTokenOptions {
    /// A token for `subject` (e.g. `alice@example.com`), valid for one hour, with a
    /// random `jti`, scope `openid` and no audience.
    #[must_use]
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ttl: Duration::from_secs(3600),
            jti: Some(random_id()),
            audience: None,
            scope: Some("openid".into()),
            issuer: None,
            extra: Map::new(),
        }
    }

    /// Lifetime from now (zero makes an already-expired token).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the `jti`.
    #[must_use]
    pub fn jti(mut self, jti: impl Into<String>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// Leaves out the `jti` claim.
    #[must_use]
    pub fn without_jti(mut self) -> Self {
        self.jti = None;
        self
    }

    /// Sets the `aud` claim.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the `scope` claim (space-separated).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Overrides the `iss` claim (to test a token from an untrusted issuer).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds any claim, replacing the one the emulator would set (e.g. an `exp` in the
    /// past, or an `nbf` in the future).
    #[must_use]
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }
}

/// Configures an [`Emulator`].
#[derive(Debug)]
pub struct EmulatorBuilder {
    client_id: String,
    client_secret: SecretString,
    upst_ttl: Duration,
    clock: Arc<dyn Clock>,
    redirect_uris: Vec<String>,
    login_subject: String,
    access_token_ttl: Duration,
    refresh_tokens: bool,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            client_id: "emulator-client".into(),
            client_secret: SecretString::new("emulator-secret"),
            upst_ttl: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
            redirect_uris: Vec::new(),
            login_subject: "demo-user".into(),
            access_token_ttl: Duration::from_secs(3600),
            refresh_tokens: true,
        }
    }
}

impl EmulatorBuilder {
    /// The OAuth client allowed to exchange tokens (default `emulator-client` /
    /// `emulator-secret`).
    #[must_use]
    pub fn client_credentials(
        mut self,
        id: impl Into<String>,
        secret: impl Into<SecretString>,
    ) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// Longest lifetime of an issued UPST (default 60 minutes, as OCI); a UPST never
    /// outlives its subject token.
    #[must_use]
    pub fn upst_ttl(mut self, ttl: Duration) -> Self {
        self.upst_ttl = ttl;
        self
    }

    /// The clock for issuing and checking tokens, codes and refresh tokens (default:
    /// the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Registers one redirect URI of the confidential app (the client of
    /// [`client_credentials`](Self::client_credentials)); call once per URI. The
    /// authorization endpoint accepts exactly these (compared as strings, as OCI
    /// does); none are registered by default, so no login succeeds until one is.
    #[must_use]
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// The demo user the authorization endpoint logs in (the `sub` of the tokens it
    /// leads to; default `demo-user`). See also [`Emulator::set_login_subject`].
    #[must_use]
    pub fn login_subject(mut self, sub: impl Into<String>) -> Self {
        self.login_subject = sub.into();
        self
    }

    /// Lifetime of the access tokens the `authorization_code` and `refresh_token`
    /// grants issue (default 3600 s, as OCI).
    #[must_use]
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }

    /// Whether the code grant issues refresh tokens and the `refresh_token` grant is
    /// allowed (default true); false emulates an app without the Refresh Token grant.
    #[must_use]
    pub fn refresh_tokens(mut self, on: bool) -> Self {
        self.refresh_tokens = on;
        self
    }

    /// Generates the emulator's keys (on a blocking thread) and starts serving.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] if no loopback port can be bound,
    /// [`ErrorKind::Crypto`] if key generation fails.
    pub async fn start(self) -> Result<Emulator> {
        let keys = tokio::task::spawn_blocking(|| {
            Ok::<_, Error>((
                SigningKey::generate(KeySize::Rsa2048)?,
                SigningKey::generate(KeySize::Rsa2048)?,
            ))
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Crypto, "key generation task failed"))??;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Transport, "cannot bind a loopback port").with_source(e)
            })?;
        let addr = listener.local_addr().map_err(|e| {
            Error::new(ErrorKind::Transport, "cannot read the bound address").with_source(e)
        })?;
        let base = format!("http://{addr}");
        let state = Arc::new(State {
            issuer: base.clone(),
            client_id: self.client_id,
            client_secret: self.client_secret,
            user_keys: Mutex::new(UserKeys {
                current: (USER_TOKEN_KID.to_owned(), Arc::new(keys.0)),
                previous: None,
                rotations: 0,
            }),
            upst_key: keys.1,
            upst_ttl: self.upst_ttl,
            clock: self.clock,
            counters: Mutex::new(Counters::default()),
            faults: Mutex::new(VecDeque::new()),
            rules: Mutex::new(faults::Rules::default()),
            reject_next_upsts: AtomicU32::new(0),
            last_exchange: Mutex::new(None),
            request_ids: AtomicU64::new(0),
            redirect_uris: self.redirect_uris,
            login_subject: Mutex::new(self.login_subject),
            access_token_ttl: self.access_token_ttl,
            refresh_tokens: self.refresh_tokens,
            deny_logins: AtomicU32::new(0),
            codes: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            last_authorization: Mutex::new(None),
        });
        let task = tokio::spawn(server::serve(listener, Arc::clone(&state)));
        let base_url = Url::parse(&base)
            .map_err(|_| Error::new(ErrorKind::Transport, "bound address is not a url"))?;
        Ok(Emulator {
            addr,
            base_url,
            state,
            task,
        })
    }
}

pub(crate) struct State {
    issuer: String,
    client_id: String,
    client_secret: SecretString,
    /// The keys that sign user tokens (both published in the JWKS).
    user_keys: Mutex<UserKeys>,
    upst_key: SigningKey,
    upst_ttl: Duration,
    clock: Arc<dyn Clock>,
    counters: Mutex<Counters>,
    faults: Mutex<VecDeque<Fault>>,
    /// Standing faults.
    rules: Mutex<faults::Rules>,
    reject_next_upsts: AtomicU32,
    last_exchange: Mutex<Option<RecordedExchange>>,
    request_ids: AtomicU64,
    redirect_uris: Vec<String>,
    login_subject: Mutex<String>,
    access_token_ttl: Duration,
    refresh_tokens: bool,
    deny_logins: AtomicU32,
    /// Authorization codes not yet redeemed, by code.
    codes: Mutex<HashMap<String, CodeGrant>>,
    /// Live refresh tokens, by token.
    refresh: Mutex<HashMap<String, RefreshGrant>>,
    last_authorization: Mutex<Option<Vec<(String, String)>>>,
}

/// The user-token signing keys, by kid: the one signing new tokens, and the one
/// before it (still published, still accepted) after a rotation.
struct UserKeys {
    current: (String, Arc<SigningKey>),
    previous: Option<(String, Arc<SigningKey>)>,
    rotations: u64,
}

/// What an authorization code stands for until redeemed.
pub(crate) struct CodeGrant {
    subject: String,
    redirect_uri: String,
    /// The S256 `code_challenge`, when one was sent.
    challenge: Option<String>,
    scope: String,
    /// Unix seconds after which the code is refused.
    expires: u64,
}

/// What a refresh token stands for until used.
pub(crate) struct RefreshGrant {
    subject: String,
    scope: String,
    /// Unix seconds after which the token is refused.
    expires: u64,
}

impl State {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_fault(&self) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// What the standing rules of `endpoint` do to one request.
    fn standing_fault(&self, endpoint: FaultEndpoint, subject: Option<&str>) -> faults::Decision {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(endpoint, subject, &self.counters)
    }

    fn request_id(&self) -> String {
        format!(
            "emulator-{:016x}",
            self.request_ids.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn now_secs(&self) -> u64 {
        unix_secs(self.clock.now())
    }

    fn user_keys(&self) -> std::sync::MutexGuard<'_, UserKeys> {
        self.user_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The key signing new user tokens, and its kid.
    fn user_key(&self) -> (String, Arc<SigningKey>) {
        self.user_keys().current.clone()
    }

    /// The published user-token keys (the current one first), by kid.
    pub(crate) fn published_user_keys(&self) -> Vec<(String, Arc<SigningKey>)> {
        let keys = self.user_keys();
        std::iter::once(keys.current.clone())
            .chain(keys.previous.clone())
            .collect()
    }

    /// A user token signed with the key in the JWKS (what `mint_user_token` and the
    /// login grants issue).
    fn mint(&self, options: &UserTokenOptions) -> String {
        let now = self.now_secs();
        let mut claims = Map::new();
        claims.insert(
            "iss".into(),
            json!(options.issuer.as_deref().unwrap_or(&self.issuer)),
        );
        claims.insert("sub".into(), json!(options.subject));
        claims.insert("iat".into(), json!(now));
        claims.insert(
            "exp".into(),
            json!(now.saturating_add(options.ttl.as_secs())),
        );
        claims.insert("client_id".into(), json!(self.client_id));
        if let Some(jti) = &options.jti {
            claims.insert("jti".into(), json!(jti));
        }
        if let Some(aud) = &options.audience {
            claims.insert("aud".into(), json!(aud));
        }
        if let Some(scope) = &options.scope {
            claims.insert("scope".into(), json!(scope));
        }
        claims.extend(options.extra.clone());
        // Signing with the emulator's own in-memory key fails only if the backend is
        // broken; an empty token is then refused everywhere, never a panic.
        let (kid, key) = self.user_key();
        crate::jwt::encode(&key, &kid, &claims).unwrap_or_default()
    }

    fn login_subject(&self) -> String {
        self.login_subject
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running emulator. Dropping it stops the server and closes its connections.
pub struct Emulator {
    addr: SocketAddr,
    base_url: Url,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Starts an emulator with the defaults (see [`EmulatorBuilder`]).
    ///
    /// # Errors
    /// As [`EmulatorBuilder::start`].
    pub async fn start() -> Result<Self> {
        EmulatorBuilder::default().start().await
    }

    /// A builder.
    #[must_use]
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The loopback address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity domain URL (`http://127.0.0.1:<port>`), for
    /// [`TokenExchange`](crate::TokenExchange)'s `domain_url`. Also the issuer of
    /// its user tokens.
    #[must_use]
    pub fn domain_url(&self) -> &Url {
        &self.base_url
    }

    /// Base URL of the emulated OCI control plane (the same server): any path that
    /// is not an identity-domain path is a signed API call.
    #[must_use]
    pub fn api_url(&self) -> &Url {
        &self.base_url
    }

    /// The issuer (`iss`) of the demo user tokens.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The OAuth client id the token endpoint accepts.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// The OAuth client secret the token endpoint accepts.
    #[must_use]
    pub fn client_secret(&self) -> &SecretString {
        &self.state.client_secret
    }

    /// The user OCID the emulator assigns to a subject.
    #[must_use]
    pub fn user_ocid(subject: &str) -> String {
        let digest = crate::key::sha256(subject.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("ocid1.user.oc1..aaaaaaaa{hex}")
    }

    /// A demo user token (RS256 JWT signed with the key in the emulator's JWKS) for
    /// `subject`, valid for one hour.
    #[must_use]
    pub fn mint_user_token(&self, subject: &str) -> String {
        self.mint_user_token_with(&UserTokenOptions::new(subject))
    }

    /// A demo user token with the given options.
    #[must_use]
    pub fn mint_user_token_with(&self, options: &UserTokenOptions) -> String {
        self.state.mint(options)
    }

    /// Rolls the key that signs user tokens, as an identity domain rolls its signing
    /// key: from now on tokens are signed with a new key under a new kid; the JWKS
    /// lists the new key and the one before it, and the exchange accepts tokens of
    /// both. A second rotation retires the oldest. Returns the new kid.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if key generation fails.
    pub async fn rotate_user_token_key(&self) -> Result<String> {
        let key = tokio::task::spawn_blocking(|| SigningKey::generate(KeySize::Rsa2048))
            .await
            .map_err(|_| Error::new(ErrorKind::Crypto, "key generation task failed"))??;
        let mut keys = self.state.user_keys();
        keys.rotations = keys.rotations.saturating_add(1);
        let kid = format!("{USER_TOKEN_KID}-{}", keys.rotations);
        let retired = std::mem::replace(&mut keys.current, (kid.clone(), Arc::new(key)));
        keys.previous = Some(retired);
        Ok(kid)
    }

    /// Changes the demo user the authorization endpoint logs in from now on (codes
    /// and refresh tokens already issued keep their user), so one emulator can log
    /// in several users in turn.
    pub fn set_login_subject(&self, sub: impl Into<String>) {
        *self
            .state
            .login_subject
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = sub.into();
    }

    /// Makes the next `n` valid authorization requests end as if the user declined:
    /// a redirect with `error=access_denied` (and the `state`).
    pub fn deny_next_logins(&self, n: u32) {
        self.state.deny_logins.fetch_add(n, Ordering::SeqCst);
    }

    /// The query parameters of the last request to the authorization endpoint, in
    /// order (none of them is a secret: the PKCE challenge is public).
    #[must_use]
    pub fn last_authorization(&self) -> Option<Vec<(String, String)>> {
        self.state
            .last_authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the next `times` token-endpoint requests fail with `fault` (queued after
    /// any faults already injected).
    pub fn inject_fault(&self, fault: Fault, times: usize) {
        let mut faults = self
            .state
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Makes the control plane reject the next `times` correctly signed requests with
    /// 401, as OCI does for a session token it no longer accepts.
    pub fn reject_next_session_tokens(&self, times: u32) {
        self.state
            .reject_next_upsts
            .fetch_add(times, Ordering::SeqCst);
    }

    /// A handle on this emulator's standing faults, cheap to clone and to move into a
    /// fault schedule's task.
    #[must_use]
    pub fn fault_control(&self) -> FaultControl {
        FaultControl {
            state: Arc::clone(&self.state),
        }
    }

    /// Adds a standing fault (as [`FaultControl::add`]).
    #[must_use = "the id removes the fault and reads its statistics"]
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        self.fault_control().add(rule)
    }

    /// Stops a standing fault (as [`FaultControl::remove`]).
    pub fn remove_fault(&self, id: FaultId) {
        self.fault_control().remove(id);
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.state.counters().clone()
    }

    /// Session tokens issued for `subject` so far.
    #[must_use]
    pub fn exchanges_for(&self, subject: &str) -> u64 {
        self.state
            .counters()
            .exchanges_by_subject
            .get(subject)
            .copied()
            .unwrap_or(0)
    }

    /// The last request the token endpoint received.
    #[must_use]
    pub fn last_exchange(&self) -> Option<RecordedExchange> {
        self.state
            .last_exchange
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random 256-bit url-safe secret for codes and refresh tokens: from aws-lc-rs
/// when it is built in, else two [`random_id`]s.
fn random_secret() -> String {
    #[cfg(feature = "aws-lc-rs")]
    {
        use base64::Engine as _;
        let mut bytes = [0_u8; 32];
        if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
            return base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        }
    }
    format!("{}{}", random_id(), random_id())
}

/// A random 128-bit hex id (not cryptographic; the emulator is a test tool).
fn random_id() -> String {
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{a:016x}{b:016x}")
}
