//! Positive validations remembered for a short while, shared by [`BearerAuth`]
//! (the domain's JWTs) and the OAuth proxy (its own tokens).
//!
//! [`BearerAuth`]: crate::BearerAuth

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// moka keeps an entry at most this long (moka refuses lifetimes of centuries).
const MAX_ENTRY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most bytes the remembered validations may weigh, by [`weight`]: about 10 000
/// entries for 1 KiB tokens.
const CAPACITY_BYTES: u64 = 32 << 20;

/// What an entry for `token` is counted as: the token's copy, its parsed claims
/// (about twice the token's size in `serde_json` values) and the entry itself.
fn weight(token: &str) -> u32 {
    u32::try_from(token.len().saturating_mul(3).saturating_add(512)).unwrap_or(u32::MAX)
}

/// The positive validations this process remembers for a short while, so that a
/// warm tool call repeats no signature check, parse or store read.
///
/// Keyed by the SHA-256 of the whole bearer token: an entry answers only for the
/// exact token that was validated, never for another user's (nor another token of
/// the same user's). An entry lives from the moment it was made (a clock that steps
/// back before it finds nothing) until the `until` its maker gives, never past the
/// TTL, by the caller's clock; and it counts only in the epoch it was made in:
/// [`Validations::clear`] bumps the epoch, which drops every entry at once, even
/// one made by a validation that was racing the clear. Bounded in bytes
/// ([`CAPACITY_BYTES`]).
pub(crate) struct Validations<T> {
    ttl: Duration,
    epoch: AtomicU64,
    entries: Option<moka::future::Cache<[u8; 32], Arc<Validated<T>>>>,
}

/// One remembered validation.
struct Validated<T> {
    epoch: u64,
    made: SystemTime,
    until: SystemTime,
    /// How long moka keeps it: from `made` to `until`, at most the TTL.
    lifetime: Duration,
    weight: u32,
    value: T,
}

/// moka drops an entry when it stops answering (its `lifetime`), not a whole TTL
/// later: a token's entry leaves memory with the token.
struct UntilExpiry;

impl<T> moka::Expiry<[u8; 32], Arc<Validated<T>>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        entry: &Arc<Validated<T>>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.lifetime)
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        entry: &Arc<Validated<T>>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lifetime)
    }
}

impl<T: Clone + Send + Sync + 'static> Validations<T> {
    /// Remembers validations for at most `ttl` (zero: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CAPACITY_BYTES)
                .weigher(|_: &[u8; 32], entry: &Arc<Validated<T>>| entry.weight)
                .expire_after(UntilExpiry)
                .build()
        });
        Self {
            ttl,
            epoch: AtomicU64::new(0),
            entries,
        }
    }

    /// The longest an entry lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The epoch to make an entry in: read it before the checks that entry
    /// records, so a [`Validations::clear`] during them voids it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Forgets every remembered validation (the proxy, when a login ends).
    #[cfg(feature = "oauth-proxy")]
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    fn key(token: &str) -> [u8; 32] {
        crate::key::sha256(token.as_bytes())
    }

    /// The remembered validation of exactly `token`, if it is still good at `now`.
    pub(crate) async fn get(&self, token: &str, now: SystemTime) -> Option<T> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(&Self::key(token)).await?;
        (entry.epoch == self.epoch() && entry.made <= now && now < entry.until)
            .then(|| entry.value.clone())
    }

    /// Remembers `value` as the validation of `token`, made at `made` in `epoch`,
    /// good until `until`.
    pub(crate) async fn insert(
        &self,
        token: &str,
        epoch: u64,
        made: SystemTime,
        until: SystemTime,
        value: T,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let lifetime = until
            .duration_since(made)
            .unwrap_or(Duration::ZERO)
            .min(self.ttl)
            .min(MAX_ENTRY_TTL);
        let entry = Validated {
            epoch,
            made,
            until,
            lifetime,
            weight: weight(token),
            value,
        };
        entries.insert(Self::key(token), Arc::new(entry)).await;
    }
}

impl<T> std::fmt::Debug for Validations<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validations")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
