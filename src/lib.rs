// The README is the crate's front page and, with every feature on, a doc test.
#![cfg_attr(
    all(feature = "oauth-proxy", feature = "emulator"),
    doc = include_str!("../README.md")
)]
#![cfg_attr(
    not(all(feature = "oauth-proxy", feature = "emulator")),
    doc = "Call OCI APIs as the user who logged in. Build the docs with `--all-features` for the full guide."
)]
// No unsafe code in the library (Cargo.toml denies it everywhere else).
#![forbid(unsafe_code)]

#[cfg(feature = "reqwest")]
mod cache;
mod clock;
#[cfg(feature = "reqwest")]
mod credentials;
#[cfg(feature = "emulator")]
mod emulator;
mod error;
#[cfg(feature = "reqwest")]
mod exchange;
#[cfg(feature = "aws-lc-rs")]
mod fernet;
#[cfg(feature = "reqwest")]
mod http_util;
#[cfg(any(feature = "reqwest", feature = "emulator"))]
mod jwt;
mod key;
#[cfg(feature = "mcp")]
mod mcp;
#[cfg(feature = "middleware")]
mod middleware;
#[cfg(any(feature = "reqwest", feature = "emulator"))]
mod protocol;
#[cfg(feature = "oauth-proxy")]
mod proxy;
mod secret;
#[cfg(feature = "reqwest")]
mod session;
#[cfg(feature = "reqwest")]
mod signer;
mod signing;
mod store;

#[cfg(feature = "reqwest")]
pub use cache::{CacheStats, SignerCache, SignerCacheBuilder};
pub use clock::{Clock, FixedClock, SystemClock};
#[cfg(feature = "reqwest")]
pub use credentials::{ApiKey, Credentials, CredentialsProvider};
#[cfg(feature = "emulator")]
pub use emulator::{
    Counters, EMULATOR_TENANCY_OCID, Emulator, EmulatorBuilder, Fault, FaultControl, FaultEndpoint,
    FaultId, FaultRate, FaultRule, FaultStats, RecordedExchange, UserTokenOptions,
};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "reqwest")]
pub use exchange::{
    ClientAuthentication, ClientSecretBasic, RequestedToken, TokenExchange, TokenExchangeBuilder,
    Upst, commercial_domain_url,
};
#[cfg(feature = "aws-lc-rs")]
pub use fernet::{Fernet, FernetKey};
pub use key::{KeyBackend, KeySize, PublicKey, SigningKey};
#[cfg(feature = "reqwest")]
pub use key::{KeyPool, KeyPoolBuilder, KeyPoolStats};
#[cfg(feature = "mcp")]
pub use mcp::{
    AccessToken, BearerAuth, BearerAuthBuilder, BearerAuthLayer, BearerAuthService,
    BearerAuthStats, OptionalAccessToken, ToolError, access_token, tool_error,
};
#[cfg(feature = "middleware")]
pub use middleware::{BodyDigest, SignWith, SigningMiddleware};
#[cfg(feature = "oauth-proxy")]
pub use proxy::{OAuthProxy, OAuthProxyBuilder};
pub use secret::SecretString;
#[cfg(feature = "reqwest")]
pub use session::{OciSession, SessionProvider, SubjectTokenSource, TokenExchangeSignerBuilder};
#[cfg(feature = "reqwest")]
pub use signer::{ApiKeySigner, Signer, TokenExchangeSigner};
#[cfg(feature = "reqwest")]
pub use signing::sign_reqwest_request;
pub use signing::{
    DateHeader, KeyId, SignableBody, SignableRequest, SigningOptions, SigningOutput, SigningParams,
    VerifiedRequest, VerifyOptions, sign, sign_http_parts, sign_http_request, verify,
};
#[cfg(feature = "redis")]
pub use store::{EncryptedStore, RedisStore};
pub use store::{MemoryStore, Store, StoreFuture};
