//! OCI HTTP request signatures: signing (pure), verifying, and applying the result
//! to `http` and `reqwest` requests.

mod apply;
mod authz;
mod date;
mod key_id;
mod request;
mod sign;
mod verify;

#[cfg(feature = "reqwest")]
pub use apply::sign_reqwest_request;
#[cfg(feature = "middleware")]
pub(crate) use apply::sign_reqwest_request_with_body;
pub use apply::{sign_http_parts, sign_http_request};
pub use key_id::KeyId;
#[cfg(feature = "reqwest")]
pub(crate) use request::is_loopback_host;
pub use request::{SignableBody, SignableRequest};
pub use sign::{DateHeader, SigningOptions, SigningOutput, SigningParams, sign};
pub use verify::{VerifiedRequest, VerifyOptions, verify};
