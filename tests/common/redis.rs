//! A `redis-server` of the test's own on a free loopback port, no persistence.
//!
//! [`RedisServer::start`] finds the binary (`OCX_REDIS_SERVER`, else `redis-server` on
//! `PATH`); without one it prints why the test skips and returns `None`, unless
//! `OCX_REQUIRE_REDIS=1` (CI), where it panics so Redis tests never skip silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

/// How many times (20 ms apart, so about 10 s) a started server is pinged before
/// it counts as not started.
const START_POLLS: u32 = 500;

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

/// Whether CI demands Redis (`OCX_REQUIRE_REDIS=1`).
fn required() -> bool {
    std::env::var("OCX_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// Tells the person running the tests why a Redis test did nothing.
#[allow(clippy::print_stderr)]
fn skip_notice(why: &str) {
    eprintln!(
        "SKIPPED: {why}; install redis-server (or set OCX_REQUIRE_REDIS=1 to make this an error)"
    );
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OCX_REDIS_SERVER") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One PING over a fresh connection, bounded: whether the server answered PONG.
fn pings(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits (bounded) until it answers.
    /// `None`, with the reason on stderr, when there is no `redis-server` and
    /// `OCX_REQUIRE_REDIS` is not `1`.
    ///
    /// # Panics
    /// With `OCX_REQUIRE_REDIS=1` and no `redis-server`; when the server does not
    /// start.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments (`PORT` in one is
    /// replaced by the port).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        let Some(binary) = find_binary() else {
            let why = "no redis-server (not on PATH, OCX_REDIS_SERVER unset or not a file)";
            assert!(
                !required(),
                "{why}, and OCX_REQUIRE_REDIS=1 forbids skipping; install the Debian package redis-server"
            );
            skip_notice(why);
            return None;
        };
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                binary: binary.clone(),
                port,
                extra: extra
                    .iter()
                    .map(|a| a.replace("PORT", &port.to_string()))
                    .collect(),
                child: None,
            };
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Spawns the server on `self.port` and waits for PING; false if it exited or
    /// never answered.
    fn spawn(&mut self) -> bool {
        let child = Command::new(&self.binary)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot run {}: {e}", self.binary.display()),
        };
        for _ in 0..START_POLLS {
            if pings(self.port) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Exited: most likely the port was taken.
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: what a crash looks like) and waits for it to exit.
    /// The data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server, if running, and starts an empty one on the same port.
    ///
    /// # Panics
    /// When it does not start within a few seconds.
    pub fn restart(&mut self) {
        self.stop();
        // The port was just released; give the kernel a moment if it is still held.
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Every key and its value (SCAN + GET), for checks that nothing is stored in
    /// plaintext. Values that are not strings are left out.
    #[cfg(feature = "redis")]
    pub async fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..10_000 {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut out = Vec::new();
        for key in keys {
            let value: redis::RedisResult<Option<Vec<u8>>> =
                redis::cmd("GET").arg(&key).query_async(&mut conn).await;
            if let Ok(Some(value)) = value {
                out.push((key, value));
            }
        }
        out
    }

    /// A plain connection for a test to poke at the data.
    #[cfg(feature = "redis")]
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
