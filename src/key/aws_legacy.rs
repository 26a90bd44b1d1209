//! RSA keys below 2048 bits with the aws-lc backend.
//!
//! aws-lc-rs refuses private keys under 2048 bits. OCI API keys are at least 2048
//! bits, but Oracle's documented signing example (and its test vectors) uses a
//! 1024-bit key, so parsing an API key must accept it. This module signs with such a
//! key through four AWS-LC C functions. Session keys never come here: they are
//! generated at 2048 bits or more.
#![allow(unsafe_code)]

use std::os::raw::c_uint;
use std::ptr::NonNull;

use aws_lc_sys::{NID_sha256, RSA, RSA_free, RSA_private_key_from_bytes, RSA_sign, RSA_size};

/// An AWS-LC `RSA` private key object, owned.
pub(super) struct LegacyRsaKey(NonNull<RSA>);

// SAFETY: AWS-LC `RSA` objects may be used for private-key operations from several
// threads at once (their lazily built Montgomery and blinding state is locked
// internally), and ownership may move between threads.
unsafe impl Send for LegacyRsaKey {}
// SAFETY: see `Send`; `sign_sha256` only performs thread-safe private-key operations.
unsafe impl Sync for LegacyRsaKey {}

impl LegacyRsaKey {
    /// Parses a DER `RSAPrivateKey`. `None` if AWS-LC rejects it.
    pub(super) fn from_pkcs1_der(der: &[u8]) -> Option<Self> {
        // SAFETY: `der` is a valid slice for the duration of the call; AWS-LC copies
        // what it needs and returns either null or a new object that we own.
        let ptr = unsafe { RSA_private_key_from_bytes(der.as_ptr(), der.len()) };
        NonNull::new(ptr).map(Self)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    pub(super) fn sign_sha256(&self, msg: &[u8]) -> Option<Vec<u8>> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let digest = digest.as_ref();
        // SAFETY: `self.0` is a live RSA object owned by `self`.
        let size = unsafe { RSA_size(self.0.as_ptr()) } as usize;
        let mut out = vec![0u8; size];
        let mut out_len: c_uint = 0;
        // SAFETY: `digest` is valid for `digest.len()` bytes; `out` has room for
        // `RSA_size` bytes, the most RSA_sign writes; `out_len` is a valid pointer.
        let ok = unsafe {
            RSA_sign(
                NID_sha256,
                digest.as_ptr(),
                digest.len(),
                out.as_mut_ptr(),
                &raw mut out_len,
                self.0.as_ptr(),
            )
        };
        if ok != 1 {
            return None;
        }
        out.truncate(out_len as usize);
        Some(out)
    }
}

impl Drop for LegacyRsaKey {
    fn drop(&mut self) {
        // SAFETY: we own the object and drop it once; RSA_free wipes the private key.
        unsafe { RSA_free(self.0.as_ptr()) }
    }
}
