//! `RedisStore` against a real `redis-server` the test starts on a free loopback port
//! (skipped with a printed reason when there is none, unless `OCX_REQUIRE_REDIS=1`).
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::store::{Act, Around, Call, Hooked};
use oci_token_exchange::{EncryptedStore, ErrorKind, Fernet, FernetKey, RedisStore, Store};

const TTL: Duration = Duration::from_secs(60);
/// The bound on any one store call in these tests (the store's own is 5 s).
const BOUND: Duration = Duration::from_secs(8);

/// A started server and a store on it; `None` (the test skips) without redis-server.
async fn setup() -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start()?;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    Some((server, store))
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("a store call must not hang")
}

#[tokio::test]
async fn get_put_delete_and_ttl() {
    let Some((_server, store)) = setup().await else {
        return;
    };
    assert_eq!(store.get("c", "k").await.unwrap(), None);
    store.put("c", "k", b"v1".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), Some(b"v1".to_vec()));
    assert_eq!(store.get("other", "k").await.unwrap(), None, "collections");
    store.put("c", "k", b"v2".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), Some(b"v2".to_vec()));
    store.delete("c", "k").await.unwrap();
    store.delete("c", "missing").await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), None);

    // Binary values round-trip.
    let bytes: Vec<u8> = (0..=255).collect();
    store.put("c", "bin", bytes.clone(), TTL).await.unwrap();
    assert_eq!(store.get("c", "bin").await.unwrap(), Some(bytes));

    // A zero TTL removes the key.
    store
        .put("c", "bin", b"x".to_vec(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.get("c", "bin").await.unwrap(), None);

    // TTLs are Redis's own (PX): gone after they pass.
    store
        .put("c", "short", b"v".to_vec(), Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(store.get("c", "short").await.unwrap(), Some(b"v".to_vec()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get("c", "short").await.unwrap(), None);
}

#[tokio::test]
async fn ttls_reach_redis_in_milliseconds() {
    let Some((server, store)) = setup().await else {
        return;
    };
    store
        .put("c", "k", b"v".to_vec(), Duration::from_secs(30))
        .await
        .unwrap();
    let mut conn = server.client().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg("ocx:c:k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((29_000..=30_000).contains(&pttl), "{pttl}");
    assert!(
        store
            .put_if_absent("c", "nx", b"v".to_vec(), Duration::from_secs(5))
            .await
            .unwrap()
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("ocx:c:nx")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((4_000..=5_000).contains(&pttl), "{pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn take_is_atomic_under_16_concurrent_takers() {
    let Some((_server, store)) = setup().await else {
        return;
    };
    let store = Arc::new(store);
    for round in 0..10 {
        let key = format!("code{round}");
        store.put("code", &key, b"x".to_vec(), TTL).await.unwrap();
        let takers: Vec<_> = (0..16)
            .map(|_| {
                let store = Arc::clone(&store);
                let key = key.clone();
                tokio::spawn(async move { store.take("code", &key).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for t in takers {
            if let Some(v) = bounded(t).await.unwrap() {
                assert_eq!(v, b"x");
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
        assert_eq!(store.get("code", &key).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_if_absent_has_one_winner_under_16_racers() {
    let Some((_server, store)) = setup().await else {
        return;
    };
    let store = Arc::new(store);
    for round in 0..10 {
        let key = format!("lock{round}");
        let racers: Vec<_> = (0..16_u8)
            .map(|i| {
                let store = Arc::clone(&store);
                let key = key.clone();
                tokio::spawn(async move {
                    let won = store
                        .put_if_absent("lock", &key, vec![i], TTL)
                        .await
                        .unwrap();
                    (i, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in racers {
            let (i, won) = bounded(r).await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            store.get("lock", &key).await.unwrap(),
            Some(vec![winners[0]]),
            "the winner's value is the one stored"
        );
    }
}

#[tokio::test]
async fn compare_and_delete_releases_only_the_holders_lock() {
    let Some((_server, store)) = setup().await else {
        return;
    };
    let ttl = Duration::from_millis(300);
    assert!(
        store
            .put_if_absent("lock", "k", b"a".to_vec(), ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("lock", "k", b"b".to_vec(), ttl)
            .await
            .unwrap()
    );
    assert!(!store.delete_if_equal("lock", "k", b"b").await.unwrap());
    assert!(!store.delete_if_equal("lock", "k", b"").await.unwrap());
    assert_eq!(store.get("lock", "k").await.unwrap(), Some(b"a".to_vec()));
    assert!(store.delete_if_equal("lock", "k", b"a").await.unwrap());
    assert!(!store.delete_if_equal("lock", "k", b"a").await.unwrap());
    assert!(!store.delete_if_equal("lock", "never", b"a").await.unwrap());
    // A holder that died: its lock expires and can be taken again.
    assert!(
        store
            .put_if_absent("lock", "k", b"c".to_vec(), ttl)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!store.delete_if_equal("lock", "k", b"c").await.unwrap());
    assert!(
        store
            .put_if_absent("lock", "k", b"d".to_vec(), ttl)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_script_survives_a_script_flush() {
    let Some((server, store)) = setup().await else {
        return;
    };
    store.put("lock", "k", b"a".to_vec(), TTL).await.unwrap();
    let mut conn = server.client().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    // EVALSHA answers NOSCRIPT; the store loads the script and retries.
    assert!(store.delete_if_equal("lock", "k", b"a").await.unwrap());
}

#[tokio::test]
async fn keys_are_prefix_collection_key() {
    let Some((server, store)) = setup().await else {
        return;
    };
    let other = store.clone().with_prefix("tenant2:");
    store.put("txn", "abc", b"1".to_vec(), TTL).await.unwrap();
    other.put("txn", "abc", b"2".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("txn", "abc").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(other.get("txn", "abc").await.unwrap(), Some(b"2".to_vec()));
    other.delete("txn", "abc").await.unwrap();
    assert_eq!(store.get("txn", "abc").await.unwrap(), Some(b"1".to_vec()));

    let keys: Vec<String> = server
        .dump()
        .await
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["ocx:txn:abc"]);
    let debug = format!("{store:?}");
    assert!(debug.contains("ocx:"), "{debug}");
}

#[tokio::test]
async fn errors_redis_answers_are_clear_storage_errors() {
    let Some((server, store)) = setup().await else {
        return;
    };
    // A key of the wrong type (a list where a string is expected).
    let mut conn = server.client().await;
    let _: i64 = redis::cmd("RPUSH")
        .arg("ocx:set:list")
        .arg("secret-value-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    for err in [
        store.get("set", "list").await.unwrap_err(),
        store.take("set", "list").await.unwrap_err(),
        store
            .delete_if_equal("set", "list", b"x")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(err.is_retryable());
        let text = format!("{err} {err:?}");
        assert!(text.contains("redis"), "{text}");
        assert!(!text.contains("secret-value-1"), "{text}");
        assert!(!text.contains("ocx:set:list"), "no key in errors: {text}");
    }
    let err = store.get("set", "list").await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // Put replaces whatever was there.
    store.put("set", "list", b"v".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("set", "list").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn a_wrong_password_or_no_server_fails_in_bounded_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut conn = server.client().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-pw")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let err = bounded(RedisStore::connect(&url)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(!format!("{err} {err:?}").contains("wrong-pw"), "{err:?}");

    let url = format!("redis://:right-pw@127.0.0.1:{}/3", server.port());
    let store = bounded(RedisStore::connect(&url)).await.unwrap();
    assert!(!format!("{store:?}").contains("right-pw"), "{store:?}");
    store.put("c", "k", b"v".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), Some(b"v".to_vec()));

    // Nothing listening.
    let port = server.port();
    drop(server);
    let err = bounded(RedisStore::connect(&format!("redis://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_request_then_restarted() {
    let Some((mut server, store)) = setup().await else {
        return;
    };
    store.put("c", "k", b"v".to_vec(), TTL).await.unwrap();

    // Hold every command at the server, send one, then kill the server under it.
    let mut conn = server.client().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pending = {
        let store = store.clone();
        tokio::spawn(async move { store.get("c", "k").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop();
    let err = bounded(pending).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);

    // While it is down: errors, each within the bound, never a hang.
    for _ in 0..3 {
        let err = bounded(store.get("c", "k")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
        let err = bounded(store.put_if_absent("c", "k", b"v".to_vec(), TTL))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    }

    // Back (empty: no persistence): the same store works again, no rebuild.
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if bounded(store.put("c", "k", b"again".to_vec(), TTL))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store reconnects by itself");
    assert_eq!(store.get("c", "k").await.unwrap(), Some(b"again".to_vec()));
    assert!(store.delete_if_equal("c", "k", b"again").await.unwrap());
}

#[tokio::test]
async fn a_slow_redis_times_out_instead_of_hanging() {
    let Some((server, store)) = setup().await else {
        return;
    };
    let mut conn = server.client().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4_000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = bounded(store.get("c", "k")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn redis_store_is_shared_and_not_encrypting() {
    let Some((_server, store)) = setup().await else {
        return;
    };
    assert!(store.is_shared());
    assert!(!store.encrypts_at_rest());
}

#[tokio::test]
async fn rediss_speaks_tls_and_fails_cleanly_against_a_plain_server() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The TLS handshake runs (rustls, no panic for want of a crypto provider) and
    // fails against a server that speaks plain RESP: a Storage error, in bounded time.
    let url = format!("rediss://:tls-pw@127.0.0.1:{}", server.port());
    let err = bounded(RedisStore::connect(&url)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert!(!format!("{err} {err:?}").contains("tls-pw"));
}

#[tokio::test]
async fn a_cluster_url_list_is_checked_and_errors_are_bounded() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A node without cluster mode: the cluster client cannot read slots from it.
    let url = server.url();
    let err = bounded(RedisStore::connect_cluster(&[url.as_str()]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    let err = RedisStore::connect_cluster(&["not a url"])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn a_one_node_cluster_serves_the_store() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap();
    let Some(server) = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "ocx-test-nodes-PORT.conf",
        "--dir",
        dir,
    ]) else {
        return;
    };
    let mut conn = server.client().await;
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The node serves once it sees its slots covered.
    let mut ready = false;
    for _ in 0..100 {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the one-node cluster came up");
    let url = server.url();
    let store = bounded(RedisStore::connect_cluster(&[url.as_str()]))
        .await
        .unwrap();
    assert!(format!("{store:?}").contains("cluster"));
    store.put("set", "a", b"1".to_vec(), TTL).await.unwrap();
    assert_eq!(store.get("set", "a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.take("set", "a").await.unwrap(), Some(b"1".to_vec()));
    assert!(
        store
            .put_if_absent("lock", "b", b"x".to_vec(), TTL)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if_absent("lock", "b", b"y".to_vec(), TTL)
            .await
            .unwrap()
    );
    assert!(store.delete_if_equal("lock", "b", b"x").await.unwrap());
    store.delete("set", "a").await.unwrap();
    let port = server.port();
    drop(server);
    let _ =
        std::fs::remove_file(std::path::Path::new(dir).join(format!("ocx-test-nodes-{port}.conf")));
}

fn key_text() -> String {
    FernetKey::generate()
        .unwrap()
        .to_base64()
        .expose_secret()
        .to_owned()
}

async fn encrypted(server: &RedisServer, keys: &str) -> EncryptedStore<RedisStore> {
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    EncryptedStore::new(redis, Fernet::from_env_value(keys).unwrap())
}

#[tokio::test]
async fn encrypted_over_redis_leaves_no_plaintext_in_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = encrypted(&server, &key_text()).await;
    let secrets = [
        (
            "set",
            "s1",
            "upstream-access-token-eyJhbGciOi.payload-part-123",
        ),
        ("refresh", "r1", "refresh-token-value-abcdef0123456789"),
        ("code", "c1", "authorization-code-value-0123456789"),
        (
            "client",
            "k1",
            r#"{"client_secret":"client-secret-value-42"}"#,
        ),
    ];
    for (collection, key, value) in secrets {
        store
            .put(collection, key, value.as_bytes().to_vec(), TTL)
            .await
            .unwrap();
    }
    assert!(
        store
            .put_if_absent("lock", "l1", b"lock-owner-secret-77".to_vec(), TTL)
            .await
            .unwrap()
    );
    let dump = server.dump().await;
    assert_eq!(dump.len(), 5);
    for (key, value) in &dump {
        let value = String::from_utf8(value.clone()).unwrap();
        assert!(value.starts_with("gAAAAA"), "a fernet token");
        for (_, _, secret) in secrets {
            assert!(!value.contains(secret));
            assert!(!String::from_utf8_lossy(key).contains(secret));
        }
        assert!(!value.contains("lock-owner-secret-77"));
    }
    for (collection, key, value) in secrets {
        assert_eq!(
            store.get(collection, key).await.unwrap(),
            Some(value.as_bytes().to_vec())
        );
    }
    assert!(
        store
            .delete_if_equal("lock", "l1", b"lock-owner-secret-77")
            .await
            .unwrap()
    );
    assert!(store.encrypts_at_rest() && store.is_shared());
}

#[tokio::test]
async fn a_wrong_key_misses_and_rotation_keeps_old_values() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (old, new) = (key_text(), key_text());
    let before = encrypted(&server, &old).await;
    before
        .put("set", "a", b"written-with-old".to_vec(), TTL)
        .await
        .unwrap();

    // Another key: a miss, not an error; nothing is deleted.
    let stranger = encrypted(&server, &key_text()).await;
    assert_eq!(stranger.get("set", "a").await.unwrap(), None);
    assert_eq!(stranger.take("set", "a").await.unwrap(), None);
    let before = encrypted(&server, &old).await;
    before
        .put("set", "a", b"written-with-old".to_vec(), TTL)
        .await
        .unwrap();
    assert!(
        !stranger
            .delete_if_equal("set", "a", b"written-with-old")
            .await
            .unwrap()
    );
    assert!(before.get("set", "a").await.unwrap().is_some());

    // Rotation: NEW,OLD reads both and writes with NEW.
    let rotated = encrypted(&server, &format!("{new},{old}")).await;
    assert_eq!(
        rotated.get("set", "a").await.unwrap(),
        Some(b"written-with-old".to_vec())
    );
    rotated
        .put("set", "b", b"written-with-new".to_vec(), TTL)
        .await
        .unwrap();
    let only_new = encrypted(&server, &new).await;
    assert_eq!(
        only_new.get("set", "b").await.unwrap(),
        Some(b"written-with-new".to_vec())
    );
    assert_eq!(
        only_new.get("set", "a").await.unwrap(),
        None,
        "old key dropped"
    );
    assert_eq!(before.get("set", "b").await.unwrap(), None);
}

#[tokio::test]
async fn garbage_and_misplaced_values_are_misses() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = encrypted(&server, &key_text()).await;
    store
        .put("code", "c", b"the-code-record".to_vec(), TTL)
        .await
        .unwrap();
    let mut conn = server.client().await;
    let token: Vec<u8> = redis::cmd("GET")
        .arg("ocx:code:c")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut tampered = token.clone();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ocx:set:c", token.clone()),   // another collection, same key
        ("ocx:code:c2", token.clone()), // same collection, another key
        ("ocx:code:garbage", b"not a fernet token".to_vec()),
        ("ocx:code:empty", Vec::new()),
        ("ocx:code:binary", vec![0, 159, 146, 150, 255]),
        ("ocx:code:tampered", tampered),
        ("ocx:code:truncated", token[..token.len() - 10].to_vec()),
    ];
    for (raw_key, value) in &cases {
        let () = redis::cmd("SET")
            .arg(*raw_key)
            .arg(value.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
        let (collection, key) = raw_key["ocx:".len()..].split_once(':').unwrap();
        assert_eq!(store.get(collection, key).await.unwrap(), None, "{raw_key}");
        assert_eq!(
            store.take(collection, key).await.unwrap(),
            None,
            "{raw_key}"
        );
        assert!(
            !store
                .delete_if_equal(collection, key, b"the-code-record")
                .await
                .unwrap(),
            "{raw_key}"
        );
    }
    // The original is untouched.
    assert_eq!(
        store.get("code", "c").await.unwrap(),
        Some(b"the-code-record".to_vec())
    );
}

/// Around a Redis store: another replica re-takes a lock right after a `get`.
#[derive(Debug)]
struct Racy {
    redis: Arc<dyn Store>,
    replacement: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Around for Racy {
    fn after(&self, call: Call, collection: &str, key: &str) -> Option<Act> {
        let replacement = (call == Call::Get)
            .then(|| self.replacement.lock().unwrap().take())
            .flatten()?;
        let (redis, collection, key) = (
            Arc::clone(&self.redis),
            collection.to_owned(),
            key.to_owned(),
        );
        Some(Box::pin(async move {
            redis
                .put(&collection, &key, replacement, TTL)
                .await
                .unwrap();
        }))
    }
}

#[tokio::test]
async fn encrypted_compare_and_delete_spares_a_value_replaced_in_between() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let keys = key_text();
    let store = encrypted(&server, &keys).await;
    let mut conn = server.client().await;
    let raw = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg("ocx:lock:k")
                .query_async(&mut conn)
                .await
                .unwrap();
            v
        }
    };
    // Two tokens of the same lock value: ours, then another holder's.
    store.put("lock", "k", b"me".to_vec(), TTL).await.unwrap();
    let theirs = raw(&mut conn).await.unwrap();
    store.put("lock", "k", b"me".to_vec(), TTL).await.unwrap();
    let ours = raw(&mut conn).await.unwrap();
    assert_ne!(ours, theirs, "a fresh IV per token");

    let redis: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let racy = EncryptedStore::new(
        Hooked::new(
            Arc::clone(&redis),
            Racy {
                redis,
                replacement: std::sync::Mutex::new(Some(theirs.clone())),
            },
        ),
        Fernet::from_env_value(&keys).unwrap(),
    );
    // Read ours, compared equal, but theirs replaced it before the delete: the
    // delete (of the exact token read) does nothing.
    assert!(!racy.delete_if_equal("lock", "k", b"me").await.unwrap());
    assert_eq!(raw(&mut conn).await, Some(theirs));
    // Without a race it deletes.
    assert!(racy.delete_if_equal("lock", "k", b"me").await.unwrap());
    assert_eq!(raw(&mut conn).await, None);
}

#[tokio::test]
async fn an_outage_is_logged_once_without_the_password() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let mut conn = server.client().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("log-pw-secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://:log-pw-secret@127.0.0.1:{}", server.port());
    let store = RedisStore::connect(&url).await.unwrap();
    let (capture, _guard) = common::LogCapture::start();
    store
        .put("c", "k", b"logged-value-secret".to_vec(), TTL)
        .await
        .unwrap();
    server.stop();
    for _ in 0..4 {
        assert!(bounded(store.get("c", "k")).await.is_err());
    }
    let text = capture.text();
    assert_eq!(
        text.matches("redis store unreachable").count(),
        1,
        "once per outage:\n{text}"
    );
    assert!(!text.contains("log-pw-secret"), "{text}");
    assert!(!text.contains("logged-value-secret"), "{text}");
}
