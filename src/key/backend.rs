//! Which library performs RSA operations, and the sizes of generated keys.

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
