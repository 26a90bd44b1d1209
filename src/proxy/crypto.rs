//! The proxy's small cryptographic pieces, on aws-lc-rs: random identifiers, the
//! SHA-256 store keys of secrets, PKCE S256, and the consent cookie's HMAC.

use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::{constant_time, digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, ErrorKind, Result};

/// 256 random bits, base64url without padding (43 characters).
pub(super) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Crypto, "no random bytes"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// base64url(SHA-256(`input`)): the store key of a secret, and PKCE S256.
pub(super) fn sha256_b64(input: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, input.as_bytes()))
}

/// Whether `a` and `b` are equal, in time independent of where they differ.
pub(super) fn equal(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Whether `verifier` is a PKCE code verifier (RFC 7636 section 4.1: 43 to 128
/// unreserved characters) whose S256 challenge is `challenge`.
pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    is_pkce_value(verifier) && equal(&sha256_b64(verifier), challenge)
}

/// 43 to 128 characters of `[A-Za-z0-9-._~]` (a verifier; also the shape of an
/// S256 challenge, which is exactly 43).
pub(super) fn is_pkce_value(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A key derived from the signing key for one purpose (domain separation).
pub(super) fn derive_key(signing_key: &[u8], purpose: &str) -> hmac::Key {
    let master = hmac::Key::new(hmac::HMAC_SHA256, signing_key);
    let derived = hmac::sign(&master, purpose.as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

/// base64url(HMAC-SHA256(`key`, parts joined by NUL)).
pub(super) fn mac(key: &hmac::Key, parts: &[&str]) -> String {
    let mut context = hmac::Context::with_key(key);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            context.update(b"\0");
        }
        context.update(part.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(context.sign())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            challenge
        ));
        assert!(!pkce_matches("short", &sha256_b64("short")));
    }

    #[test]
    fn random_tokens_differ_and_macs_depend_on_every_part() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token().unwrap());
        let key = derive_key(&[7; 32], "consent");
        let other = derive_key(&[7; 32], "csrf");
        assert_eq!(mac(&key, &["a", "b"]), mac(&key, &["a", "b"]));
        assert_ne!(mac(&key, &["a", "b"]), mac(&key, &["ab"]));
        assert_ne!(mac(&key, &["a", "b"]), mac(&other, &["a", "b"]));
    }
}
