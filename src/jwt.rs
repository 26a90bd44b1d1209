//! All JWT work, on `jsonwebtoken`: reading claims without verifying them (the
//! subject token before the exchange, the UPST), verifying RS256 tokens against a
//! key (the MCP bearer check, the emulator), issuing the emulator's tokens, the UPST
//! `jwk` claim, and the one NumericDate rule.
//!
//! Time is never jsonwebtoken's: its `exp`/`nbf` checks are off and callers compare
//! [`numeric_date`] against the crate's `Clock`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::key::PublicKey;

/// Largest token accepted anywhere; real JWTs are a few KiB.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// A JWT NumericDate (RFC 7519 section 2): a finite JSON number of seconds since the
/// epoch, not negative; fractions allowed. Anything else (strings, negatives, values
/// beyond what `SystemTime` holds) is `None`. The one rule of the whole crate.
pub(crate) fn numeric_date(value: &Value) -> Option<SystemTime> {
    let since_epoch = if let Some(secs) = value.as_u64() {
        Duration::from_secs(secs)
    } else {
        let secs = value.as_f64().filter(|f| f.is_finite() && *f >= 0.0)?;
        Duration::try_from_secs_f64(secs).ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// The payload of a JWT, decoded but not verified.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
pub(crate) struct Claims(pub(crate) Map<String, Value>);

#[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
impl Claims {
    /// Decodes the header and payload of a compact JWS (`header.payload.signature`)
    /// without verifying anything.
    ///
    /// `kind` is the error kind to report (the subject token and the UPST differ);
    /// errors name `what`, never the token.
    pub(crate) fn decode(token: &str, kind: ErrorKind, what: &'static str) -> Result<Self> {
        let bad = |m: &str| Error::new(kind, format!("{what} {m}"));
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("is too long to be a jwt"));
        }
        if token.split('.').count() != 3 {
            return Err(bad("is not a jwt (expected three dot-separated parts)"));
        }
        let header = token.split('.').next().unwrap_or_default();
        let header = URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| bad("has a header that is not base64url"))?;
        if !matches!(
            serde_json::from_slice::<Value>(&header),
            Ok(Value::Object(_))
        ) {
            return Err(bad("has a header that is not a json object"));
        }
        jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
            .map(Self)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    bad("has a payload that is not base64url")
                }
                _ => bad("has a payload that is not a json object"),
            })
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim, by [`numeric_date`].
    pub(crate) fn time(&self, name: &str) -> Option<SystemTime> {
        numeric_date(self.0.get(name)?)
    }
}

/// The RSA public key a UPST is bound to: its `jwk` claim, a JSON *string* holding a
/// JWK (an object is tolerated). Errors are secret-free descriptions.
pub(crate) fn bound_key(
    claims: &Map<String, Value>,
) -> std::result::Result<PublicKey, &'static str> {
    let jwk: Value = match claims.get("jwk") {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|_| "session token jwk claim is not json")?
        }
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err("session token has no jwk claim"),
    };
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err("session token jwk is not an rsa key");
    }
    let (Some(n), Some(e)) = (
        jwk.get("n").and_then(Value::as_str),
        jwk.get("e").and_then(Value::as_str),
    ) else {
        return Err("session token jwk lacks n or e");
    };
    PublicKey::from_jwk_components(n, e).map_err(|_| "session token jwk is not a valid rsa key")
}

/// Smallest RSA modulus trusted for verification.
#[cfg(feature = "mcp")]
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus considered.
#[cfg(feature = "mcp")]
const MAX_RSA_BITS: usize = 8192;

/// An RS256 verification key from a JWKS entry, with its `kid`: `None` unless it is
/// an RSA key for signatures (`use` absent or `sig`, `alg` absent or `RS256`) of
/// 2048 to 8192 bits.
#[cfg(feature = "mcp")]
pub(crate) fn verification_key(jwk: &Value) -> Option<(String, jsonwebtoken::DecodingKey)> {
    use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
    let jwk: Jwk = serde_json::from_value(jwk.clone()).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
        || jwk
            .common
            .key_algorithm
            .is_some_and(|a| a != KeyAlgorithm::RS256)
    {
        return None;
    }
    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        return None;
    };
    let bits = modulus_bits(&rsa.n)?;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return None;
    }
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()?;
    Some((jwk.common.key_id.unwrap_or_default(), key))
}

/// The size in bits of a base64url big-endian modulus.
#[cfg(feature = "mcp")]
fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let top = bytes.get(first)?;
    Some((bytes.len() - first - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// The header of a token, if it is a JWS whose header parses (nothing verified).
#[cfg(any(feature = "mcp", feature = "emulator"))]
pub(crate) fn header(token: &str) -> Option<jsonwebtoken::Header> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()
}

/// Why [`verify`] refused a token (secret-free).
#[cfg(any(feature = "mcp", feature = "emulator"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a well-formed RS256 JWS (including `alg` other than RS256, `crit`).
    Malformed,
    /// The signature does not verify with the key.
    Signature,
    /// `iss` is missing or not the expected issuer.
    Issuer,
    /// `aud` is missing or does not name the expected audience.
    Audience,
}

#[cfg(feature = "mcp")]
impl Refusal {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "the token is not an RS256 JWT",
            Self::Signature => "the token's signature is not valid",
            Self::Issuer => "the token was issued by another issuer",
            Self::Audience => "the token is not for this resource (audience)",
        }
    }
}

/// Verifies an RS256 JWT with `key` and checks `iss` (exactly `issuer`, when
/// given) and, when given, that `aud` names `audience`; returns the claims. Time
/// claims are the caller's to check, against its clock, with [`numeric_date`].
#[cfg(any(feature = "mcp", feature = "emulator"))]
pub(crate) fn verify(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> std::result::Result<Map<String, Value>, Refusal> {
    use jsonwebtoken::errors::ErrorKind as Jwt;
    if token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let mut required = Vec::new();
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            Jwt::InvalidSignature => Refusal::Signature,
            Jwt::InvalidIssuer => Refusal::Issuer,
            Jwt::InvalidAudience => Refusal::Audience,
            Jwt::MissingRequiredClaim(claim) | Jwt::InvalidClaimFormat(claim) if claim == "aud" => {
                Refusal::Audience
            }
            Jwt::MissingRequiredClaim(claim) | Jwt::InvalidClaimFormat(claim) if claim == "iss" => {
                Refusal::Issuer
            }
            _ => Refusal::Malformed,
        })?;
    // jsonwebtoken accepts an `iss` array containing the issuer: only the string.
    if let Some(issuer) = issuer
        && data.claims.get("iss").and_then(Value::as_str) != Some(issuer)
    {
        return Err(Refusal::Issuer);
    }
    Ok(data.claims)
}

/// The verification key of an RSA public key.
#[cfg(feature = "emulator")]
pub(crate) fn decoding_key(key: &PublicKey) -> Option<jsonwebtoken::DecodingKey> {
    jsonwebtoken::DecodingKey::from_rsa_components(&key.jwk_n(), &key.jwk_e()).ok()
}

/// Verifies an RS256 JWT the emulator issued: signature by `key`, header `kid`,
/// `iss`. Returns its claims.
#[cfg(feature = "emulator")]
pub(crate) fn verify_issued(
    token: &str,
    key: &PublicKey,
    kid: &str,
    issuer: Option<&str>,
) -> Option<Map<String, Value>> {
    if header(token)?.kid.as_deref() != Some(kid) {
        return None;
    }
    verify(token, &decoding_key(key)?, issuer, None).ok()
}

/// Signs `claims` as an RS256 JWT with header `kid` (the emulator's tokens).
///
/// # Errors
/// [`ErrorKind::Crypto`] if the key cannot be exported or signing fails.
#[cfg(feature = "emulator")]
pub(crate) fn encode(
    key: &crate::key::SigningKey,
    kid: &str,
    claims: &Map<String, Value>,
) -> Result<String> {
    let failed = || Error::new(ErrorKind::Crypto, "cannot sign a jwt");
    let pkcs1 = key.to_pkcs1_der()?;
    let encoding_key = jsonwebtoken::EncodingKey::from_rsa_der(&pkcs1);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding_key).map_err(|_| failed())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"RS256\"}"),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_claims() {
        let c = Claims::decode(
            &jwt(r#"{"exp":1700000000,"iat":1.7e9,"jti":"x"}"#),
            ErrorKind::SubjectTokenMalformed,
            "t",
        )
        .expect("decodes");
        assert_eq!(c.str("jti"), Some("x"));
        assert_eq!(
            c.time("exp"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            c.time("iat"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(c.time("nbf"), None);
    }

    #[test]
    fn numeric_dates_have_one_rule() {
        let at = |s: u64, ms: u64| {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(numeric_date(&json!(10)), at(10, 0));
        assert_eq!(numeric_date(&json!(10.5)), at(10, 500));
        assert_eq!(numeric_date(&json!(0)), at(0, 0));
        for bad in [
            json!(-1),
            json!(-0.5),
            json!("10"),
            json!(null),
            json!(true),
            json!([10]),
            json!(1e300),
            json!(f64::MAX),
        ] {
            assert_eq!(numeric_date(&bad), None, "{bad}");
        }
        // The largest integers do not overflow, they are just not representable.
        let _ = numeric_date(&json!(u64::MAX));
    }

    #[test]
    fn rejects_non_jwts_without_echoing_them() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.x",
            &jwt("[1]"),
            &jwt("not json"),
            "e30.!!.x",
        ] {
            let err = Claims::decode(t, ErrorKind::SubjectTokenMalformed, "subject token")
                .expect_err("must fail");
            assert_eq!(err.kind(), ErrorKind::SubjectTokenMalformed);
            assert!(t.len() < 3 || !err.to_string().contains(t), "{err}");
        }
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn issued_tokens_verify_with_every_backend() {
        use crate::key::{KeyBackend, KeySize, SigningKey};
        for backend in KeyBackend::ALL {
            let key = SigningKey::generate_with(*backend, KeySize::Rsa2048).expect("key");
            let mut claims = Map::new();
            claims.insert("iss".into(), json!("me"));
            claims.insert("exp".into(), json!(10.5));
            let token = encode(&key, "k", &claims).expect("signs");
            let verified = verify_issued(&token, key.public_key(), "k", Some("me"));
            assert_eq!(verified.as_ref(), Some(&claims), "{backend:?}");
            assert!(verify_issued(&token, key.public_key(), "other", Some("me")).is_none());
            assert!(verify_issued(&token, key.public_key(), "k", Some("you")).is_none());
            let other = SigningKey::generate_with(*backend, KeySize::Rsa2048).expect("key");
            assert!(verify_issued(&token, other.public_key(), "k", Some("me")).is_none());
        }
    }

    #[test]
    fn bound_key_needs_an_rsa_jwk() {
        let mut claims = Map::new();
        assert!(bound_key(&claims).is_err());
        claims.insert("jwk".into(), json!("not json"));
        assert!(bound_key(&claims).is_err());
        claims.insert("jwk".into(), json!(r#"{"kty":"EC"}"#));
        assert!(bound_key(&claims).is_err());
        claims.insert("jwk".into(), json!(r#"{"kty":"RSA","n":"AQAB"}"#));
        assert!(bound_key(&claims).is_err());
    }
}
