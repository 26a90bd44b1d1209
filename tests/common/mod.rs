//! Helpers shared by the integration tests that run the examples.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub mod browser;
#[cfg(feature = "mcp")]
pub mod domain;
pub mod jws;
pub mod redis;
pub mod store;

/// Builds example `name` once per test binary, with this test's features (so cargo
/// reuses the library it already built), and returns the executable's path.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let features: Vec<&str> = [
        ("aws-lc-rs", cfg!(feature = "aws-lc-rs")),
        ("rust-crypto", cfg!(feature = "rust-crypto")),
        ("reqwest", cfg!(feature = "reqwest")),
        ("emulator", cfg!(feature = "emulator")),
        ("mcp", cfg!(feature = "mcp")),
        ("middleware", cfg!(feature = "middleware")),
        ("oauth-proxy", cfg!(feature = "oauth-proxy")),
        ("redis", cfg!(feature = "redis")),
    ]
    .into_iter()
    .filter_map(|(feature, on)| on.then_some(feature))
    .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--message-format=json",
        ])
        .args(["--no-default-features", "--features", &features.join(",")])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the example's executable");
    built.insert(name.to_owned(), path.clone());
    path
}

/// Every tracing event of the current thread, formatted as text (level, target,
/// message and every field), for tests that check what operators see and that no
/// secret is in it.
///
/// One global subscriber (installed once) writes each event into the buffer of the
/// capture active on the emitting thread. A global one, not a scoped one per test:
/// tracing caches each call site's interest process-wide, so scoped subscribers in
/// tests running side by side can hide each other's events.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<Mutex<Vec<u8>>>);

thread_local! {
    static ACTIVE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Ends a thread's capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        ACTIVE.with(|active| active.borrow_mut().take());
    }
}

/// Writes into the capture active on the current thread, if any.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ACTIVE.with(|active| {
            if let Some(capture) = active.borrow().as_ref() {
                capture
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Starts capturing this thread's events until the returned guard is dropped.
    pub fn start() -> (Self, CaptureGuard) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the tests");
        });
        let capture = Self::default();
        ACTIVE.with(|active| *active.borrow_mut() = Some(capture.clone()));
        (capture, CaptureGuard(()))
    }

    /// What was captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }

    /// Panics if `secret`, or any dot-separated part of it of 8 characters or more
    /// (a JWT's header, payload or signature), was captured.
    pub fn assert_free_of(&self, name: &str, secret: &str) {
        let text = self.text();
        assert!(!text.contains(secret), "{name} in:\n{text}");
        for part in secret.split('.').filter(|p| p.len() >= 8) {
            assert!(!text.contains(part), "part of the {name} in:\n{text}");
        }
    }
}

/// Panics if `text` holds `secret` or any dot-separated part of it of 8 characters or
/// more (a JWT's header, payload or signature). Names neither in the message.
pub fn assert_no_secret_in(text: &str, secret: &str) {
    assert!(!secret.is_empty());
    let leaked = text.contains(secret)
        || secret
            .split('.')
            .filter(|p| p.len() >= 8)
            .any(|part| text.contains(part));
    assert!(!leaked, "a secret (or part of one) in:\n{text}");
}

/// Most bytes kept of each of a run's outputs (a soak's records are a few MiB);
/// the rest is read and dropped, so the child never blocks on a full pipe.
const MAX_OUTPUT: u64 = 64 << 20;

/// Reads `pipe` to its end in a thread while the child runs: the first
/// [`MAX_OUTPUT`] bytes are kept, the rest drained.
fn read_while_running(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Runs example `name` with `args` (and `RUST_LOG=error`), killed and failing the
/// test after `limit`; returns its exit code, stdout and stderr. Its outputs are
/// read while it runs (a report with records is more than a pipe's buffer: unread,
/// the child would block on it).
pub fn run_example(name: &str, args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = read_while_running(child.stdout.take().unwrap());
    let stderr = read_while_running(child.stderr.take().unwrap());
    #[allow(clippy::disallowed_methods, reason = "a test's own deadline")]
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} ran longer than {limit:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The child has exited: its pipes are closed, the readers end.
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    (status.code().unwrap_or(-1), stdout, stderr)
}
