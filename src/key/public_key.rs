//! The public half of an RSA key and its encodings (SPKI, PKCS#1, JWK, PEM).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
use super::RsaKey as _;
#[cfg(feature = "aws-lc-rs")]
use super::aws::AwsKey;
use super::der::RsaPublicParts;
#[cfg(feature = "rust-crypto")]
use super::rust::RustKey;
use super::{KeyBackend, MAX_BITS, MIN_PARSED_BITS, sha256};
use crate::error::{Error, ErrorKind, Result};

/// The public half of an RSA key, in the forms OCI and the identity domain use.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub(super) parts: RsaPublicParts,
}

impl PublicKey {
    /// Parses a DER `RSAPublicKey` (PKCS#1).
    ///
    /// # Errors
    /// [`ErrorKind::MalformedKey`] if it does not parse.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        Ok(Self {
            parts: RsaPublicParts::from_pkcs1(der)?,
        })
    }

    /// Parses a DER `SubjectPublicKeyInfo` holding an RSA key.
    ///
    /// # Errors
    /// [`ErrorKind::MalformedKey`] if it does not parse, [`ErrorKind::UnsupportedKey`]
    /// if it is not RSA.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        Ok(Self {
            parts: RsaPublicParts::from_spki(der)?,
        })
    }

    /// Parses the standard-base64 DER `SubjectPublicKeyInfo` that the token exchange
    /// sends as `public_key`.
    ///
    /// # Errors
    /// As [`PublicKey::from_spki_der`], and [`ErrorKind::MalformedKey`] for bad base64.
    pub fn from_spki_base64(b64: &str) -> Result<Self> {
        let der = STANDARD
            .decode(b64.trim())
            .map_err(|_| Error::new(ErrorKind::MalformedKey, "public key is not valid base64"))?;
        Self::from_spki_der(&der)
    }

    /// Parses a PEM public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    ///
    /// # Errors
    /// As [`PublicKey::from_spki_der`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        let pem = pem.trim();
        for (label, pkcs1) in [("PUBLIC KEY", false), ("RSA PUBLIC KEY", true)] {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            if let Some(body) = pem
                .strip_prefix(begin.as_str())
                .and_then(|rest| rest.strip_suffix(end.as_str()))
            {
                let b64: String = body.split_whitespace().collect();
                let der = STANDARD.decode(b64).map_err(|_| {
                    Error::new(ErrorKind::MalformedKey, "pem body is not valid base64")
                })?;
                return if pkcs1 {
                    Self::from_pkcs1_der(&der)
                } else {
                    Self::from_spki_der(&der)
                };
            }
        }
        Err(Error::new(ErrorKind::MalformedKey, "not a pem public key"))
    }

    /// Builds a key from the base64url `n` and `e` members of an RSA JWK.
    ///
    /// # Errors
    /// [`ErrorKind::MalformedKey`] for bad base64url or a zero value.
    pub fn from_jwk_components(n: &str, e: &str) -> Result<Self> {
        let bad = || Error::new(ErrorKind::MalformedKey, "jwk n or e is not valid base64url");
        let n = URL_SAFE_NO_PAD.decode(n).map_err(|_| bad())?;
        let e = URL_SAFE_NO_PAD.decode(e).map_err(|_| bad())?;
        Ok(Self {
            parts: RsaPublicParts::from_ints(&n, &e)?,
        })
    }

    /// DER `SubjectPublicKeyInfo`.
    #[must_use]
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.parts.to_spki()
    }

    /// Standard base64 (padded, one line) of the DER `SubjectPublicKeyInfo`: the
    /// `public_key` form field of the token exchange.
    #[must_use]
    pub fn to_spki_base64(&self) -> String {
        STANDARD.encode(self.parts.to_spki())
    }

    /// DER `RSAPublicKey` (PKCS#1).
    #[must_use]
    pub fn to_pkcs1_der(&self) -> Vec<u8> {
        self.parts.to_pkcs1()
    }

    /// The JWK `n` member: base64url, no padding, of the modulus.
    #[must_use]
    pub fn jwk_n(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.parts.n)
    }

    /// The JWK `e` member: base64url, no padding, of the public exponent.
    #[must_use]
    pub fn jwk_e(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.parts.e)
    }

    /// A JWK JSON object (`kty`, `n`, `e`, and `kid` when given).
    #[must_use]
    pub fn to_jwk_json(&self, kid: Option<&str>) -> String {
        let kid = kid.map_or_else(String::new, |k| {
            format!(",\"kid\":\"{}\"", k.replace(['"', '\\'], ""))
        });
        format!(
            "{{\"kty\":\"RSA\",\"n\":\"{}\",\"e\":\"{}\"{kid}}}",
            self.jwk_n(),
            self.jwk_e()
        )
    }

    /// The modulus size in bits.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.parts.bits()
    }

    /// Hex SHA-256 of the DER `SubjectPublicKeyInfo`: a stable, non-secret identifier.
    #[must_use]
    pub fn fingerprint_sha256(&self) -> String {
        sha256(&self.to_spki_der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature over `msg` (keys of 1024 to
    /// 8192 bits).
    #[must_use]
    pub fn verify_pkcs1_sha256(&self, msg: &[u8], signature: &[u8]) -> bool {
        self.verify_with(KeyBackend::DEFAULT, msg, signature)
    }

    /// [`PublicKey::verify_pkcs1_sha256`] with a chosen backend.
    #[must_use]
    pub fn verify_with(&self, backend: KeyBackend, msg: &[u8], signature: &[u8]) -> bool {
        if !(MIN_PARSED_BITS..=MAX_BITS).contains(&self.bits()) {
            return false;
        }
        match backend {
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs => AwsKey::verify(&self.parts, msg, signature),
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => RustKey::verify(&self.parts, msg, signature),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            KeyBackend::Unavailable => {
                let _ = (msg, signature);
                false
            }
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .field("sha256", &self.fingerprint_sha256())
            .finish()
    }
}
