//! RSA keys: generated session keys and parsed API keys, signing RSASSA-PKCS1-v1_5
//! with SHA-256, and their public halves in the forms OCI uses.
//!
//! `SigningKey` dispatches to one file per backend (`aws`, `rust`), each
//! implementing the private [`RsaKey`] trait; `PublicKey` holds the parsed public
//! parts; `der` and `pem` read the encodings.

#[cfg(feature = "aws-lc-rs")]
mod aws;
mod backend;
mod der;
mod pem;
#[cfg(feature = "reqwest")]
mod pool;
mod public_key;
#[cfg(any(feature = "rust-crypto", feature = "fast-keygen"))]
mod rust;
mod signing_key;

pub use backend::{KeyBackend, KeySize};
#[cfg(feature = "reqwest")]
pub use pool::{KeyPool, KeyPoolBuilder, KeyPoolStats};
pub use public_key::PublicKey;
pub use signing_key::SigningKey;

/// Smallest key accepted from a file (Oracle's documented example key is 1024-bit;
/// only the `rust-crypto` backend signs with keys under 2048 bits).
const MIN_PARSED_BITS: usize = 1024;
/// Largest key accepted; bigger keys only cost time.
const MAX_BITS: usize = 8192;

/// What each backend provides: one implementation per file.
#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
trait RsaKey: Sized + Send + Sync {
    /// The backend this is.
    const BACKEND: KeyBackend;
    /// A new key with e = 65537.
    fn generate(size: KeySize) -> Result<Self>;
    /// A key from DER PKCS#1 `RSAPrivateKey` whose modulus has `bits` bits
    /// (already checked to lie in the crate's supported range).
    fn from_pkcs1_der(der: &[u8], bits: usize) -> Result<Self>;
    /// DER PKCS#1 `RSAPublicKey` of the key.
    fn public_pkcs1_der(&self) -> Result<Vec<u8>>;
    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>>;
    /// DER PKCS#8 v1 `PrivateKeyInfo`.
    #[allow(dead_code)] // see `SigningKey::to_pkcs8_der`
    fn to_pkcs8_der(&self) -> Result<zeroize::Zeroizing<Vec<u8>>>;
    /// Checks an RSASSA-PKCS1-v1_5 SHA-256 signature (keys of 1024 to 8192 bits).
    fn verify(public: &der::RsaPublicParts, msg: &[u8], signature: &[u8]) -> bool;
}

#[cfg(any(feature = "aws-lc-rs", feature = "rust-crypto"))]
use crate::error::Result;

/// SHA-256 of `data` with the default backend.
#[must_use]
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    #[cfg(feature = "aws-lc-rs")]
    {
        aws::sha256(data)
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        use sha2::Digest as _;
        sha2::Sha256::digest(data).into()
    }
}
