//! Compact RS256 JWTs for the emulator: issuing and checking them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::key::{PublicKey, SigningKey};

/// Signs `claims` as an RS256 JWT with header `kid`.
pub(super) fn sign(key: &SigningKey, kid: &str, claims: &Map<String, Value>) -> String {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
    );
    // Signing with a valid in-memory key fails only if the backend is broken; an
    // empty signature then makes the token unverifiable, never a panic.
    let signature = key.sign_pkcs1_sha256(token.as_bytes()).unwrap_or_default();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// Checks an RS256 JWT's signature and `kid`, returning its claims.
pub(super) fn verify(token: &str, key: &PublicKey, kid: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")? != "RS256" || header.get("kid")? != kid {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signed = token.get(..token.rfind('.')?)?;
    if !key.verify_pkcs1_sha256(signed.as_bytes(), &signature) {
        return None;
    }
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
