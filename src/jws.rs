//! Compact RS256 JWTs: issuing (the emulator) and verifying (the emulator and the
//! MCP bearer check). Only RS256 exists here: `none`, HMAC and other algorithms are
//! refused by construction, so no algorithm-confusion attack applies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::key::PublicKey;
#[cfg(feature = "emulator")]
use crate::key::SigningKey;

/// Largest token considered; real ones are a few KiB.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Signs `claims` as an RS256 JWT with header `kid`.
#[cfg(feature = "emulator")]
pub(crate) fn sign(key: &SigningKey, kid: &str, claims: &Map<String, Value>) -> String {
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

/// A compact JWS split into its decoded parts; nothing verified yet.
pub(crate) struct Jws<'a> {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`; `None` unless it is a well-formed RS256 JWS.
    pub(crate) fn parse(token: &'a str) -> Option<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let dot = token.rfind('.')?;
        let signing_input = token.get(..dot)?;
        let (header, payload) = signing_input.split_once('.')?;
        let object = |part: &str| match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?)
        {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        let header = object(header)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return None;
        }
        Some(Self {
            header,
            claims: object(payload)?,
            signing_input,
            signature: URL_SAFE_NO_PAD.decode(token.get(dot + 1..)?).ok()?,
        })
    }

    /// The `kid` header.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Whether `key` made the signature.
    pub(crate) fn verify(&self, key: &PublicKey) -> bool {
        key.verify_pkcs1_sha256(self.signing_input.as_bytes(), &self.signature)
    }
}

/// Checks an RS256 JWT's signature and `kid`, returning its claims.
#[cfg(feature = "emulator")]
pub(crate) fn verify(token: &str, key: &PublicKey, kid: &str) -> Option<Map<String, Value>> {
    let jws = Jws::parse(token)?;
    (jws.kid() == Some(kid) && jws.verify(key)).then_some(jws.claims)
}
