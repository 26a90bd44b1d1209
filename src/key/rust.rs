//! The RustCrypto backend (feature `rust-crypto`): the pure-Rust `rsa` 0.10 crate,
//! keys of 1024 to 8192 bits.

use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _, EncodeRsaPublicKey as _};
use rsa::pkcs8::EncodePrivateKey as _;
use zeroize::Zeroizing;

use super::der::RsaPublicParts;
use super::{KeyBackend, KeySize, RsaKey, sha256};
use crate::error::{Error, ErrorKind, Result};

/// An `rsa` private key (zeroized on drop by the crate).
pub(super) struct RustKey(Box<rsa::PrivateKey>);

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
