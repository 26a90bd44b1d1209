//! What the proxy keeps in its [`Store`]: one record type per collection, JSON on
//! the wire, and the typed reads and writes.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::store::Store;

/// Collections (namespaces) of the store.
pub(super) const CLIENTS: &str = "client";
pub(super) const TRANSACTIONS: &str = "txn";
pub(super) const CODES: &str = "code";
/// Redeemed codes (SHA-256) -> their token set, to revoke it if a code comes back.
pub(super) const USED_CODES: &str = "used";
pub(super) const SETS: &str = "set";
pub(super) const JTIS: &str = "jti";
pub(super) const REFRESH: &str = "refresh";
/// Spent refresh tokens (SHA-256) -> their token set, to revoke it if one comes
/// back (OAuth 2.1 section 4.3.1).
pub(super) const USED_REFRESH: &str = "used_refresh";
/// Tombstones of ended token sets, so a refresh in flight does not recreate one.
pub(super) const REVOKED: &str = "revoked";

/// A registered client (RFC 7591), for [`CLIENT_LIFETIME`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Client {
    pub(super) client_id: String,
    pub(super) client_name: Option<String>,
    pub(super) redirect_uris: Vec<String>,
    pub(super) issued_at: u64,
    /// Registered with the `refresh_token` grant (as registrations without
    /// `grant_types` are): only such a client is given refresh tokens. Records
    /// stored before this field existed had it; so does a record an older replica
    /// re-saves (it drops the field) during a rolling upgrade: upgrade every
    /// replica before relying on it.
    #[serde(default = "registered_for_refresh")]
    pub(super) refresh: bool,
}

fn registered_for_refresh() -> bool {
    true
}

/// How long a registered client is kept once it has redeemed a code: 30 days
/// from its latest grant (a code or a refresh).
pub(super) const CLIENT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a registered client is kept until it redeems a code: an hour, so
/// that unauthenticated registrations nobody logs in with do not pile up.
pub(super) const REGISTRATION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a login may take, from /authorize to the callback.
pub(super) const TRANSACTION_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long the proxy's own codes are valid.
pub(super) const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A login in progress: the client's request and the proxy's own secrets for it.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Transaction {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: String,
    pub(super) scopes: Vec<String>,
    pub(super) resource: String,
    /// The proxy's PKCE verifier for the upstream leg.
    pub(super) verifier: String,
    /// The consent form's CSRF token (stable for the transaction).
    pub(super) csrf: String,
    /// The browser-binding nonce the consent cookie is a MAC of.
    pub(super) nonce: String,
    /// Consent given (or consent is off).
    pub(super) approved: bool,
    /// When the transaction expires (Unix seconds).
    pub(super) expires_at: u64,
}

/// The proxy's authorization code (stored under the SHA-256 of the code).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct CodeGrant {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) scopes: Vec<String>,
    pub(super) resource: String,
    pub(super) set_id: String,
    /// Unix seconds after which the code is refused, kept when the code is given
    /// back after a failed redemption (0 in records stored before it existed:
    /// [`CODE_LIFETIME`] from their first redemption).
    #[serde(default)]
    pub(super) expires_at: u64,
}

/// The upstream token set of one login.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct TokenSet {
    pub(super) access_token: String,
    pub(super) access_expires_at: u64,
    pub(super) refresh_token: Option<String>,
    pub(super) refresh_expires_at: Option<u64>,
    pub(super) subject: Option<String>,
    pub(super) client_id: String,
}

impl TokenSet {
    /// When the longest-lived token of the set expires.
    pub(super) fn expires_at(&self) -> u64 {
        self.access_expires_at
            .max(self.refresh_expires_at.unwrap_or(0))
    }
}

/// One of the proxy's access tokens, by `jti`: gone once revoked.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct JtiRecord {
    pub(super) set_id: String,
    pub(super) client_id: String,
}

/// One of the proxy's refresh tokens (stored under the SHA-256 of the token).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct RefreshRecord {
    pub(super) set_id: String,
    pub(super) client_id: String,
    pub(super) scopes: Vec<String>,
    pub(super) resource: String,
    pub(super) expires_at: u64,
}

pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time from `now` to `at` (Unix seconds), zero when past.
pub(super) fn until(now: SystemTime, at: u64) -> Duration {
    Duration::from_secs(at.saturating_sub(unix(now)))
}

/// Typed reads and writes.
pub(super) async fn get<T: DeserializeOwned>(
    store: &dyn Store,
    collection: &str,
    key: &str,
) -> Result<Option<T>> {
    store
        .get(collection, key)
        .await?
        .map(|bytes| decode(&bytes))
        .transpose()
}

pub(super) async fn take<T: DeserializeOwned>(
    store: &dyn Store,
    collection: &str,
    key: &str,
) -> Result<Option<T>> {
    store
        .take(collection, key)
        .await?
        .map(|bytes| decode(&bytes))
        .transpose()
}

pub(super) async fn put<T: Serialize>(
    store: &dyn Store,
    collection: &str,
    key: &str,
    value: &T,
    ttl: Duration,
) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|_| Error::new(ErrorKind::Internal, "cannot encode a proxy record"))?;
    store.put(collection, key, bytes, ttl).await
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|_| Error::new(ErrorKind::Storage, "a stored proxy record does not parse"))
}
