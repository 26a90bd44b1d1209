//! A load driver for the example MCP server: N simulated users, each making M tool
//! calls (`whoami`, `oci_request` GET and POST) over streamable HTTP with rmcp's
//! client, C at a time; then a report (calls/s, latency percentiles, errors by kind,
//! token exchanges, key generations, Redis round trips, RSS, CPU time per side).
//!
//! By default the emulator and the example server run in this process, each on its
//! own tokio runtime (2 workers each), on free loopback ports; every user gets an
//! emulator-minted token of their own (bearer mode) or logs in through the server's
//! OAuth proxy (`--proxy`). `--url URL --token-file PATH` drives any server instead
//! (one token per line; each token's `sub` is the identity `whoami` must answer).
//!
//! ```text
//! cargo run --release --example load --features mcp,emulator -- -n 64 -m 200 -c 64
//! cargo run --release --example load --features mcp,emulator -- -n 64 -m 200 -c 64 --stateless
//! cargo run --release --example load --features mcp,emulator -- --burst 40 --idle 60
//! cargo run --release --example load --features mcp,emulator -- --soak 1800 -n 2000 -c 32
//! cargo run --release --example load --features oauth-proxy,emulator,redis -- --proxy --redis
//! ```
//!
//! Options:
//! - `-n, --users N` (default 64), `-m, --calls M` per user (default 30),
//!   `-c, --concurrency C` users at a time (default 64);
//! - `--stateless`: the server in rmcp's stateless mode with JSON responses;
//! - `--keep-alive`: each user's client keeps its connections (a pooled `reqwest`
//!   client); without it, rmcp's default client opens one per request;
//! - `--rate R`: open loop: R calls/s in all, spread evenly over the users at a
//!   time (each makes one every min(C, N)/R s, counted from its connect) instead
//!   of calling again as soon as answered; a call that starts late, because the
//!   one before it ran long, counts the delay in its latency (no coordinated
//!   omission), so a latency can exceed `--timeout`, which bounds the call itself.
//!   With more users than C, a later user's calls are paced from its own connect;
//! - `--proxy` (feature `oauth-proxy`): full logins through the server's OAuth proxy;
//! - `--redis` (feature `redis`): start a `redis-server` (from `PATH` or
//!   `OCX_REDIS_SERVER`) on a free port and keep the proxy's state and the shared
//!   sessions there, encrypted, as `MCP_STORAGE=redis://...` does;
//! - `--burst N --idle SECS`: wait SECS after start, then N new users connect and
//!   make one `whoami` each, all at once (`--idle` also delays the other runs);
//! - `--soak SECS`: for SECS, C users at a time arrive (a fresh token of
//!   `--token-ttl` seconds, default 20, for one of the N subjects), make M calls
//!   and leave; then wait until every token has expired and check that RSS (once
//!   glibc has returned its free pages) and the allocator's bytes in use are within
//!   10 % of the baseline taken after warm-up (the users already arriving) and that
//!   the signer cache, key pool and proxy store are bounded (exit status 1 if not;
//!   the figures need glibc 2.33 or later); with `--proxy` the domain's
//!   access tokens live `--token-ttl` too, and the proxy refreshes one expiring
//!   within 60 s, so give the proxy soak `--token-ttl 120` or more;
//! - `--faults`: run the fault schedule (`faults.rs`) alongside the load
//!   (`--fault-secs`, default: the soak's length or 30 s);
//! - `--timeout SECS`: every call's bound (default 30; a call that reaches it
//!   counts as `hung`);
//! - `--json`: the report as JSON on stdout; `--records` adds every call to it
//!   (user, tool, start and latency in ms, outcome kind), for checks such as "a
//!   call fails only when its own user's exchange failed".
//!
//! Exit status: 0, or 1 when a check failed (an identity mismatch, a hung call, a
//! soak bound), 2 on a usage or setup error.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(
    unreachable_pub,
    reason = "the modules' interfaces are shared between engineers"
)]

mod client;
#[allow(dead_code, reason = "the fault schedule reads its context")]
mod faults;
mod login;
#[allow(dead_code, reason = "stop() and start() are for the fault schedule")]
mod redis;
mod report;
#[path = "../support/server.rs"]
#[allow(
    dead_code,
    reason = "the example server reads what the driver does not"
)]
mod server;
mod setup;

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use oci_token_exchange::{Emulator, UserTokenOptions};
use serde::Serialize;

use client::{CallRecord, Outcome, TOOLS, Tool};
use report::{Calls, Cpu, Rss, heap_in_use_kib, held_rss_kib, status_kib};
use server::BoxError;

/// Arguments.
#[derive(Debug, Clone, Serialize)]
struct Args {
    users: usize,
    calls: usize,
    concurrency: usize,
    stateless: bool,
    keep_alive: bool,
    rate: Option<f64>,
    /// `rate`'s schedule, built (and so checked) once while parsing.
    #[serde(skip)]
    pace: Option<Pace>,
    proxy: bool,
    redis: bool,
    url: Option<String>,
    #[serde(skip)]
    token_file: Option<String>,
    burst: Option<usize>,
    idle_s: u64,
    soak_s: Option<u64>,
    token_ttl_s: u64,
    faults: bool,
    fault_s: Option<u64>,
    timeout_s: u64,
    json: bool,
    records: bool,
}

const USAGE: &str = "usage: load [-n USERS] [-m CALLS] [-c CONCURRENCY] [--stateless] [--keep-alive] \
[--rate CALLS_PER_S] [--proxy] [--redis] [--url URL --token-file PATH] [--burst N --idle SECS] [--soak SECS] [--token-ttl SECS] \
[--faults] [--fault-secs SECS] [--timeout SECS] [--json] [--records]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        users: 64,
        calls: 30,
        concurrency: 64,
        stateless: false,
        keep_alive: false,
        rate: None,
        pace: None,
        proxy: false,
        redis: false,
        url: None,
        token_file: None,
        burst: None,
        idle_s: 0,
        soak_s: None,
        token_ttl_s: 20,
        faults: false,
        fault_s: None,
        timeout_s: 30,
        json: false,
        records: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        }
        match arg.as_str() {
            "-n" | "--users" => args.users = num(&arg, &value(&arg)?)?,
            "-m" | "--calls" => args.calls = num(&arg, &value(&arg)?)?,
            "-c" | "--concurrency" => args.concurrency = num(&arg, &value(&arg)?)?,
            "--stateless" => args.stateless = true,
            "--keep-alive" => args.keep_alive = true,
            "--rate" => args.rate = Some(num(&arg, &value(&arg)?)?),
            "--proxy" => args.proxy = true,
            "--redis" => args.redis = true,
            "--url" => args.url = Some(value(&arg)?),
            "--token-file" => args.token_file = Some(value(&arg)?),
            "--burst" => args.burst = Some(num(&arg, &value(&arg)?)?),
            "--idle" => args.idle_s = num(&arg, &value(&arg)?)?,
            "--soak" => args.soak_s = Some(num(&arg, &value(&arg)?)?),
            "--token-ttl" => args.token_ttl_s = num(&arg, &value(&arg)?)?,
            "--faults" => args.faults = true,
            "--fault-secs" => args.fault_s = Some(num(&arg, &value(&arg)?)?),
            "--timeout" => args.timeout_s = num(&arg, &value(&arg)?)?,
            "--json" => args.json = true,
            "--records" => args.records = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.users == 0 || args.concurrency == 0 {
        return Err("--users and --concurrency must be at least 1".to_owned());
    }
    if let Some(rate) = args.rate {
        // At most `users` call at once, even when the concurrency allows more.
        args.pace = Pace::new(rate, args.concurrency.min(args.users));
        if args.pace.is_none() {
            return Err(format!(
                "--rate must be from {} to {} calls per second",
                Pace::MIN_RATE,
                Pace::MAX_RATE
            ));
        }
        if args.soak_s.is_some() || args.burst.is_some() || args.faults {
            return Err(
                "--rate paces a plain load run, not a soak, a burst or a fault schedule \
                 (whose checks read latencies as the calls' own)"
                    .to_owned(),
            );
        }
    }
    if args.url.is_some() && (args.proxy || args.redis || args.faults || args.stateless) {
        return Err(
            "--url drives another server: --proxy, --redis, --faults and --stateless \
             configure the in-process one"
                .to_owned(),
        );
    }
    if args.url.is_some() != args.token_file.is_some() {
        return Err("--url and --token-file go together".to_owned());
    }
    if args.proxy && !cfg!(feature = "oauth-proxy") {
        return Err("--proxy needs the `oauth-proxy` feature".to_owned());
    }
    if args.redis && !cfg!(feature = "redis") {
        return Err("--redis needs the `redis` feature".to_owned());
    }
    if args.burst.is_some() && args.soak_s.is_some() {
        return Err("--burst and --soak are separate runs".to_owned());
    }
    if let Some(burst) = args.burst {
        args.users = burst;
        args.calls = 1;
        args.concurrency = burst.max(1);
    }
    Ok(args)
}

/// Where the users' tokens come from.
enum Tokens {
    /// Minted by the in-process emulator for the server's resource.
    Minted { audience: String },
    /// Logged in through the proxy.
    Proxy {
        base: String,
        resource: String,
        lock: Arc<login::LoginLock>,
    },
    /// Given: `(token, subject)` per user.
    Given(Vec<(String, String)>),
}

/// What every user task shares.
struct Shared {
    url: String,
    tokens: Tokens,
    emulator: Option<Arc<Emulator>>,
    subjects: Vec<String>,
    bound: Duration,
    /// The soak's short token lifetime (`None`: the emulator's default, an hour).
    token_ttl: Option<Duration>,
    /// Pooled connections for each user's client (`--keep-alive`).
    keep_alive: bool,
    /// Open loop (`--rate`): when each user's calls are due (`Pace::due`); `None`:
    /// each call as soon as the one before returns.
    pace: Option<Pace>,
    start: Instant,
    records: Mutex<Vec<CallRecord>>,
    progress: ProgressBar,
}

/// An open-loop schedule: `rate` calls/s in all, from `users` users at once.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// The time between one user's calls: `users / rate`.
    interval: Duration,
    /// The time between the first calls of two consecutive users: `1 / rate`, so
    /// that the users' calls interleave instead of arriving together.
    stagger: Duration,
    users: usize,
}

impl Pace {
    /// The lowest rate accepted: one call every 1 000 s in all.
    const MIN_RATE: f64 = 0.001;
    /// The highest: one call due every nanosecond.
    const MAX_RATE: f64 = 1e9;

    /// `None` when `rate` is outside `MIN_RATE..=MAX_RATE` (or not a number).
    fn new(rate: f64, users: usize) -> Option<Self> {
        if !(Self::MIN_RATE..=Self::MAX_RATE).contains(&rate) {
            return None;
        }
        let users = users.max(1);
        #[allow(clippy::cast_precision_loss, reason = "a user count")]
        let interval = Duration::try_from_secs_f64(users as f64 / rate).ok()?;
        Some(Self {
            interval,
            stagger: Duration::try_from_secs_f64(1.0 / rate).ok()?,
            users,
        })
    }

    /// When `user`'s call `i` is due, counted from `origin`: saturates (a call
    /// due past what an `Instant` holds is due then) instead of overflowing.
    fn due(&self, origin: Instant, user: usize, i: usize) -> Instant {
        let slot = u32::try_from(user % self.users).unwrap_or(0);
        let offset = u32::try_from(i)
            .ok()
            .and_then(|i| self.interval.checked_mul(i))
            .and_then(|d| d.checked_add(self.stagger.checked_mul(slot)?))
            .unwrap_or(Duration::MAX);
        origin
            .checked_add(offset)
            .or_else(|| origin.checked_add(Duration::from_secs(86_400 * 365 * 30)))
            .unwrap_or(origin)
    }
}

impl Shared {
    /// What the records of the calls hold so far, in KiB: (written, allocated). RSS
    /// counts the pages written, the allocator's bytes in use the whole allocation.
    fn records_kib(&self) -> (f64, f64) {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let size = std::mem::size_of::<CallRecord>();
        #[allow(clippy::cast_precision_loss, reason = "KiB")]
        let kib = |n: usize| (n * size) as f64 / 1024.0;
        (kib(records.len()), kib(records.capacity()))
    }

    fn record(&self, record: CallRecord) {
        if record.tool.is_some() {
            self.progress.inc(1);
        }
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// The user's token (a fresh one each time: a new login or a new `jti`).
    async fn token(&self, user: usize) -> Result<String, Outcome> {
        let subject = self
            .subjects
            .get(user)
            .ok_or(Outcome::Connect("user".into()))?;
        match (&self.tokens, &self.emulator) {
            (Tokens::Minted { audience }, Some(emulator)) => {
                let mut options =
                    UserTokenOptions::new(subject.as_str()).audience(audience.as_str());
                if let Some(ttl) = self.token_ttl {
                    options = options.ttl(ttl);
                }
                Ok(emulator.mint_user_token_with(&options))
            }
            (
                Tokens::Proxy {
                    base,
                    resource,
                    lock,
                },
                Some(emulator),
            ) => match tokio::time::timeout(
                self.bound,
                login::log_in(base, resource, emulator, lock, subject),
            )
            .await
            {
                Ok(Ok(token)) => Ok(token),
                Ok(Err(kind)) => Err(Outcome::Connect(format!("login_{kind}"))),
                Err(_) => Err(Outcome::Timeout),
            },
            (Tokens::Given(tokens), _) => tokens
                .get(user % tokens.len().max(1))
                .map(|(token, _)| token.clone())
                .ok_or(Outcome::Connect("no_token".into())),
            _ => Err(Outcome::Connect("no_emulator".into())),
        }
    }

    /// One user's visit: token, connect, `calls` calls (after `barrier`, if any),
    /// close.
    async fn visit(
        &self,
        user: usize,
        calls: usize,
        barrier: Option<&tokio::sync::Barrier>,
        leave_early: bool,
    ) {
        let began = self.start.elapsed();
        let t0 = Instant::now();
        let subject = self.subjects.get(user).cloned().unwrap_or_default();
        let connected = match self.token(user).await {
            Ok(token) => {
                client::connect(&self.url, token, user, subject, self.bound, self.keep_alive).await
            }
            Err(outcome) => Err(outcome),
        };
        self.record(CallRecord {
            user,
            tool: None,
            first: false,
            started: began,
            latency: t0.elapsed(),
            late: Duration::ZERO,
            outcome: connected.as_ref().err().cloned().unwrap_or(Outcome::Ok),
        });
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        let Ok(connected) = connected else {
            self.progress.inc(u64::try_from(calls).unwrap_or(0));
            // A client waits before it tries again (a soak's user comes back at once).
            tokio::time::sleep(FAILED_CONNECT_PAUSE).await;
            return;
        };
        let paced_from = Instant::now();
        for i in 0..calls {
            // In a soak users leave before their short-lived token expires (a real
            // client would refresh it; expiry mid-visit is not what is measured).
            // A third of the lifetime leaves room for slow calls on a loaded machine.
            if leave_early && self.token_ttl.is_some_and(|ttl| t0.elapsed() > ttl / 3) {
                break;
            }
            let tool = TOOLS.get(i % TOOLS.len()).copied().unwrap_or(Tool::Whoami);
            // Open loop: wait for the call's turn; a late start (the call before ran
            // past it) is part of what this call's caller waited.
            let (started, late) = match self.pace {
                Some(pace) => {
                    let due = pace.due(paced_from, user, i);
                    tokio::time::sleep_until(due).await;
                    let now = Instant::now();
                    (
                        due.saturating_duration_since(self.start),
                        now.saturating_duration_since(due),
                    )
                }
                None => (self.start.elapsed(), Duration::ZERO),
            };
            let (latency, outcome) = connected.call(tool, self.bound).await;
            let latency = latency + late;
            self.record(CallRecord {
                user,
                tool: Some(tool),
                first: i == 0,
                started,
                latency,
                late,
                outcome,
            });
        }
        connected.close(Duration::from_secs(5)).await;
    }
}

/// How long a user whose connect failed waits before its visit ends.
const FAILED_CONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The soak's findings.
#[derive(Debug, Default, Serialize)]
struct Soak {
    seconds: u64,
    /// User visits (arrivals) in all.
    visits: u64,
    /// The warm-up: the first quarter of the soak, at least 5 s.
    warm_up_s: u64,
    /// Visits begun when the baseline was taken (after the warm-up).
    visits_at_baseline: u64,
    /// RSS after warm-up.
    baseline_rss_kib: u64,
    /// RSS once every token had expired.
    final_rss_kib: u64,
    /// `final / baseline - 1`, in percent.
    rss_growth_pct: f64,
    /// The same, less what the key pool's extra keys hold (`KEY_KIB` each) and what
    /// the driver's records grew by: the pool
    /// grows when a stream of new users drains it and gives keys back only after 5
    /// idle minutes, by design, and is bounded on its own (`key_pool_bound`). This
    /// is the figure the 10 % bound applies to.
    rss_growth_excluding_pool_pct: f64,
    /// Bytes in use from the allocator after warm-up (glibc's `mallinfo2`, Rust's
    /// and aws-lc's allocations alike), KiB; 0 off glibc.
    baseline_heap_kib: u64,
    /// The same once every token had expired.
    final_heap_kib: u64,
    /// Its growth less the key pool's extra keys and the driver's records, in
    /// percent (RSS also counts pages the allocator has not returned).
    heap_growth_excluding_pool_pct: f64,
    /// What the driver's records of the calls grew by after the baseline, KiB
    /// allocated: set apart from both growths (from RSS's, what was written).
    records_growth_kib: f64,
    /// Keys waiting in the pool when the baseline was taken.
    key_pool_at_baseline: usize,
    /// Signers cached at the end (bound: 0 once tokens expired, allowing
    /// `concurrency` for lag).
    signer_cache_entries: u64,
    signer_cache_bound: u64,
    /// Keys waiting in the pool at the end.
    key_pool_available: usize,
    key_pool_bound: usize,
    /// Entries in the proxy's in-memory store (proxy mode without Redis).
    proxy_store_entries: Option<usize>,
    proxy_store_bound: Option<usize>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    args: Args,
    #[serde(flatten)]
    calls: Calls,
    /// Session tokens the emulator issued during the load (in-process only).
    exchanges: Option<u64>,
    /// Token endpoint requests (any grant, faults included).
    exchange_requests: Option<u64>,
    /// Users who logged in through the proxy (proxy mode).
    logins: Option<u64>,
    /// RSA keys the server's pool generated during the load.
    key_generations: Option<u64>,
    /// Keys ready in the pool when the load (or the burst) began.
    key_pool_ready_at_start: Option<usize>,
    /// Commands Redis processed during the load (`INFO stats`).
    redis_commands: Option<u64>,
    rss: Rss,
    /// CPU seconds per side during the load (client = the driver's rmcp clients).
    cpu: Cpu,
    soak: Option<Soak>,
    faults: Option<faults::FaultReport>,
    /// Every call and connect (`--records`).
    records: Option<Vec<report::RecordJson>>,
    /// Broken checks (the exit status is 1 when there is one).
    failures: Vec<String>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let runtimes = match setup::runtimes() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: runtimes: {e}");
            return ExitCode::from(2);
        }
    };
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(setup::CLIENT_THREADS)
        .enable_all()
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("load: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = client.block_on(run(args.clone(), &runtimes));
    client.shutdown_timeout(Duration::from_secs(5));
    runtimes.server.shutdown_timeout(Duration::from_secs(5));
    runtimes.emulator.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("load: report: {e}"),
                }
            } else {
                print_report(&report);
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                for failure in &report.failures {
                    eprintln!("load: FAILED: {failure}");
                }
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::from(2)
        }
    }
}

/// The subject of a JWT (unverified: only to check `whoami` against).
fn jwt_subject(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

async fn run(args: Args, runtimes: &setup::Runtimes) -> Result<Report, BoxError> {
    let bound = Duration::from_secs(args.timeout_s.max(1));
    let token_ttl = Duration::from_secs(args.token_ttl_s.max(2));
    let redis = if args.redis {
        Some(redis::RedisControl::launch()?)
    } else {
        None
    };
    let (system, url, tokens, subjects) = match (&args.url, &args.token_file) {
        (Some(url), Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let given: Vec<(String, String)> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|t| (t.to_owned(), jwt_subject(t).unwrap_or_default()))
                .collect();
            if given.is_empty() {
                return Err(format!("{file}: no tokens").into());
            }
            let subjects: Vec<String> = (0..args.users)
                .map(|i| {
                    given
                        .get(i % given.len())
                        .map(|g| g.1.clone())
                        .unwrap_or_default()
                })
                .collect();
            (None, url.clone(), Tokens::Given(given), subjects)
        }
        _ => {
            let system = setup::start(
                runtimes,
                setup::Options {
                    proxy: args.proxy,
                    stateless: args.stateless,
                    redis: redis.clone(),
                    token_ttl: args.soak_s.map(|_| token_ttl),
                },
            )
            .await?;
            let url = system.url.clone();
            let tokens = if args.proxy {
                Tokens::Proxy {
                    base: system.base.clone(),
                    resource: url.clone(),
                    lock: Arc::new(login::LoginLock::default()),
                }
            } else {
                Tokens::Minted {
                    audience: url.clone(),
                }
            };
            let prefix = if args.soak_s.is_some() {
                "soak"
            } else {
                "user"
            };
            let subjects = (0..args.users)
                .map(|i| format!("{prefix}-{i}@load.example"))
                .collect();
            (Some(system), url, tokens, subjects)
        }
    };

    let total_calls = match args.soak_s {
        Some(_) => 0,
        None => u64::try_from(args.users * args.calls).unwrap_or(u64::MAX),
    };
    let progress = ProgressBar::new(total_calls);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} calls {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shared = Arc::new(Shared {
        url,
        tokens,
        emulator: system.as_ref().map(|s| Arc::clone(&s.emulator)),
        subjects: subjects.clone(),
        bound,
        token_ttl: args.soak_s.map(|_| token_ttl),
        keep_alive: args.keep_alive,
        pace: args.pace,
        start: Instant::now(),
        records: Mutex::new(Vec::new()),
        progress: progress.clone(),
    });

    if args.idle_s > 0 {
        progress.set_message("idle");
        tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
    }

    let counters_before = system.as_ref().map(|s| s.emulator.counters());
    let keys_before = system.as_ref().map(|s| s.pool.generated());
    let pool_ready = system.as_ref().map(|s| s.pool.available());
    let redis_before = redis
        .as_ref()
        .and_then(redis::RedisControl::commands_processed);
    let rss_before = held_rss_kib();
    let cpu_before = Cpu::now();

    let fault_task = match (&system, args.faults) {
        (Some(system), true) => {
            let duration = Duration::from_secs(args.fault_s.or(args.soak_s).unwrap_or(30));
            let ctx = faults::FaultContext {
                emulator: Arc::clone(&system.emulator),
                redis: redis.clone(),
                subjects: subjects.clone(),
                duration,
            };
            Some(tokio::spawn(faults::run(ctx)))
        }
        _ => None,
    };

    let started = Instant::now();
    let mut soak = None;
    match args.soak_s {
        None => load(&shared, &args).await,
        Some(seconds) => {
            soak = Some(run_soak(&shared, &args, seconds, system.as_ref()).await);
        }
    }
    let load_elapsed = started.elapsed();
    progress.finish_and_clear();

    let mut faults = match fault_task {
        Some(task) => Some(task.await.unwrap_or_default()),
        None => None,
    };
    let cpu = Cpu::now().since(&cpu_before);
    let counters_after = system.as_ref().map(|s| s.emulator.counters());
    let records = std::mem::take(
        &mut *shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let calls = Calls::of(&records, load_elapsed);
    let mut failures = Vec::new();
    if calls.identity_mismatch > 0 {
        failures.push(format!(
            "{} whoami answers named another user",
            calls.identity_mismatch
        ));
    }
    if calls.hung > 0 {
        failures.push(format!(
            "{} calls reached their {}s bound",
            calls.hung,
            bound.as_secs()
        ));
    }
    if let Some(soak) = &soak {
        if soak.rss_growth_excluding_pool_pct > 10.0 {
            failures.push(format!(
                "RSS grew {:.1} % over the baseline after the soak, the key pool's growth \
                 excluded (bound 10 %)",
                soak.rss_growth_excluding_pool_pct
            ));
        }
        if soak.heap_growth_excluding_pool_pct > 10.0 {
            failures.push(format!(
                "the allocator holds {:.1} % more in use than at the baseline after the \
                 soak, the key pool's growth excluded (bound 10 %)",
                soak.heap_growth_excluding_pool_pct
            ));
        }
        if soak.signer_cache_entries > soak.signer_cache_bound {
            failures.push(format!(
                "signer cache holds {} signers after every token expired (bound {})",
                soak.signer_cache_entries, soak.signer_cache_bound
            ));
        }
        if soak.key_pool_available > soak.key_pool_bound {
            failures.push(format!(
                "key pool holds {} keys (bound {})",
                soak.key_pool_available, soak.key_pool_bound
            ));
        }
        if let (Some(n), Some(b)) = (soak.proxy_store_entries, soak.proxy_store_bound)
            && n > b
        {
            failures.push(format!("proxy store holds {n} entries (bound {b})"));
        }
    }
    let delta =
        |f: fn(&oci_token_exchange::Counters) -> u64| match (&counters_before, &counters_after) {
            (Some(a), Some(b)) => Some(f(b).saturating_sub(f(a))),
            _ => None,
        };
    // The fault schedule's expectations, judged from the records (faults.rs).
    if let Some(fault_report) = faults.as_mut() {
        failures.extend(faults::check(
            fault_report,
            &records,
            faults::checks::Facts {
                users: subjects.len(),
                bound_ms: bound.as_secs_f64() * 1000.0,
                // Users' tokens live `token_ttl` in the soak, an hour otherwise.
                token_ttl_ms: args
                    .soak_s
                    .map_or(3_600_000.0, |_| token_ttl.as_secs_f64() * 1000.0),
                exchanges: delta(|c| c.exchanges).unwrap_or(0),
                exchange_requests: delta(|c| c.exchange_requests).unwrap_or(0),
                other_grants: delta(|c| c.code_grants + c.refresh_grants).unwrap_or(0),
                ..faults::checks::Facts::default()
            },
        ));
    }
    let redis_after = redis
        .as_ref()
        .and_then(redis::RedisControl::commands_processed);
    let report = Report {
        exchanges: delta(|c| c.exchanges),
        exchange_requests: delta(|c| c.exchange_requests),
        logins: args.proxy.then(|| delta(|c| c.logins)).flatten(),
        key_generations: match (&system, keys_before) {
            (Some(s), Some(before)) => Some(s.pool.generated().saturating_sub(before)),
            _ => None,
        },
        key_pool_ready_at_start: pool_ready,
        redis_commands: match (redis_before, redis_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        rss: Rss {
            before_kib: rss_before,
            peak_kib: status_kib("VmHWM"),
            after_kib: soak.as_ref().map_or_else(held_rss_kib, |s| s.final_rss_kib),
        },
        cpu,
        soak,
        faults,
        records: args
            .records
            .then(|| records.iter().map(report::RecordJson::from).collect()),
        failures,
        calls,
        args,
    };
    if let Some(system) = system {
        system.task.abort();
    }
    Ok(report)
}

/// The default run (and the burst): every user once, `concurrency` at a time.
async fn load(shared: &Arc<Shared>, args: &Args) {
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let barrier = args
        .burst
        .map(|n| Arc::new(tokio::sync::Barrier::new(n.max(1))));
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..args.users {
        let shared = Arc::clone(shared);
        let permits = Arc::clone(&permits);
        let barrier = barrier.clone();
        let calls = args.calls;
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            shared.visit(user, calls, barrier.as_deref(), false).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// `(final - excluded) / baseline - 1` in percent, to a tenth; 0 without a baseline.
fn growth_excluding(baseline_kib: u64, final_kib: u64, excluded_kib: f64) -> f64 {
    if baseline_kib == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss, reason = "KiB")]
    let growth = ((final_kib as f64 - excluded_kib) / baseline_kib as f64 - 1.0) * 100.0;
    (growth * 10.0).round() / 10.0
}

/// The soak: `concurrency` user slots, each a stream of visits with fresh tokens,
/// until `seconds` have passed; then the wait for every token to expire and the
/// checks.
async fn run_soak(
    shared: &Arc<Shared>,
    args: &Args,
    seconds: u64,
    system: Option<&setup::System>,
) -> Soak {
    let end = Instant::now() + Duration::from_secs(seconds);
    let warm_up = Duration::from_secs((seconds / 4).max(5));
    let next_user = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let visits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let shared = Arc::clone(shared);
        let next_user = Arc::clone(&next_user);
        let visits = Arc::clone(&visits);
        let calls = args.calls;
        let users = args.users;
        tasks.spawn(async move {
            while Instant::now() < end {
                let user =
                    next_user.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % users.max(1);
                visits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.visit(user, calls, None, true).await;
            }
        });
    }
    tokio::time::sleep(warm_up).await;
    let records_at_baseline = shared.records_kib();
    let baseline = held_rss_kib();
    let baseline_heap = heap_in_use_kib();
    let pool_at_baseline = system.map_or(0, |s| s.pool.available());
    let visits_at_baseline = visits.load(std::sync::atomic::Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    // Every token minted before the end expires within `token_ttl`; the cache drops
    // its signer then. A second more for the clock's granularity.
    shared
        .progress
        .set_message("waiting for the tokens to expire");
    let ttl = shared.token_ttl.unwrap_or_default();
    tokio::time::sleep(ttl + Duration::from_secs(2)).await;
    let visits = visits.load(std::sync::atomic::Ordering::Relaxed);
    let (entries, pool) = match system {
        Some(s) => (s.signers.len().await, s.pool.available()),
        None => (0, 0),
    };
    let proxy_store = system
        .and_then(|s| s.proxy_store.as_ref())
        .map(oci_token_exchange::MemoryStore::len);
    let final_rss = held_rss_kib();
    let final_heap = heap_in_use_kib();
    #[allow(clippy::cast_precision_loss, reason = "a count of keys")]
    let pool_kib = pool.saturating_sub(pool_at_baseline) as f64 * KEY_KIB;
    // The driver keeps a record of every call (for the percentiles): what they grew
    // by is the driver's, set apart like the pool's keys.
    let (written, allocated) = shared.records_kib();
    let records_written = written - records_at_baseline.0;
    let records_kib = allocated - records_at_baseline.1;
    Soak {
        seconds,
        visits,
        warm_up_s: warm_up.as_secs(),
        visits_at_baseline,
        baseline_rss_kib: baseline,
        final_rss_kib: final_rss,
        rss_growth_pct: growth_excluding(baseline, final_rss, 0.0),
        rss_growth_excluding_pool_pct: growth_excluding(
            baseline,
            final_rss,
            pool_kib + records_written,
        ),
        baseline_heap_kib: baseline_heap,
        final_heap_kib: final_heap,
        heap_growth_excluding_pool_pct: growth_excluding(
            baseline_heap,
            final_heap,
            pool_kib + records_kib,
        ),
        records_growth_kib: (records_kib * 10.0).round() / 10.0,
        key_pool_at_baseline: pool_at_baseline,
        signer_cache_entries: entries,
        signer_cache_bound: 0,
        key_pool_available: pool,
        key_pool_bound: KEY_POOL_BOUND,
        // Each login leaves its client registration and its refresh token until they
        // expire: a bound per login, never per call.
        proxy_store_entries: proxy_store,
        proxy_store_bound: proxy_store.map(|_| {
            usize::try_from(visits)
                .unwrap_or(usize::MAX)
                .saturating_mul(PROXY_ENTRIES_PER_LOGIN)
        }),
    }
}

/// The most keys the pool may hold: the default pool's ceiling.
const KEY_POOL_BOUND: usize = oci_token_exchange::KeyPool::DEFAULT_CEILING;
/// What one pooled RSA-2048 key holds, in KiB (`cargo bench --bench pool`: RSS
/// before and after filling 256 keys).
const KEY_KIB: f64 = 4.5;
/// The most proxy store entries one login may leave behind.
const PROXY_ENTRIES_PER_LOGIN: usize = 4;

fn print_report(r: &Report) {
    let c = &r.calls;
    println!(
        "calls: {} ({} ok) in {:.2} s: {:.1} calls/s",
        c.calls, c.ok, c.elapsed_s, c.calls_per_s
    );
    let l = |name: &str, l: &report::Latency| {
        println!(
            "{name:<11} n={:<7} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    };
    l("latency", &c.latency);
    l("first call", &c.first_call);
    l("connect", &c.connect);
    println!(
        "errors: {:?}  hung: {}  identity mismatches: {}",
        c.errors, c.hung, c.identity_mismatch
    );
    let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    println!(
        "token exchanges: {} (token endpoint requests {})  key generations: {} (pool ready at start: {})  redis commands: {}",
        opt(r.exchanges),
        opt(r.exchange_requests),
        opt(r.key_generations),
        r.key_pool_ready_at_start
            .map_or_else(|| "n/a".to_owned(), |v| v.to_string()),
        opt(r.redis_commands),
    );
    if let Some(logins) = r.logins {
        println!("proxy logins: {logins}");
    }
    println!(
        "rss: before {} KiB, peak {} KiB, after {} KiB",
        r.rss.before_kib, r.rss.peak_kib, r.rss.after_kib
    );
    println!(
        "cpu: client {:.2} s, server {:.2} s, emulator {:.2} s, other {:.2} s, total {:.2} s (wall {:.2} s)",
        r.cpu.client_s, r.cpu.server_s, r.cpu.emulator_s, r.cpu.other_s, r.cpu.total_s, c.elapsed_s
    );
    if let Some(s) = &r.soak {
        println!(
            "soak: {} s, {} visits; rss baseline {} KiB, final {} KiB ({:+.1} %, {:+.1} % without the key pool's growth); signer cache {} (bound {}); key pool {} (bound {}); proxy store {:?} (bound {:?})",
            s.seconds,
            s.visits,
            s.baseline_rss_kib,
            s.final_rss_kib,
            s.rss_growth_pct,
            s.rss_growth_excluding_pool_pct,
            s.signer_cache_entries,
            s.signer_cache_bound,
            s.key_pool_available,
            s.key_pool_bound,
            s.proxy_store_entries,
            s.proxy_store_bound
        );
    }
    if let Some(f) = &r.faults {
        println!("faults: {:?}", f.phases);
    }
}
