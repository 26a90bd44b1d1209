//! The private key that signs: generated session keys and parsed API keys.

use std::fmt;

use zeroize::Zeroizing;

#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
use super::RsaKey;
#[cfg(feature = "aws-lc-rs")]
use super::aws::AwsKey;
#[cfg(feature = "rust-crypto")]
use super::rust::RustKey;
use super::{KeyBackend, KeySize, MAX_BITS, MIN_PARSED_BITS, PublicKey, der, pem};
use crate::error::{Error, ErrorKind, Result};

/// The error of every key operation in a build without a crypto backend.
#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
fn no_backend() -> Error {
    Error::new(
        ErrorKind::UnsupportedKey,
        "no crypto backend in this build: enable feature `aws-lc-rs` or `rust-crypto`",
    )
}

/// The backend-specific key: dispatch over the compiled-in backends.
enum Inner {
    #[cfg(feature = "aws-lc-rs")]
    Aws(AwsKey),
    #[cfg(feature = "rust-crypto")]
    Rust(RustKey),
    /// Without a backend no key exists.
    #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
    #[allow(dead_code)]
    Unavailable(std::convert::Infallible),
}

/// An RSA private key that signs OCI requests: a generated session key or a parsed
/// API key.
///
/// Parsed once, used for any number of signatures, safe to share between threads.
/// The private key material is wiped when the key is dropped (AWS-LC frees with
/// `OPENSSL_cleanse`; the `rsa` crate zeroizes), and `Debug` shows only the size,
/// backend and public-key fingerprint.
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
}

#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
fn generated<K: RsaKey>(key: K, wrap: fn(K) -> Inner) -> Result<SigningKey> {
    let public = PublicKey::from_pkcs1_der(&key.public_pkcs1_der()?)?;
    Ok(SigningKey {
        inner: wrap(key),
        public,
    })
}

impl SigningKey {
    /// Generates a new key with e = 65537 using the default backend.
    ///
    /// This takes tens to hundreds of milliseconds; call it from a blocking thread
    /// (e.g. `tokio::task::spawn_blocking`), never on an async worker.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend fails to generate a key.
    pub fn generate(size: KeySize) -> Result<Self> {
        Self::generate_with(KeyBackend::DEFAULT, size)
    }

    /// Generates a new key with e = 65537 using `backend`.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend fails to generate a key.
    pub fn generate_with(backend: KeyBackend, size: KeySize) -> Result<Self> {
        match backend {
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs => generated(AwsKey::generate(size)?, Inner::Aws),
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => generated(RustKey::generate(size)?, Inner::Rust),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            KeyBackend::Unavailable => {
                let _ = size;
                Err(no_backend())
            }
        }
    }

    /// Generates a new key with e = 65537 using `generator`, then imports it into
    /// `backend`, which signs with it (the same backend twice is
    /// [`SigningKey::generate_with`]).
    ///
    /// The key crosses as DER PKCS#1 (wiped after use). The import re-checks it: the
    /// modulus must have exactly the requested size, e must be 65537, and aws-lc
    /// runs `RSA_check_key` on import (n = p q, d e = 1 modulo p - 1 and q - 1, and
    /// the CRT values dp, dq and qinv consistent with p, q and d), so a malformed key
    /// is refused, never used.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if generation fails or the generated key does not pass
    /// the import checks.
    pub fn generate_by(generator: KeyBackend, backend: KeyBackend, size: KeySize) -> Result<Self> {
        if generator == backend {
            return Self::generate_with(backend, size);
        }
        let generated = Self::generate_with(generator, size)?;
        let pkcs8 = generated.to_pkcs8_der()?;
        drop(generated);
        Self::import_generated(der::pkcs1_of_pkcs8(&pkcs8)?, backend, size)
    }

    /// A freshly generated DER PKCS#1 key imported into `backend` and checked.
    #[cfg_attr(
        not(any(feature = "aws-lc-rs", feature = "rust-crypto")),
        allow(dead_code)
    )]
    fn import_generated(pkcs1: &[u8], backend: KeyBackend, size: KeySize) -> Result<Self> {
        let imported = Self::from_pkcs1_der_with(pkcs1, backend)
            .map_err(|_| Error::new(ErrorKind::Crypto, "generated rsa key failed import"))?;
        if imported.bits() != size.bits() || imported.public.parts.e != [0x01, 0x00, 0x01] {
            return Err(Error::new(
                ErrorKind::Crypto,
                "generated rsa key has the wrong size or exponent",
            ));
        }
        Ok(imported)
    }

    /// Generates a key with e = 65537 the fastest sound way this build offers for
    /// `backend` (what [`KeyPool`](crate::KeyPool) uses).
    ///
    /// With feature `fast-keygen` (a default) or `rust-crypto`, a key for aws-lc-rs
    /// is generated by the `rsa` crate and imported into aws-lc-rs, with the checks
    /// of [`SigningKey::generate_by`]: 1.3 to 1.8 times as fast as aws-lc-rs's own
    /// generation on x86-64 (`benches/signing.rs`, `keygen/rsa_2048_fast`). Otherwise the
    /// backend generates its own key.
    ///
    /// # Errors
    /// As [`SigningKey::generate_by`].
    pub fn generate_fastest(backend: KeyBackend, size: KeySize) -> Result<Self> {
        #[cfg(all(
            feature = "aws-lc-rs",
            any(feature = "rust-crypto", feature = "fast-keygen")
        ))]
        if backend == KeyBackend::AwsLcRs {
            let pkcs1 = super::rust::generate_pkcs1_der(size)?;
            return Self::import_generated(&pkcs1, backend, size);
        }
        Self::generate_with(backend, size)
    }

    /// Parses an unencrypted RSA private key in PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
    /// PKCS#8 (`BEGIN PRIVATE KEY`) PEM, with the default backend.
    ///
    /// OCI requires API keys of at least 2048 bits; keys of 2048 to 8192 bits are
    /// accepted. A key of 1024 to 2047 bits (Oracle's documented example key is
    /// 1024-bit) signs only with the `rust-crypto` backend: with that feature
    /// compiled in such a key uses it, otherwise it is refused.
    ///
    /// # Errors
    /// [`ErrorKind::MalformedKey`] for anything that is not such a PEM key,
    /// [`ErrorKind::EncryptedKey`] for an encrypted key and
    /// [`ErrorKind::UnsupportedKey`] for a non-RSA key or an unsupported size.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = pem::decode_private_key(pem)?;
        Self::from_pkcs1_der_default(&der)
    }

    /// [`SigningKey::from_pem`] with a chosen backend (`aws-lc-rs` refuses keys under
    /// 2048 bits).
    ///
    /// # Errors
    /// As [`SigningKey::from_pem`].
    pub fn from_pem_with(pem: &str, backend: KeyBackend) -> Result<Self> {
        let der = pem::decode_private_key(pem)?;
        Self::from_pkcs1_der_with(&der, backend)
    }

    /// Parses a DER PKCS#8 `PrivateKeyInfo` holding an RSA key.
    ///
    /// # Errors
    /// As [`SigningKey::from_pem`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        Self::from_pkcs1_der_default(der::pkcs1_of_pkcs8(der)?)
    }

    /// Parses a DER PKCS#1 `RSAPrivateKey`.
    ///
    /// # Errors
    /// As [`SigningKey::from_pem`].
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        Self::from_pkcs1_der_default(der)
    }

    /// The default backend, except that a key under 2048 bits goes to
    /// `rust-crypto` when it is compiled in (aws-lc-rs refuses such keys).
    fn from_pkcs1_der_default(der: &[u8]) -> Result<Self> {
        #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
        if der::public_of_pkcs1_private(der)?.bits() < super::aws::MIN_BITS {
            return Self::from_pkcs1_der_with(der, KeyBackend::RustCrypto);
        }
        Self::from_pkcs1_der_with(der, KeyBackend::DEFAULT)
    }

    #[cfg_attr(
        not(any(feature = "aws-lc-rs", feature = "rust-crypto")),
        allow(unreachable_code, unused_variables)
    )]
    fn from_pkcs1_der_with(der: &[u8], backend: KeyBackend) -> Result<Self> {
        let public = PublicKey {
            parts: der::public_of_pkcs1_private(der)?,
        };
        let bits = public.bits();
        if !(MIN_PARSED_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::new(
                ErrorKind::UnsupportedKey,
                format!("rsa key of {bits} bits is outside the supported 1024..=8192"),
            ));
        }
        let inner = match backend {
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs => Inner::Aws(AwsKey::from_pkcs1_der(der, bits)?),
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => Inner::Rust(RustKey::from_pkcs1_der(der, bits)?),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            KeyBackend::Unavailable => return Err(no_backend()),
        };
        Ok(Self { inner, public })
    }

    /// Signs `msg` with RSASSA-PKCS1-v1_5 and SHA-256 (`rsa-sha256`, JWS `RS256`).
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend fails.
    pub fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            #[cfg(feature = "aws-lc-rs")]
            Inner::Aws(key) => key.sign_pkcs1_sha256(msg),
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(key) => key.sign_pkcs1_sha256(msg),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => {
                let _ = msg;
                match *never {}
            }
        }
    }

    /// The private key as DER PKCS#8 v1 `PrivateKeyInfo` (wiped when dropped), for
    /// handing a key to another process or store. Never log it.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend cannot encode the key.
    #[cfg_attr(not(feature = "emulator"), allow(dead_code))]
    pub(crate) fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        match &self.inner {
            #[cfg(feature = "aws-lc-rs")]
            Inner::Aws(key) => key.to_pkcs8_der(),
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(key) => key.to_pkcs8_der(),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => match *never {},
        }
    }

    /// The private key as DER PKCS#1 `RSAPrivateKey` (wiped when dropped), the form
    /// `jsonwebtoken` signs with. Never log it.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend cannot encode the key.
    #[cfg(feature = "emulator")]
    pub(crate) fn to_pkcs1_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let pkcs8 = self.to_pkcs8_der()?;
        Ok(Zeroizing::new(der::pkcs1_of_pkcs8(&pkcs8)?.to_vec()))
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The modulus size in bits.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.public.bits()
    }

    /// The backend that performs this key's operations.
    #[must_use]
    pub fn backend(&self) -> KeyBackend {
        match &self.inner {
            #[cfg(feature = "aws-lc-rs")]
            Inner::Aws(_) => AwsKey::BACKEND,
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(_) => RustKey::BACKEND,
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => match *never {},
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits())
            .field("backend", &self.backend())
            .field("public_key_sha256", &self.public.fingerprint_sha256())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_export_round_trips_with_every_backend() {
        for &backend in KeyBackend::ALL {
            let key = SigningKey::generate_with(backend, KeySize::Rsa2048).expect("generates");
            let der = key.to_pkcs8_der().expect("encodes");
            let back = SigningKey::from_pkcs8_der(&der).expect("parses");
            assert_eq!(back.public_key(), key.public_key(), "{backend:?}");
            let sig = back.sign_pkcs1_sha256(b"m").expect("signs");
            assert!(key.public_key().verify_pkcs1_sha256(b"m", &sig));
        }
    }

    /// Keys made by the `rsa` crate and imported into aws-lc-rs (the pool's path when
    /// both backends are compiled in): the right size and exponent, distinct, sign
    /// and verify with both backends, and aws-lc refuses an inconsistent key on import.
    #[cfg(all(
        feature = "aws-lc-rs",
        any(feature = "rust-crypto", feature = "fast-keygen")
    ))]
    #[test]
    fn keys_generated_by_rsa_and_imported_into_aws_lc_are_sound() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let key = SigningKey::generate_fastest(KeyBackend::AwsLcRs, KeySize::Rsa2048)
                .expect("generates");
            assert_eq!(key.backend(), KeyBackend::AwsLcRs);
            assert_eq!(key.bits(), 2048);
            assert_eq!(key.public.parts.e, [1, 0, 1], "e = 65537");
            assert!(seen.insert(key.public_key().to_spki_base64()), "distinct");
            let sig = key.sign_pkcs1_sha256(b"date: x").expect("signs");
            for &backend in KeyBackend::ALL {
                assert!(key.public_key().verify_with(backend, b"date: x", &sig));
            }
            assert!(!key.public_key().verify_pkcs1_sha256(b"date: y", &sig));

            // The import checks the key (RSA_check_key): damage the modulus, or the
            // CRT coefficient qinv (the last INTEGER), and it is refused.
            let pkcs8 = key.to_pkcs8_der().expect("encodes");
            let pkcs1 = der::pkcs1_of_pkcs8(&pkcs8).expect("pkcs1").to_vec();
            assert!(SigningKey::from_pkcs1_der_with(&pkcs1, KeyBackend::AwsLcRs).is_ok());
            for at in [20, pkcs1.len() - 1] {
                let mut bad = pkcs1.clone();
                bad[at] ^= 0x04;
                assert!(
                    SigningKey::from_pkcs1_der_with(&bad, KeyBackend::AwsLcRs).is_err(),
                    "byte {at}"
                );
            }
        }
    }
}
