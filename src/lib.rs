// The README is the crate's front page and, with every feature on, a doc test.
#![cfg_attr(
    all(feature = "mcp", feature = "emulator"),
    doc = include_str!("../README.md")
)]
#![cfg_attr(
    not(all(feature = "mcp", feature = "emulator")),
    doc = "Call OCI APIs as the user who logged in. Build the docs with `--all-features` for the full guide."
)]

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
#[cfg(any(feature = "reqwest", feature = "emulator"))]
mod jwt;
mod key;
#[cfg(feature = "mcp")]
mod mcp;
#[cfg(feature = "middleware")]
mod middleware;
mod secret;
#[cfg(feature = "reqwest")]
mod session;
mod signing;

#[cfg(feature = "reqwest")]
pub use cache::{CacheStats, SignerCache, SignerCacheBuilder};
pub use clock::{Clock, FixedClock, SystemClock};
#[cfg(feature = "reqwest")]
pub use credentials::{ApiKeySigner, Credentials, CredentialsProvider};
#[cfg(feature = "emulator")]
pub use emulator::{
    Counters, EMULATOR_TENANCY_OCID, Emulator, EmulatorBuilder, Fault, RecordedExchange,
    UserTokenOptions,
};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "reqwest")]
pub use exchange::{
    ClientAuthentication, ClientSecretBasic, RequestedToken, TokenExchange, TokenExchangeBuilder,
    Upst, commercial_domain_url,
};
#[cfg(feature = "reqwest")]
pub use key::KeyPool;
pub use key::{KeyBackend, KeySize, PublicKey, SigningKey, sha256};
#[cfg(feature = "mcp")]
pub use mcp::{
    AccessToken, BearerAuth, BearerAuthBuilder, BearerAuthLayer, BearerAuthService,
    OptionalAccessToken, access_token, tool_error,
};
#[cfg(feature = "middleware")]
pub use middleware::{BodyDigest, SigningMiddleware};
pub use secret::SecretString;
#[cfg(feature = "reqwest")]
pub use session::{
    BoxFuture, Session, SubjectTokenSource, TokenExchangeSigner, TokenExchangeSignerBuilder,
};
#[cfg(feature = "reqwest")]
pub use signing::sign_reqwest_request;
pub use signing::{
    DateHeader, KeyId, SignableBody, SignableRequest, SigningOptions, SigningOutput, SigningParams,
    VerifiedRequest, VerifyOptions, sign, sign_http_parts, sign_http_request, verify,
};
