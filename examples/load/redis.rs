//! The driver's own `redis-server` (`--redis`): started on a free loopback port with
//! no persistence, stopped and started again by the fault schedule, asked for its
//! command count (`INFO stats`) for the report.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How many times (20 ms apart, about 10 s) a started server is pinged.
const START_POLLS: u32 = 500;

/// Control of the driver's `redis-server`. Cheap to clone; clones control the same
/// process, which is killed when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct RedisControl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    binary: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        kill(&self.child);
    }
}

fn kill(child: &Mutex<Option<Child>>) {
    let taken = child.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(mut child) = taken {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `OCX_REDIS_SERVER`, else `redis-server` on `PATH`.
fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("OCX_REDIS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("OCX_REDIS_SERVER={} is not a file", path.display()))
        };
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "--redis needs redis-server: install it (Debian: apt-get install redis-server) \
             or set OCX_REDIS_SERVER to its path"
                .to_owned()
        })
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Sends one inline command on a fresh connection and reads the reply (bounded).
fn command(port: u16, line: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0_u8; 4096];
    // A bulk reply: `$LEN\r\n...\r\n`; a simple one: `+PONG\r\n`. Read until whole.
    for _ in 0..64 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(buf.get(..n)?);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.strip_prefix('$') {
            let (len, body) = rest.split_once("\r\n")?;
            let len: usize = len.parse().ok()?;
            if body.len() >= len {
                return Some(body.get(..len)?.to_owned());
            }
        } else if text.ends_with("\r\n") {
            return Some(text.trim_end().to_owned());
        }
    }
    None
}

impl RedisControl {
    /// Starts a server on a free loopback port and waits (bounded) until it answers.
    ///
    /// # Errors
    /// No `redis-server`, or it did not start on any of 5 free ports.
    pub fn launch() -> Result<Self, String> {
        let binary = find_binary()?;
        for _ in 0..5 {
            let port = free_port()?;
            if let Some(child) = spawn(&binary, port)? {
                return Ok(Self {
                    inner: Arc::new(Inner {
                        binary,
                        port,
                        child: Mutex::new(Some(child)),
                    }),
                });
            }
        }
        Err("redis-server did not start on any of 5 free ports".to_owned())
    }

    /// `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.inner.port)
    }

    /// Kills the server (SIGKILL: a crash) and waits for it to exit; its data is
    /// gone (no persistence).
    pub async fn stop(&self) {
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || kill(&inner.child)).await;
    }

    /// Starts an empty server on the same port (stopping a running one first) and
    /// waits until it answers (at most about 15 s).
    ///
    /// # Errors
    /// It did not start.
    pub async fn start(&self) -> Result<(), String> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            kill(&inner.child);
            for _ in 0..50 {
                if let Some(child) = spawn(&inner.binary, inner.port)? {
                    *inner.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(format!(
                "redis-server did not restart on port {}",
                inner.port
            ))
        })
        .await
        .map_err(|e| format!("restart task: {e}"))?
    }

    /// `total_commands_processed` from `INFO stats` (`None` when it does not answer).
    #[must_use]
    pub fn commands_processed(&self) -> Option<u64> {
        let info = command(self.inner.port, "INFO stats")?;
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
    }
}

/// Spawns `redis-server` on `port`; `None` if it exited (port taken) or never
/// answered PING.
fn spawn(binary: &PathBuf, port: u16) -> Result<Option<Child>, String> {
    let mut child = Command::new(binary)
        .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    for _ in 0..START_POLLS {
        if command(port, "PING").as_deref() == Some("+PONG") {
            return Ok(Some(child));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}
