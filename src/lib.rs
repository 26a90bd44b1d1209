#![doc = include_str!("../README.md")]

mod clock;
mod error;
mod key;
mod secret;
mod signing;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use key::{KeyBackend, KeySize, PublicKey, SigningKey, sha256};
pub use secret::SecretString;
#[cfg(feature = "reqwest")]
pub use signing::sign_reqwest_request;
pub use signing::{
    DateHeader, KeyId, SignableBody, SignableRequest, SigningOptions, SigningOutput, SigningParams,
    VerifiedRequest, VerifyOptions, sign, sign_http_parts, sign_http_request, verify,
};
