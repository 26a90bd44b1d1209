//! Measurements and the report: latency percentiles, errors by kind, RSS from
//! `/proc/self/status`, CPU time per runtime from `/proc/self/task/*/stat`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::client::{CallRecord, Outcome};
use crate::setup::{CLIENT_THREADS, EMULATOR_THREADS, SERVER_THREADS};

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "an index into a few million samples"
            )]
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples
                .get(rank - 1)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Resident memory in KiB.
#[derive(Debug, Default, Serialize)]
pub struct Rss {
    /// After the system started, before the load.
    pub before_kib: u64,
    /// The process's high-water mark (VmHWM): client and server together.
    pub peak_kib: u64,
    /// After the load (and, in a soak, after the tokens expired).
    pub after_kib: u64,
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// RSS once glibc's allocator has handed back the free pages it keeps in every
/// arena (`malloc_trim(0)`): what the process holds, not what the allocator cached
/// from its peak. Each Tokio blocking thread that generated keys has its own arena;
/// without the trim RSS only ever climbs, whatever is freed.
pub fn held_rss_kib() -> u64 {
    trim_allocator();
    status_kib("VmRSS")
}

/// Bytes in use from glibc's allocator (`mallinfo2`: small blocks plus mmapped
/// ones), in KiB: Rust's and aws-lc's allocations alike; 0 off glibc.
pub fn heap_in_use_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 (glibc 2.33 and later) takes no arguments and returns a
        // plain struct by value; it walks the arenas under their locks. glibc marks
        // it MT-Unsafe only in that it may initialise the allocator (`init`), which
        // has happened long before this call; no memory-safety precondition.
        #[allow(unsafe_code, reason = "glibc's statistics have no safe binding")]
        let info = unsafe { libc::mallinfo2() };
        u64::try_from(info.uordblks.saturating_add(info.hblkhd) / 1024).unwrap_or(u64::MAX)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a size, no pointers, and locks each arena it
        // trims (MT-Safe); it only returns free memory to the system.
        #[allow(unsafe_code, reason = "glibc's malloc_trim has no safe binding")]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// CPU seconds (user + system) per side, from the threads' names. Threads that have
/// exited (idle blocking threads) count in `total` only, hence `other`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Cpu {
    pub client_s: f64,
    pub server_s: f64,
    pub emulator_s: f64,
    pub other_s: f64,
    pub total_s: f64,
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`: 100 on Linux).
const TICKS: f64 = 100.0;

fn ticks(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from `pid` = 1; `after` starts at 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Cpu {
    pub fn now() -> Self {
        let mut cpu = Self::default();
        let secs = |t: u64| {
            #[allow(clippy::cast_precision_loss, reason = "clock ticks")]
            let t = t as f64;
            t / TICKS
        };
        cpu.total_s = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| ticks(&s))
            .map_or(0.0, secs);
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        let mut known = 0.0;
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let Some(t) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
            else {
                continue;
            };
            let t = secs(t);
            let comm = comm.trim();
            if comm.starts_with(CLIENT_THREADS) {
                cpu.client_s += t;
            } else if comm.starts_with(SERVER_THREADS) {
                cpu.server_s += t;
            } else if comm.starts_with(EMULATOR_THREADS) {
                cpu.emulator_s += t;
            } else {
                continue;
            }
            known += t;
        }
        cpu.other_s = (cpu.total_s - known).max(0.0);
        cpu
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        // A thread that exited (an idle blocking thread) takes its time with it: a
        // side never goes below 0, and that time shows in `total` and `other`.
        let d = |a: f64, b: f64| (((a - b) * 100.0).round() / 100.0).max(0.0);
        Self {
            client_s: d(self.client_s, earlier.client_s),
            server_s: d(self.server_s, earlier.server_s),
            emulator_s: d(self.emulator_s, earlier.emulator_s),
            other_s: d(self.other_s, earlier.other_s),
            total_s: d(self.total_s, earlier.total_s),
        }
    }
}

/// Calls and their outcomes.
#[derive(Debug, Default, Serialize)]
pub struct Calls {
    /// Tool calls made (connects not included).
    pub calls: u64,
    pub ok: u64,
    /// Failed calls and connects, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Calls or connects that reached their bound.
    pub hung: u64,
    /// `whoami` answers naming someone else. Must be 0.
    pub identity_mismatch: u64,
    pub calls_per_s: f64,
    pub elapsed_s: f64,
    /// Every tool call.
    pub latency: Latency,
    /// Each user's first call (the cold one: token exchange, key).
    pub first_call: Latency,
    /// Connects (MCP initialize, and the login in proxy mode).
    pub connect: Latency,
}

impl Calls {
    pub fn of(records: &[CallRecord], elapsed: Duration) -> Self {
        let mut calls = Self {
            elapsed_s: elapsed.as_secs_f64(),
            ..Self::default()
        };
        let mut all = Vec::new();
        let mut first = Vec::new();
        let mut connect = Vec::new();
        for record in records {
            match record.tool {
                Some(_) => {
                    calls.calls += 1;
                    all.push(record.latency);
                    if record.first {
                        first.push(record.latency);
                    }
                }
                None => connect.push(record.latency),
            }
            match &record.outcome {
                Outcome::Ok => calls.ok += u64::from(record.tool.is_some()),
                other => {
                    if *other == Outcome::Timeout {
                        calls.hung += 1;
                    }
                    if *other == Outcome::IdentityMismatch {
                        calls.identity_mismatch += 1;
                    }
                    if let Some(kind) = other.kind() {
                        *calls.errors.entry(kind).or_default() += 1;
                    }
                }
            }
        }
        #[allow(clippy::cast_precision_loss, reason = "a count of calls")]
        let per_s = calls.calls as f64 / calls.elapsed_s.max(1e-9);
        calls.calls_per_s = (per_s * 10.0).round() / 10.0;
        calls.latency = Latency::of(all);
        calls.first_call = Latency::of(first);
        calls.connect = Latency::of(connect);
        calls
    }
}

/// One call or connect in the JSON report.
#[derive(Debug, Serialize)]
pub struct RecordJson {
    pub user: usize,
    /// `whoami`, `get`, `post`, or `connect`.
    pub tool: &'static str,
    pub first: bool,
    pub started_ms: f64,
    pub latency_ms: f64,
    /// Open loop: how late the call started (part of `latency_ms`).
    pub late_ms: f64,
    /// `ok` or the error kind.
    pub outcome: String,
}

impl From<&CallRecord> for RecordJson {
    fn from(r: &CallRecord) -> Self {
        Self {
            user: r.user,
            tool: match r.tool {
                None => "connect",
                Some(crate::client::Tool::Whoami) => "whoami",
                Some(crate::client::Tool::Get) => "get",
                Some(crate::client::Tool::Post) => "post",
            },
            first: r.first,
            started_ms: r.started.as_secs_f64() * 1000.0,
            latency_ms: r.latency.as_secs_f64() * 1000.0,
            late_ms: r.late.as_secs_f64() * 1000.0,
            outcome: r.outcome.kind().unwrap_or_else(|| "ok".to_owned()),
        }
    }
}
