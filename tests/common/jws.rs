//! Compact JWS, built by hand so a test controls every byte of header and claims
//! (`jsonwebtoken` would write its own header).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::SigningKey;

/// A compact JWS with exactly this header and these claims (JSON text), signed
/// RS256 by `key`.
pub fn rs256(key: &SigningKey, header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = key.sign_pkcs1_sha256(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
