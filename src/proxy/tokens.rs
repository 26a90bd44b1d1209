//! The proxy's own access tokens: HS256 JWTs (`typ` `at+jwt`, RFC 9068 shape),
//! minted and verified with `jsonwebtoken`, the algorithm pinned.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::jwt::MAX_TOKEN_LEN;

/// The claims of the proxy's access tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct OwnClaims {
    pub(super) iss: String,
    pub(super) aud: String,
    pub(super) client_id: String,
    pub(super) scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sub: Option<String>,
    pub(super) jti: String,
    pub(super) iat: u64,
    pub(super) exp: u64,
}

/// The keys of the proxy's tokens, with the checks every token gets.
pub(super) struct OwnTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for OwnTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnTokens([redacted])")
    }
}

const TYP: &str = "at+jwt";

impl OwnTokens {
    pub(super) fn new(key: &[u8], issuer: &str, audience: &str) -> Result<Self> {
        let bad = |_| Error::new(ErrorKind::InvalidConfig, "the signing key is not usable");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["iss", "aud", "exp"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(key).map_err(bad)?,
            decoding: DecodingKey::from_secret(key).map_err(bad)?,
            validation,
        })
    }

    pub(super) fn mint(&self, claims: &OwnClaims) -> Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TYP.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|_| Error::new(ErrorKind::Crypto, "cannot sign an access token"))
    }

    /// The claims of one of this proxy's tokens (signature, `typ`, `iss`, `aud`),
    /// expired or not: the caller checks `exp` against its clock.
    pub(super) fn verify(&self, token: &str) -> Option<OwnClaims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let data =
            jsonwebtoken::decode::<OwnClaims>(token, &self.decoding, &self.validation).ok()?;
        (data.header.typ.as_deref() == Some(TYP)).then_some(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> OwnClaims {
        OwnClaims {
            iss: "http://127.0.0.1:1".into(),
            aud: "http://127.0.0.1:1/mcp".into(),
            client_id: "c".into(),
            scope: "openid".into(),
            sub: Some("u".into()),
            jti: "j".into(),
            iat: 1,
            exp: 2,
        }
    }

    #[test]
    fn round_trips_and_refuses_others() {
        let tokens =
            OwnTokens::new(&[1; 32], "http://127.0.0.1:1", "http://127.0.0.1:1/mcp").unwrap();
        let token = tokens.mint(&claims()).unwrap();
        assert_eq!(tokens.verify(&token).unwrap().jti, "j");
        let other_key =
            OwnTokens::new(&[2; 32], "http://127.0.0.1:1", "http://127.0.0.1:1/mcp").unwrap();
        assert!(other_key.verify(&token).is_none());
        let other_aud = OwnTokens::new(&[1; 32], "http://127.0.0.1:1", "http://x/mcp").unwrap();
        assert!(other_aud.verify(&token).is_none());
        let other_iss = OwnTokens::new(&[1; 32], "http://x", "http://127.0.0.1:1/mcp").unwrap();
        assert!(other_iss.verify(&token).is_none());
        // alg none / another typ are refused.
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        let plain = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&[1; 32]).unwrap(),
        )
        .unwrap();
        assert!(tokens.verify(&plain).is_none());
        assert!(tokens.verify("a.b.c").is_none());
        assert!(!format!("{tokens:?}").contains('1'));
    }
}
