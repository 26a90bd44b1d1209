//! Positive validations remembered for a short while, shared by [`BearerAuth`]
//! (the domain's JWTs) and the OAuth proxy (its own tokens).
//!
//! [`BearerAuth`]: crate::BearerAuth

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::AccessToken;

/// moka's lifetime of an entry is at most this (the entries' own limit, by the
/// caller's clock, is kept beside them).
const MAX_ENTRY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most validations remembered at once.
const CAPACITY: u64 = 10_000;

/// The positive validations this process remembers for a short while, so that a
/// warm tool call repeats no signature check, parse or store read.
///
/// Keyed by the SHA-256 of the whole bearer token: an entry answers only for the
/// exact token that was validated, never for another user's (nor another token of
/// the same user's). An entry lives until the `until` its maker gives (never past
/// the TTL, by the caller's clock) and counts only in the epoch it was made in:
/// [`Validations::clear`] bumps the epoch, which drops every entry at once, even
/// one made by a validation that was racing the clear.
pub(crate) struct Validations {
    ttl: Duration,
    epoch: AtomicU64,
    entries: Option<moka::future::Cache<[u8; 32], Arc<Validated>>>,
}

/// One remembered validation.
struct Validated {
    epoch: u64,
    until: SystemTime,
    token: AccessToken,
}

impl Validations {
    /// Remembers validations for at most `ttl` (zero: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                // Memory only: an entry's validity is `until`, by the caller's clock
                // (moka refuses lifetimes of centuries).
                .time_to_live(ttl.min(MAX_ENTRY_TTL))
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

    /// Forgets every remembered validation.
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
    pub(crate) async fn get(&self, token: &str, now: SystemTime) -> Option<AccessToken> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(&Self::key(token)).await?;
        (entry.epoch == self.epoch() && now < entry.until).then(|| entry.token.clone())
    }

    /// Remembers `access` as the validation of `token` until `until` (made in
    /// `epoch`).
    pub(crate) async fn insert(
        &self,
        token: &str,
        epoch: u64,
        until: SystemTime,
        access: &AccessToken,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        let entry = Validated {
            epoch,
            until,
            token: access.clone(),
        };
        entries.insert(Self::key(token), Arc::new(entry)).await;
    }
}

impl std::fmt::Debug for Validations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validations")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
