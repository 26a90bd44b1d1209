//! Fernet tokens (encryption at rest), spec-exact, on aws-lc-rs primitives.
//!
//! A token is the url-safe base64 (padded) of
//! `0x80 || timestamp (u64 big-endian seconds) || IV (16) || AES-128-CBC-PKCS#7
//! ciphertext || HMAC-SHA256 (32)`, the HMAC covering everything before it. A key is
//! the url-safe base64 of 32 bytes: the signing half, then the encryption half
//! (<https://github.com/fernet/spec>). Tokens and keys are interchangeable with
//! Python's `cryptography.fernet` (`Fernet`, `MultiFernet`, `Fernet.generate_key()`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::cipher::{
    AES_128, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::{hmac, rand};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE};
use zeroize::Zeroizing;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretString;

/// The only version byte the spec defines.
const VERSION: u8 = 0x80;
/// Half a key: the signing key, or the encryption key.
const HALF_KEY_LEN: usize = 16;
/// The AES block, which is also the IV's length.
const BLOCK_LEN: usize = 16;
/// Python's `cryptography.fernet._MAX_CLOCK_SKEW`: with a ttl, a token dated more
/// than this after now is refused.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Keys: url-safe alphabet, `=` padding optional, no stray trailing bits.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A Fernet key: 16 bytes that sign, then 16 bytes that encrypt.
///
/// Its text form is `Fernet.generate_key()`'s: the padded url-safe base64 of the 32
/// bytes, so an operator's existing `STORAGE_ENCRYPTION_KEY` works. `Debug` prints
/// `[redacted]`; the bytes are zeroized on drop; the text is reachable only through
/// [`FernetKey::to_base64`].
#[derive(Clone)]
pub struct FernetKey {
    signing: Zeroizing<[u8; HALF_KEY_LEN]>,
    encryption: Zeroizing<[u8; HALF_KEY_LEN]>,
}

impl FernetKey {
    /// A new random key, like Python's `Fernet.generate_key()`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Crypto`] if the system's random generator fails.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 2 * HALF_KEY_LEN]);
        rand::fill(bytes.as_mut_slice())
            .map_err(|_| Error::new(ErrorKind::Crypto, "the random generator failed"))?;
        Self::from_bytes(bytes.as_slice()).ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                "a generated fernet key has the wrong size",
            )
        })
    }

    /// Reads a key in `Fernet.generate_key()`'s format: the url-safe base64 of 32
    /// bytes. Surrounding whitespace is ignored and the `=` padding is optional; like
    /// Python, the standard alphabet's `+` and `/` are read as `-` and `_`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] if the text is not the base64 of exactly 32 bytes
    /// (the message never contains the text).
    pub fn parse(text: &str) -> Result<Self> {
        let normalized: Zeroizing<String> = Zeroizing::new(
            text.trim()
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect(),
        );
        let bad = || {
            Error::new(
                ErrorKind::InvalidConfig,
                "a fernet key must be the url-safe base64 of 32 bytes (as made by Fernet.generate_key())",
            )
        };
        let bytes = Zeroizing::new(
            KEY_BASE64
                .decode(normalized.as_bytes())
                .map_err(|_| bad())?,
        );
        Self::from_bytes(&bytes).ok_or_else(bad)
    }

    /// The key in Python's format: the padded url-safe base64 of its 32 bytes.
    #[must_use]
    pub fn to_base64(&self) -> SecretString {
        let bytes = Zeroizing::new([*self.signing, *self.encryption].concat());
        SecretString::new(URL_SAFE.encode(bytes.as_slice()))
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (signing, encryption) = bytes.split_first_chunk::<HALF_KEY_LEN>()?;
        let encryption: &[u8; HALF_KEY_LEN] = encryption.try_into().ok()?;
        Some(Self {
            signing: Zeroizing::new(*signing),
            encryption: Zeroizing::new(*encryption),
        })
    }
}

impl fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FernetKey([redacted])")
    }
}

/// One key, ready to use: its HMAC key is set up once.
#[derive(Clone)]
struct Keyed {
    signing: hmac::Key,
    key: FernetKey,
}

impl Keyed {
    fn new(key: FernetKey) -> Self {
        Self {
            signing: hmac::Key::new(hmac::HMAC_SHA256, key.signing.as_slice()),
            key,
        }
    }
}

/// Fernet encryption with one or more keys (Python's `Fernet` and `MultiFernet`).
///
/// Encrypts with the first key; decrypts a token made with any of them, so keys
/// rotate by putting the new key first and keeping the old ones until their tokens
/// are gone. The time written into tokens and checked against a ttl comes from a
/// [`Clock`] ([`SystemClock`] unless [`Fernet::with_clock`] says otherwise).
///
/// Decryption follows the spec: version `0x80`, the HMAC-SHA256 checked in constant
/// time before anything is decrypted, then (only when a ttl is given, as in Python)
/// the timestamp against the ttl and against a clock skew of 60 s. Every refusal is
/// [`ErrorKind::Decrypt`]; no message contains a token or a key. Base64 is read
/// strictly (canonical, padded url-safe: what every implementation writes), so a
/// few malformed tokens that Python's lenient decoder reads, such as trailing
/// characters after the padding, are refused, as the spec's vectors ask.
///
/// ```
/// use oci_token_exchange::{Fernet, FernetKey};
///
/// let old = FernetKey::generate()?;
/// let token = Fernet::new(old.clone()).encrypt(b"session state")?;
///
/// // Rotation: the new key first, the old one still read.
/// let new = FernetKey::generate()?;
/// let value = format!(
///     "{},{}",
///     new.to_base64().expose_secret(),
///     old.to_base64().expose_secret()
/// );
/// let fernet = Fernet::from_env_value(&value)?;
/// assert_eq!(fernet.decrypt(&token, None)?, b"session state");
/// # Ok::<(), oci_token_exchange::Error>(())
/// ```
#[derive(Clone)]
pub struct Fernet {
    /// Never empty; the first key encrypts.
    keys: Vec<Keyed>,
    clock: Arc<dyn Clock>,
}

impl Fernet {
    /// Encryption and decryption with one key.
    #[must_use]
    pub fn new(key: FernetKey) -> Self {
        Self {
            keys: vec![Keyed::new(key)],
            clock: Arc::new(SystemClock),
        }
    }

    /// Encryption with the first key, decryption with any (Python's `MultiFernet`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] if `keys` is empty.
    pub fn with_keys(keys: Vec<FernetKey>) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "fernet needs at least one key",
            ));
        }
        Ok(Self {
            keys: keys.into_iter().map(Keyed::new).collect(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Keys from a configuration value such as `STORAGE_ENCRYPTION_KEY`: one key, or
    /// several separated by commas (whitespace around each ignored); the first
    /// encrypts, all decrypt.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] if the value holds no key, an empty entry, or an
    /// entry that is not a key (the message gives its position, never its text).
    pub fn from_env_value(value: &str) -> Result<Self> {
        if value.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "no fernet key given (expected one or more comma-separated keys)",
            ));
        }
        let entries: Vec<&str> = value.split(',').collect();
        let count = entries.len();
        let keys = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                FernetKey::parse(entry).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "fernet key {} of {count} is not the url-safe base64 of 32 bytes (as made by Fernet.generate_key())",
                            i + 1
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::with_keys(keys)
    }

    /// Uses `clock` for the time written into tokens and for ttl checks.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Encrypts `plaintext` with the first key, dated now, with a random IV.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Crypto`] if the random generator or the cipher fails.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        let mut iv = [0u8; BLOCK_LEN];
        rand::fill(&mut iv)
            .map_err(|_| Error::new(ErrorKind::Crypto, "the random generator failed"))?;
        self.encrypt_at(plaintext, unix_seconds(self.clock.now()), iv)
    }

    /// Encrypts with a given timestamp and IV; deterministic, for the spec's vectors.
    /// Never reuse an IV: [`Fernet::encrypt`] draws a random one.
    pub(crate) fn encrypt_at(
        &self,
        plaintext: &[u8],
        timestamp: u64,
        iv: [u8; BLOCK_LEN],
    ) -> Result<String> {
        let crypto = |_| Error::new(ErrorKind::Crypto, "fernet encryption failed");
        let first = self
            .keys
            .first()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "fernet has no key"))?;
        let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(&AES_128, first.key.encryption.as_slice()).map_err(crypto)?,
        )
        .map_err(crypto)?;
        // Room for the padding, so the plaintext is never left behind by a reallocation.
        let padded_len = (plaintext.len() / BLOCK_LEN + 1) * BLOCK_LEN;
        let mut buffer = Zeroizing::new(Vec::with_capacity(padded_len));
        buffer.extend_from_slice(plaintext);
        cipher
            .less_safe_encrypt(
                &mut *buffer,
                EncryptionContext::Iv128(FixedLength::from(iv)),
            )
            .map_err(crypto)?;

        let mut token = Vec::with_capacity(1 + 8 + BLOCK_LEN + buffer.len() + 32);
        token.push(VERSION);
        token.extend_from_slice(&timestamp.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&buffer);
        let tag = hmac::sign(&first.signing, &token);
        token.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE.encode(token))
    }

    /// Decrypts a token made with any of the keys.
    ///
    /// With `ttl`, the token is refused when it is older than `ttl` or dated more than
    /// 60 s in the future; without, its age is not checked (Python's
    /// `Fernet.decrypt(token, ttl=None)`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decrypt`] for every refusal: not a Fernet token (base64, version,
    /// length), no key whose HMAC matches (wrong key or tampered), expired, dated in
    /// the future, or bad padding.
    pub fn decrypt(&self, token: &str, ttl: Option<Duration>) -> Result<Vec<u8>> {
        let malformed = || {
            Error::new(
                ErrorKind::Decrypt,
                "not a fernet token (bad base64, version or length)",
            )
        };
        let data = URL_SAFE.decode(token).map_err(|_| malformed())?;
        let (signed, tag) = data.split_last_chunk::<32>().ok_or_else(malformed)?;
        let (version, rest) = signed.split_first().ok_or_else(malformed)?;
        let (timestamp, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        let (iv, ciphertext) = rest
            .split_first_chunk::<BLOCK_LEN>()
            .ok_or_else(malformed)?;
        if *version != VERSION || ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
            return Err(malformed());
        }

        let key = self
            .keys
            .iter()
            .find(|k| hmac::verify(&k.signing, signed, tag).is_ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Decrypt,
                    "fernet token does not verify with any key (wrong key or tampered)",
                )
            })?;

        if let Some(ttl) = ttl {
            let timestamp = u64::from_be_bytes(*timestamp);
            let now = unix_seconds(self.clock.now());
            // Python: `timestamp + ttl < current_time` is expired.
            let expired = Duration::from_secs(timestamp)
                .checked_add(ttl)
                .is_some_and(|end| end < Duration::from_secs(now));
            if expired {
                return Err(Error::new(ErrorKind::Decrypt, "fernet token has expired"));
            }
            // Python: `current_time + _MAX_CLOCK_SKEW < timestamp` is too far ahead.
            if now.saturating_add(MAX_CLOCK_SKEW.as_secs()) < timestamp {
                return Err(Error::new(
                    ErrorKind::Decrypt,
                    "fernet token is dated more than 60 s in the future",
                ));
            }
        }

        let undecryptable = |_| Error::new(ErrorKind::Decrypt, "fernet token does not decrypt");
        let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(&AES_128, key.key.encryption.as_slice())
                .map_err(undecryptable)?,
        )
        .map_err(undecryptable)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = cipher
            .decrypt(
                buffer.as_mut_slice(),
                DecryptionContext::Iv128(FixedLength::from(*iv)),
            )
            .map_err(undecryptable)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(std::mem::take(&mut *buffer))
    }
}

impl fmt::Debug for Fernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fernet")
            .field("keys", &self.keys.len())
            .field("clock", &self.clock)
            .finish()
    }
}

/// Whole seconds since the Unix epoch, as Python's `int(time.time())`; 0 before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Generate {
        token: String,
        now: String,
        iv: [u8; BLOCK_LEN],
        src: String,
        secret: String,
    }

    fn unix(rfc3339: &str) -> u64 {
        let time = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
        u64::try_from(time.timestamp()).unwrap()
    }

    /// The spec's `generate.json`: a fixed time and IV give the published token.
    #[test]
    fn spec_generate_vectors_give_the_exact_token() {
        let cases: Vec<Generate> =
            serde_json::from_str(include_str!("../fixtures/fernet/generate.json")).unwrap();
        assert!(!cases.is_empty(), "no generate vector ran");
        for case in &cases {
            let fernet = Fernet::new(FernetKey::parse(&case.secret).unwrap());
            let token = fernet
                .encrypt_at(case.src.as_bytes(), unix(&case.now), case.iv)
                .unwrap();
            assert_eq!(token, case.token);
        }
    }

    #[test]
    fn the_first_key_encrypts() {
        let a = FernetKey::generate().unwrap();
        let b = FernetKey::generate().unwrap();
        let ab = Fernet::with_keys(vec![a.clone(), b.clone()]).unwrap();
        let token = ab.encrypt_at(b"x", 1, [7; BLOCK_LEN]).unwrap();
        let made_with_a = Fernet::new(a).encrypt_at(b"x", 1, [7; BLOCK_LEN]).unwrap();
        assert_eq!(token, made_with_a);
        assert!(Fernet::new(b).decrypt(&token, None).is_err());
    }

    #[test]
    fn before_the_epoch_is_zero() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(unix_seconds(before), 0);
        assert_eq!(
            unix_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(1999)),
            1
        );
    }
}
