//! The UPST: the OCI session token the exchange returns, with its claims.

use std::fmt;
use std::time::SystemTime;

use crate::error::{Error, ErrorKind, Result};
use crate::jwt::Claims;
use crate::key::PublicKey;
use crate::secret::SecretString;

/// An OCI user principal session token (UPST), as returned by the token exchange,
/// with the claims this crate uses.
///
/// The claims were read without verifying the token's signature: the caller cannot
/// verify it, and it came over TLS from the identity domain. `Debug` never shows the
/// token.
#[derive(Clone)]
pub struct Upst {
    token: SecretString,
    user_ocid: String,
    tenancy_ocid: Option<String>,
    jti: Option<String>,
    issued_at: Option<SystemTime>,
    expires_at: SystemTime,
    public_key: PublicKey,
}

impl Upst {
    /// Reads a UPST's claims. `exp`, `sub` and `jwk` (a JSON string holding the bound
    /// RSA public key) are required.
    ///
    /// # Errors
    /// [`ErrorKind::MalformedResponse`] if the token is not a JWT with those claims.
    pub fn parse(token: &str) -> Result<Self> {
        let bad = |m: &'static str| Error::new(ErrorKind::MalformedResponse, m);
        let token = token.trim();
        let claims = Claims::decode(token, ErrorKind::MalformedResponse, "session token")?;
        let expires_at = claims
            .time("exp")
            .ok_or_else(|| bad("session token has no exp claim"))?;
        let user_ocid = claims
            .str("sub")
            .ok_or_else(|| bad("session token has no sub claim"))?
            .to_owned();
        let public_key = crate::jwt::bound_key(&claims.0).map_err(bad)?;
        Ok(Self {
            token: SecretString::new(token),
            user_ocid,
            tenancy_ocid: claims.str("tenant").map(str::to_owned),
            jti: claims.str("jti").map(str::to_owned),
            issued_at: claims.time("iat"),
            expires_at,
            public_key,
        })
    }

    /// The token itself (a bearer credential when paired with its key: do not log it).
    #[must_use]
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The user's OCID (`sub`).
    #[must_use]
    pub fn user_ocid(&self) -> &str {
        &self.user_ocid
    }

    /// The tenancy's OCID (`tenant`), when present.
    #[must_use]
    pub fn tenancy_ocid(&self) -> Option<&str> {
        self.tenancy_ocid.as_deref()
    }

    /// The token id (`jti`), when present.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// When it was issued (`iat`), when present.
    #[must_use]
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// When it expires (`exp`).
    #[must_use]
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The public key the token is bound to (its `jwk` claim).
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

impl fmt::Debug for Upst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upst")
            .field("token", &"[redacted]")
            .field("user_ocid", &self.user_ocid)
            .field("tenancy_ocid", &self.tenancy_ocid)
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
