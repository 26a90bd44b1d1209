//! The RustCrypto backend (feature `rust-crypto`): the pure-Rust `rsa` 0.10 crate,
//! keys of 1024 to 8192 bits.

#[cfg(feature = "rust-crypto")]
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _, EncodeRsaPublicKey as _};
#[cfg(feature = "rust-crypto")]
use rsa::pkcs8::EncodePrivateKey as _;
use zeroize::Zeroizing;

use super::KeySize;
#[cfg(feature = "rust-crypto")]
use super::der::RsaPublicParts;
#[cfg(feature = "rust-crypto")]
use super::{KeyBackend, RsaKey, sha256};
use crate::error::{Error, ErrorKind, Result};

/// A new RSA key with e = 65537 from the `rsa` crate, as DER PKCS#1 `RSAPrivateKey`
/// (wiped when dropped), for importing into aws-lc-rs (feature `fast-keygen`).
///
/// `rsa::PrivateKey::new` draws from the operating system's generator, makes each
/// prime with its two top bits set by sieving from a random odd start and testing
/// candidates with Baillie-PSW (`crypto-primes`: Miller-Rabin base 2 and a strong
/// Lucas test), retries until n has exactly the requested size and d exists, and
/// precomputes the CRT values.
#[cfg(feature = "aws-lc-rs")]
pub(super) fn generate_pkcs1_der(size: KeySize) -> Result<Zeroizing<Vec<u8>>> {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, size.bits())
        .map_err(|_| Error::new(ErrorKind::Crypto, "rsa key generation failed"))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|_| Error::new(ErrorKind::Crypto, "cannot encode the private key"))?;
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

/// An `rsa` private key (zeroized on drop by the crate).
#[cfg(feature = "rust-crypto")]
pub(super) struct RustKey(Box<rsa::PrivateKey>);

#[cfg(feature = "rust-crypto")]
impl RsaKey for RustKey {
    const BACKEND: KeyBackend = KeyBackend::RustCrypto;

    fn generate(size: KeySize) -> Result<Self> {
        rsa::PrivateKey::new(&mut getrandom::SysRng, size.bits())
            .map(|k| Self(Box::new(k)))
            .map_err(|_| Error::new(ErrorKind::Crypto, "rsa key generation failed"))
    }

    fn from_pkcs1_der(der: &[u8], _bits: usize) -> Result<Self> {
        rsa::PrivateKey::from_pkcs1_der(der)
            .map(|k| Self(Box::new(k)))
            .map_err(|_| Error::new(ErrorKind::MalformedKey, "rsa private key is invalid"))
    }

    fn public_pkcs1_der(&self) -> Result<Vec<u8>> {
        self.0
            .to_public_key()
            .to_pkcs1_der()
            .map(|doc| doc.as_bytes().to_vec())
            .map_err(|_| Error::new(ErrorKind::Crypto, "cannot encode the public key"))
    }

    fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        self.0
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &sha256(msg))
            .map_err(|_| Error::new(ErrorKind::Crypto, "rsa signing failed"))
    }

    fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = self
            .0
            .to_pkcs8_der()
            .map_err(|_| Error::new(ErrorKind::Crypto, "cannot encode the private key"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    fn verify(public: &RsaPublicParts, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(key) = rsa::PublicKey::from_pkcs1_der(&public.to_pkcs1()) else {
            return false;
        };
        key.verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha256(msg),
            signature,
        )
        .is_ok()
    }
}
