//! [`RedisStore`]: the [`Store`] on Redis 6.2+ or Valkey, one server or a Cluster.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, RedisFuture, Script, Value};

use super::limit::WarnLimit;
use super::{Store, StoreFuture};
use crate::error::{Error, ErrorKind, Result};

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on one whole store call, reconnection included: a dead Redis makes
/// calls fail in at most this long, it never hangs them.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection attempts per outage detection (then the next call tries again).
const RECONNECT_RETRIES: usize = 2;
/// The longest TTL sent to Redis (100 years); longer ones are cut to it.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Removes a key only if it holds the expected value: a lock's holder releasing it.
const DELETE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The default key prefix.
const DEFAULT_PREFIX: &str = "ocx:";

/// The [`Store`] on Redis (6.2 or later, for `GETDEL`) or Valkey: one server through a
/// reconnecting multiplexed connection ([`redis::aio::ConnectionManager`]), or a Redis
/// Cluster.
///
/// Keys are `{prefix}{collection}:{key}` (prefix `ocx:` unless
/// [`RedisStore::with_prefix`] says otherwise); every command touches one key, so it
/// works on a Cluster, and nothing scans the key space. `get` is `GET`, `put` is
/// `SET .. PX`, `take` is `GETDEL`, `delete` is `DEL`, `put_if_absent` is
/// `SET .. NX PX`, `delete_if_equal` a Lua script (`EVALSHA`).
///
/// Values are stored as given: wrap the store in an
/// [`EncryptedStore`](crate::EncryptedStore) so no secret reaches Redis in plaintext
/// (the [`OAuthProxy`](crate::OAuthProxy) refuses a plain one).
///
/// Failures are [`ErrorKind::Storage`] (retryable) and never hang: connecting and
/// each answer have 2 s timeouts, a whole call 5 s. The connection comes back by
/// itself when Redis does; an outage is logged once when it starts and once when
/// it ends (`tracing`, target `oci_token_exchange::store::redis`).
///
/// Cheap to clone (clones share the connection). `Debug` shows the server without
/// its password.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    delete_if_equal: Arc<Script>,
    state: Arc<State>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// What `Debug` shows and the outage log state.
struct State {
    /// The servers, without passwords.
    servers: Vec<String>,
    /// Whether the last call failed for want of Redis (an outage is logged once).
    down: AtomicBool,
    /// Rate limit of the warnings for errors Redis answers.
    answered: WarnLimit,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.conn {
                    Conn::Single(_) => "single",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("servers", &self.state.servers)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `url` without its password (and without anything that does not parse).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Cannot fail: a url with a password has a host.
                let _ = u.set_password(Some("redacted"));
            }
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "[unparsable url]".to_owned(),
    }
}

fn invalid_url() -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        "the redis url is not valid (expected redis://[user:password@]host[:port][/db] or rediss://...)",
    )
}

/// A Redis error as [`ErrorKind::Storage`]: what failed and why, never a key, a
/// value or the URL.
fn storage_error(op: &'static str, e: &RedisError) -> Error {
    let why = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".to_owned()
    } else if let Some(code) = e.code() {
        // The server's error code (e.g. WRONGTYPE, NOSCRIPT, READONLY); its detail text
        // is left out.
        format!("redis answered {code}")
    } else {
        e.category().to_owned()
    };
    Error::new(ErrorKind::Storage, format!("redis {op} failed: {why}"))
}

/// Whether `e` means Redis could not be reached (rather than answered an error).
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisStore {
    /// Connects to one Redis server: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (rustls, the system's root certificates). Returns once
    /// connected; afterwards the connection is re-established automatically.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a URL that does not parse;
    /// [`ErrorKind::Storage`] when Redis cannot be reached or refuses the login
    /// (within 2 s per attempt). No message contains the URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|_| invalid_url())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let manager = tokio::time::timeout(
            CALL_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| Error::new(ErrorKind::Storage, "redis connect failed: timed out"))?
        .map_err(|e| storage_error("connect", &e))?;
        Ok(Self::new(Conn::Single(manager), vec![redact(url)]))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://` or
    /// `rediss://` URLs, user and password from the first). Commands are routed to
    /// the node owning each key's slot; topology changes are followed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for no URL or one that does not parse;
    /// [`ErrorKind::Storage`] when no node can be reached.
    pub async fn connect_cluster(urls: &[&str]) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "a redis cluster needs at least one node url",
            ));
        }
        for url in urls {
            redis::Client::open(*url).map_err(|_| invalid_url())?;
        }
        let client = ClusterClientBuilder::new(urls.iter().copied())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(|_| invalid_url())?;
        let conn = tokio::time::timeout(CALL_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| Error::new(ErrorKind::Storage, "redis connect failed: timed out"))?
            .map_err(|e| storage_error("connect", &e))?;
        Ok(Self::new(
            Conn::Cluster(conn),
            urls.iter().map(|u| redact(u)).collect(),
        ))
    }

    fn new(conn: Conn, servers: Vec<String>) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
            delete_if_equal: Arc::new(Script::new(DELETE_IF_EQUAL)),
            state: Arc::new(State {
                servers,
                down: AtomicBool::new(false),
                answered: WarnLimit::default(),
            }),
        }
    }

    /// Sets the key prefix (default `ocx:`): keys are `{prefix}{collection}:{key}`.
    /// Give each application sharing a Redis its own.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    fn key(&self, collection: &str, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + collection.len() + 1 + key.len());
        k.push_str(&self.prefix);
        k.push_str(collection);
        k.push(':');
        k.push_str(key);
        k
    }

    /// Runs `cmd`, bounded in time, and keeps the outage log.
    async fn run<T: FromRedisValue>(&self, op: &'static str, cmd: Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        let done = tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        self.settle(op, done)
    }

    /// Runs the compare-and-delete script, bounded in time.
    async fn run_delete_if_equal(&self, key: String, expected: Vec<u8>) -> Result<bool> {
        let mut conn = self.conn.clone();
        let mut invocation = self.delete_if_equal.key(key);
        invocation.arg(expected);
        let done =
            tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        self.settle("delete_if_equal", done).map(|n| n > 0)
    }

    fn settle<T>(
        &self,
        op: &'static str,
        done: std::result::Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T> {
        match done {
            Ok(Ok(v)) => {
                if self.state.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(servers = ?self.state.servers, "redis store reachable again");
                }
                Ok(v)
            }
            Ok(Err(e)) if is_unreachable(&e) => {
                let err = storage_error(op, &e);
                self.outage(&err);
                Err(err)
            }
            Ok(Err(e)) => {
                let err = storage_error(op, &e);
                if self.state.answered.allow() {
                    tracing::warn!(error = %err, "redis store answered an error");
                }
                Err(err)
            }
            Err(_) => {
                let err = Error::new(ErrorKind::Storage, format!("redis {op} failed: timed out"));
                self.outage(&err);
                Err(err)
            }
        }
    }

    fn outage(&self, err: &Error) {
        if !self.state.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                servers = ?self.state.servers,
                error = %err,
                "redis store unreachable; reconnecting in the background"
            );
        }
    }
}

/// `ttl` in whole milliseconds for `PX`: at least 1, at most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MS)
        .clamp(1, MAX_TTL_MS)
}

impl Store for RedisStore {
    fn get(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(collection, key));
        Box::pin(self.run("get", cmd))
    }

    fn put(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, ()> {
        let key = self.key(collection, key);
        if ttl.is_zero() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            return Box::pin(self.run("put", cmd));
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms(ttl));
        Box::pin(self.run("put", cmd))
    }

    fn take(&self, collection: &str, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(collection, key));
        Box::pin(self.run("take", cmd))
    }

    fn delete(&self, collection: &str, key: &str) -> StoreFuture<'_, ()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(collection, key));
        Box::pin(self.run("delete", cmd))
    }

    /// `SET .. NX PX`; a zero `ttl` stores for 1 ms.
    fn put_if_absent(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(collection, key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl));
        Box::pin(async move {
            // `OK` when set, nil when the key was there.
            let answer: Option<String> = self.run("put_if_absent", cmd).await?;
            Ok(answer.is_some())
        })
    }

    fn delete_if_equal(
        &self,
        collection: &str,
        key: &str,
        expected: &[u8],
    ) -> StoreFuture<'_, bool> {
        Box::pin(self.run_delete_if_equal(self.key(collection, key), expected.to_vec()))
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let shown = redact("redis://app:s3cret-pw@cache.internal:6380/2?protocol=resp3");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("cache.internal:6380/2"), "{shown}");
        assert_eq!(redact("not a url s3cret-pw"), "[unparsable url]");
        assert!(!invalid_url().to_string().contains("s3cret"));
    }

    #[test]
    fn ttls_are_whole_milliseconds_within_bounds() {
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[tokio::test]
    async fn a_bad_url_is_invalid_config_without_the_url() {
        let err = RedisStore::connect("http://user:s3cret-pw@host")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(!format!("{err} {err:?}").contains("s3cret-pw"));
        let err = RedisStore::connect_cluster(&[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
}
