//! RSA keys: generated session keys and parsed API keys, signing RSASSA-PKCS1-v1_5
//! with SHA-256, and their public halves in the forms OCI uses.

mod der;
mod pem;
#[cfg(feature = "reqwest")]
mod pool;

#[cfg(feature = "aws-lc-rs")]
mod aws_legacy;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::error::{Error, ErrorKind, Result};
use der::RsaPublicParts;
#[cfg(feature = "reqwest")]
pub use pool::KeyPool;

/// The error of every key operation in a build without a crypto backend.
#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
fn no_backend() -> Error {
    Error::new(
        ErrorKind::UnsupportedKey,
        "no crypto backend in this build: enable feature `aws-lc-rs` or `rust-crypto`",
    )
}

/// Smallest key accepted from a file (Oracle's documented example key is 1024-bit).
const MIN_PARSED_BITS: usize = 1024;
/// Largest key accepted; bigger keys only cost time.
const MAX_BITS: usize = 8192;

/// Which cryptographic library performs RSA operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyBackend {
    /// `aws-lc-rs` (feature `aws-lc-rs`, the default): fastest, constant-time.
    #[cfg(feature = "aws-lc-rs")]
    AwsLcRs,
    /// The pure-Rust `rsa` 0.10 crate (feature `rust-crypto`).
    #[cfg(feature = "rust-crypto")]
    RustCrypto,
    /// No backend was compiled in (neither feature): every key operation fails with
    /// a clear error. Exists so that such a build still compiles.
    #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
    Unavailable,
}

impl KeyBackend {
    /// The backend used when none is named: `AwsLcRs` when compiled in, else `RustCrypto`.
    #[cfg(feature = "aws-lc-rs")]
    pub const DEFAULT: Self = Self::AwsLcRs;
    /// The backend used when none is named: `AwsLcRs` when compiled in, else `RustCrypto`.
    #[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
    pub const DEFAULT: Self = Self::RustCrypto;
    /// No backend compiled in.
    #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
    pub const DEFAULT: Self = Self::Unavailable;

    /// Every backend compiled into this build (empty without one).
    pub const ALL: &'static [Self] = &[
        #[cfg(feature = "aws-lc-rs")]
        Self::AwsLcRs,
        #[cfg(feature = "rust-crypto")]
        Self::RustCrypto,
    ];
}

impl Default for KeyBackend {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Size of a generated RSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeySize {
    /// 2048 bits: what the Python and Java SDKs generate for session keys (default).
    #[default]
    Rsa2048,
    /// 3072 bits: what the Go SDK generates.
    Rsa3072,
    /// 4096 bits.
    Rsa4096,
}

impl KeySize {
    /// The modulus size in bits.
    #[must_use]
    pub fn bits(self) -> usize {
        match self {
            Self::Rsa2048 => 2048,
            Self::Rsa3072 => 3072,
            Self::Rsa4096 => 4096,
        }
    }
}

enum Inner {
    #[cfg(feature = "aws-lc-rs")]
    Aws(aws_lc_rs::rsa::KeyPair),
    #[cfg(feature = "aws-lc-rs")]
    AwsLegacy(aws_legacy::LegacyRsaKey),
    #[cfg(feature = "rust-crypto")]
    Rust(Box<rsa::PrivateKey>),
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
        let failed = || Error::new(ErrorKind::Crypto, "rsa key generation failed");
        match backend {
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs => {
                use aws_lc_rs::rsa::{KeyPair, KeySize as AwsSize};
                let aws_size = match size {
                    KeySize::Rsa2048 => AwsSize::Rsa2048,
                    KeySize::Rsa3072 => AwsSize::Rsa3072,
                    KeySize::Rsa4096 => AwsSize::Rsa4096,
                };
                let pair = KeyPair::generate(aws_size).map_err(|_| failed())?;
                let public = PublicKey::from_pkcs1_der(
                    aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref(),
                )?;
                Ok(Self {
                    inner: Inner::Aws(pair),
                    public,
                })
            }
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => {
                use rsa::pkcs1::EncodeRsaPublicKey as _;
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, size.bits())
                    .map_err(|_| failed())?;
                let pkcs1 = key.to_public_key().to_pkcs1_der().map_err(|_| failed())?;
                let public = PublicKey::from_pkcs1_der(pkcs1.as_bytes())?;
                Ok(Self {
                    inner: Inner::Rust(Box::new(key)),
                    public,
                })
            }
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            KeyBackend::Unavailable => {
                let _ = (failed, size);
                Err(no_backend())
            }
        }
    }

    /// Parses an unencrypted RSA private key in PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
    /// PKCS#8 (`BEGIN PRIVATE KEY`) PEM, with the default backend.
    ///
    /// Keys from 1024 to 8192 bits are accepted (1024 only because Oracle's own
    /// documented example key is that size; OCI requires 2048 for real API keys).
    ///
    /// # Errors
    /// [`ErrorKind::MalformedKey`] for anything that is not such a PEM key,
    /// [`ErrorKind::EncryptedKey`] for an encrypted key and
    /// [`ErrorKind::UnsupportedKey`] for a non-RSA key or an unsupported size.
    pub fn from_pem(pem: &str) -> Result<Self> {
        Self::from_pem_with(pem, KeyBackend::DEFAULT)
    }

    /// [`SigningKey::from_pem`] with a chosen backend.
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
        Self::from_pkcs1_der_with(der::pkcs1_of_pkcs8(der)?, KeyBackend::DEFAULT)
    }

    /// Parses a DER PKCS#1 `RSAPrivateKey`.
    ///
    /// # Errors
    /// As [`SigningKey::from_pem`].
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
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
        let rejected = || Error::new(ErrorKind::MalformedKey, "rsa private key is invalid");
        let inner = match backend {
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs if bits < 2048 => Inner::AwsLegacy(
                aws_legacy::LegacyRsaKey::from_pkcs1_der(der).ok_or_else(rejected)?,
            ),
            #[cfg(feature = "aws-lc-rs")]
            KeyBackend::AwsLcRs => {
                Inner::Aws(aws_lc_rs::rsa::KeyPair::from_der(der).map_err(|_| rejected())?)
            }
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => {
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                Inner::Rust(Box::new(
                    rsa::PrivateKey::from_pkcs1_der(der).map_err(|_| rejected())?,
                ))
            }
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            KeyBackend::Unavailable => {
                let _ = rejected;
                return Err(no_backend());
            }
        };
        Ok(Self { inner, public })
    }

    /// Signs `msg` with RSASSA-PKCS1-v1_5 and SHA-256 (`rsa-sha256`, JWS `RS256`).
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend fails.
    pub fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let failed = || Error::new(ErrorKind::Crypto, "rsa signing failed");
        match &self.inner {
            #[cfg(feature = "aws-lc-rs")]
            Inner::Aws(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(|_| failed())?;
                Ok(sig)
            }
            #[cfg(feature = "aws-lc-rs")]
            Inner::AwsLegacy(key) => key.sign_sha256(msg).ok_or_else(failed),
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => {
                let _ = (msg, failed);
                match *never {}
            }
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(key) => {
                let digest = sha256(msg);
                key.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                    .map_err(|_| failed())
            }
        }
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
            Inner::Aws(_) | Inner::AwsLegacy(_) => KeyBackend::AwsLcRs,
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(_) => KeyBackend::RustCrypto,
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => match *never {},
        }
    }

    /// The private key as PKCS#8 v1 DER (for `jsonwebtoken`'s encoding key).
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if the backend cannot export the key.
    #[cfg_attr(not(feature = "emulator"), allow(dead_code))]
    pub(crate) fn to_pkcs8_der(&self) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let failed = || Error::new(ErrorKind::Crypto, "cannot export the rsa private key");
        match &self.inner {
            #[cfg(feature = "aws-lc-rs")]
            Inner::Aws(pair) => {
                use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
                let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| failed())?;
                Ok(zeroize::Zeroizing::new(der.as_ref().to_vec()))
            }
            #[cfg(feature = "aws-lc-rs")]
            Inner::AwsLegacy(_) => Err(failed()),
            #[cfg(feature = "rust-crypto")]
            Inner::Rust(key) => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let der = key.to_pkcs8_der().map_err(|_| failed())?;
                Ok(zeroize::Zeroizing::new(der.as_bytes().to_vec()))
            }
            #[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
            Inner::Unavailable(never) => {
                let _ = failed;
                match *never {}
            }
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

/// The public half of an RSA key, in the forms OCI and the identity domain use.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    parts: RsaPublicParts,
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
            KeyBackend::AwsLcRs => aws_lc_rs::signature::RsaPublicKeyComponents {
                n: &self.parts.n,
                e: &self.parts.e,
            }
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                msg,
                signature,
            )
            .is_ok(),
            #[cfg(feature = "rust-crypto")]
            KeyBackend::RustCrypto => {
                use rsa::pkcs1::DecodeRsaPublicKey as _;
                let Ok(key) = rsa::PublicKey::from_pkcs1_der(&self.parts.to_pkcs1()) else {
                    return false;
                };
                key.verify(
                    rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    &sha256(msg),
                    signature,
                )
                .is_ok()
            }
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

/// SHA-256 of `data` with the default backend.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    #[cfg(feature = "aws-lc-rs")]
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        use sha2::Digest as _;
        out.copy_from_slice(&sha2::Sha256::digest(data));
    }
    out
}
