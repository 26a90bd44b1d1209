//! The aws-lc-rs backend (feature `aws-lc-rs`, the default): keys of 2048 to 8192
//! bits.

use aws_lc_rs::encoding::AsDer as _;
use zeroize::Zeroizing;

use super::der::RsaPublicParts;
use super::{KeyBackend, KeySize, RsaKey};
use crate::error::{Error, ErrorKind, Result};

/// Smallest private key aws-lc-rs signs with.
pub(super) const MIN_BITS: usize = 2048;

/// An aws-lc-rs RSA key pair (AWS-LC wipes it with `OPENSSL_cleanse` when freed).
pub(super) struct AwsKey(aws_lc_rs::rsa::KeyPair);

impl RsaKey for AwsKey {
    const BACKEND: KeyBackend = KeyBackend::AwsLcRs;

    fn generate(size: KeySize) -> Result<Self> {
        use aws_lc_rs::rsa::KeySize as AwsSize;
        let aws_size = match size {
            KeySize::Rsa2048 => AwsSize::Rsa2048,
            KeySize::Rsa3072 => AwsSize::Rsa3072,
            KeySize::Rsa4096 => AwsSize::Rsa4096,
        };
        aws_lc_rs::rsa::KeyPair::generate(aws_size)
            .map(Self)
            .map_err(|_| Error::new(ErrorKind::Crypto, "rsa key generation failed"))
    }

    fn from_pkcs1_der(der: &[u8], bits: usize) -> Result<Self> {
        if bits < MIN_BITS {
            return Err(Error::new(
                ErrorKind::UnsupportedKey,
                format!(
                    "rsa key of {bits} bits is below the 2048 bits that oci requires and \
                     aws-lc-rs signs with; only the rust-crypto backend (feature \
                     `rust-crypto`) signs with smaller keys"
                ),
            ));
        }
        aws_lc_rs::rsa::KeyPair::from_der(der)
            .map(Self)
            .map_err(|_| Error::new(ErrorKind::MalformedKey, "rsa private key is invalid"))
    }

    fn public_pkcs1_der(&self) -> Result<Vec<u8>> {
        Ok(aws_lc_rs::signature::KeyPair::public_key(&self.0)
            .as_ref()
            .to_vec())
    }

    fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.0.public_modulus_len()];
        self.0
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .map_err(|_| Error::new(ErrorKind::Crypto, "rsa signing failed"))?;
        Ok(sig)
    }

    fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let der = self
            .0
            .as_der()
            .map_err(|_| Error::new(ErrorKind::Crypto, "cannot encode the private key"))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    fn verify(public: &RsaPublicParts, msg: &[u8], signature: &[u8]) -> bool {
        aws_lc_rs::signature::RsaPublicKeyComponents {
            n: &public.n,
            e: &public.e,
        }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            msg,
            signature,
        )
        .is_ok()
    }
}

/// SHA-256 of `data`.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}
