//! Constants of the identity domain's token exchange, shared by the client and the
//! emulator so the two cannot drift apart.
#![cfg_attr(not(feature = "reqwest"), allow(dead_code))]

/// `grant_type` of RFC 8693 token exchange.
pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` the identity domain expects: the bare literal `jwt`.
pub(crate) const SUBJECT_TOKEN_TYPE: &str = "jwt";
/// `requested_token_type` of a user principal session token.
pub(crate) const UPST_TYPE: &str = "urn:oci:token-type:oci-upst";
/// `requested_token_type` of a resource principal session token.
pub(crate) const RPST_TYPE: &str = "urn:oci:token-type:oci-rpst";
/// Path of the token endpoint below the domain URL (no leading `/`, to join).
pub(crate) const TOKEN_PATH: &str = "oauth2/v1/token";
