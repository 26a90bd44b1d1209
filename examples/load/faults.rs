//! The fault schedule run during load (`--faults`), scaled to its duration `D`
//! (`--fault-secs`, or the soak's length), then the expectations
//! (`fault_checks.rs`) judged from the run's records.
//!
//! | phase | from | to | what |
//! | --- | --- | --- | --- |
//! | `warm_up` | 0 | 0.08 D | nothing |
//! | `exchange_503_burst` | 0.08 D | 0.20 D | 20 % of token requests answer 503 |
//! | `exchange_outage` | 0.20 D | 0.23 D | every token request answers 503: arriving users' exchanges fail after all retries |
//! | `slow_domain` | 0.23 D | 0.31 D | every token request waits 2 s |
//! | `connection_resets` | 0.31 D | 0.39 D | 25 % of token requests: connection reset (TCP RST) unanswered |
//! | `garbage_responses` | 0.39 D | 0.47 D | 25 % of token requests: 200 with an HTML body |
//! | `oci_401_one_user` | 0.47 D | 0.55 D | the control plane answers 401 to one active user's session, once |
//! | `jwks_down` | 0.55 D | 0.65 D | JWKS and discovery answer 503 (first half), then close the connection; the domain rolls its signing key as they go down, so users arriving meanwhile carry a key the server has not fetched (it is fetched within 5 s of the JWKS's return: `recovered` allows for that) |
//! | `redis_restart` | 0.65 D | 0.75 D | (`--redis`) Redis killed, started again empty after 0.08 D |
//! | `recovery` | 0.75 D | D | nothing: every user must work again |
//!
//! Users keep arriving with new tokens throughout (run it with `--soak`, whose users
//! come and go), so exchanges meet every fault. CI runs about 60 s
//! (`tests/load_faults.rs`); the full run (the JWKS down for 30 s):
//!
//! ```text
//! cargo run --release --example load --features mcp,emulator -- \
//!     --soak 300 --faults -n 200 -c 16 -m 6 --json --records
//! cargo run --release --example load --features mcp,emulator,redis -- \
//!     --soak 300 --faults --redis -n 200 -c 16 -m 6
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use oci_token_exchange::{Emulator, Fault, FaultControl, FaultId, FaultRate, FaultRule};

use crate::redis::RedisControl;

#[path = "fault_checks.rs"]
pub mod checks;

/// What the schedule may act on.
#[derive(Debug)]
pub struct FaultContext {
    /// The in-process emulator (fault injection, counters).
    pub emulator: Arc<Emulator>,
    /// The driver's own `redis-server` (with `--redis`).
    pub redis: Option<RedisControl>,
    /// The simulated users' subjects.
    pub subjects: Vec<String>,
    /// How long the load runs.
    pub duration: Duration,
}

/// One phase as run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Phase {
    /// Its name (see the module's table).
    pub name: String,
    /// When it began and ended, in ms from the schedule's start.
    pub start_ms: f64,
    pub end_ms: f64,
    /// Faults it served (all endpoints).
    pub served: u64,
}

/// What the schedule did, merged into the driver's report.
#[derive(Debug, Default, serde::Serialize)]
pub struct FaultReport {
    /// The phases run, in order (`name start..end s: served`).
    pub phases: Vec<String>,
    /// The same, as numbers.
    pub phase_windows: Vec<Phase>,
    /// When the last fault ended, in ms from the schedule's start.
    pub faults_end_ms: f64,
    /// When Redis was down (killed, answering again), in ms.
    pub redis_outage_ms: Option<(f64, f64)>,
    /// A Redis restart that failed.
    pub redis_error: Option<String>,
    /// When the JWKS and discovery were down, in ms.
    pub jwks_outage_ms: Option<(f64, f64)>,
    /// The kid the domain rolled to as they went down, or why it could not.
    pub rotated_kid: Option<String>,
    pub rotation_error: Option<String>,
    /// Faults served by `endpoint/kind` during the schedule.
    pub faults_served: BTreeMap<String, u64>,
    /// Token-endpoint faults met by each user's exchange attempts (by user index).
    pub token_faults_by_user: BTreeMap<usize, u64>,
    /// The user whose session the control plane rejected (and how many times).
    pub rejected_user: Option<usize>,
    pub session_rejections: u64,
    /// The expectations, judged from the run's records ([`check`]).
    pub verdict: Option<checks::Verdict>,
}

/// Slow-domain delay of every token request (below the exchange's 15 s attempt
/// timeout: calls get slow, not failed).
const SLOW_DOMAIN: Duration = Duration::from_secs(2);

struct Clock {
    start: Instant,
    duration: Duration,
}

impl Clock {
    fn ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Sleeps until `fraction` of the duration.
    async fn until(&self, fraction: f64) {
        let at = self.start + self.duration.mul_f64(fraction);
        tokio::time::sleep_until(at).await;
    }
}

fn total(control: &FaultControl) -> u64 {
    control.counters().faults_served_total
}

/// Runs `rules` from `from` to `to` (fractions of the duration), recording the
/// phase.
async fn phase(
    clock: &Clock,
    control: &FaultControl,
    report: &mut FaultReport,
    name: &str,
    (from, to): (f64, f64),
    rules: Vec<FaultRule>,
) {
    let started = begin(clock, control, from, rules).await;
    end(clock, control, report, name, to, started).await;
}

/// A phase's faults in place.
struct Started {
    ids: Vec<FaultId>,
    before: u64,
    start_ms: f64,
}

/// Puts `rules` in place at `from`.
async fn begin(clock: &Clock, control: &FaultControl, from: f64, rules: Vec<FaultRule>) -> Started {
    clock.until(from).await;
    let before = total(control);
    let start_ms = clock.ms();
    let ids = rules.into_iter().map(|r| control.add(r)).collect();
    Started {
        ids,
        before,
        start_ms,
    }
}

/// Removes the phase's faults at `to` and records it.
async fn end(
    clock: &Clock,
    control: &FaultControl,
    report: &mut FaultReport,
    name: &str,
    to: f64,
    started: Started,
) {
    clock.until(to).await;
    for id in started.ids {
        control.remove(id);
    }
    record(
        clock,
        control,
        report,
        name,
        started.start_ms,
        started.before,
    );
}

fn record(
    clock: &Clock,
    control: &FaultControl,
    report: &mut FaultReport,
    name: &str,
    start_ms: f64,
    before: u64,
) {
    let end_ms = clock.ms();
    let served = total(control).saturating_sub(before);
    report.phases.push(format!(
        "{name} {:.1}..{:.1} s: {served} faults served",
        start_ms / 1000.0,
        end_ms / 1000.0
    ));
    report.phase_windows.push(Phase {
        name: name.to_owned(),
        start_ms,
        end_ms,
        served,
    });
    report.faults_end_ms = end_ms;
}

/// The subject that most recently got a session token (polled every 100 ms until
/// `until`): a user in the middle of a visit.
async fn active_subject(control: &FaultControl, until: Instant) -> Option<String> {
    let before = control.counters().exchanges_by_subject;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = control.counters().exchanges_by_subject;
        if let Some((subject, _)) = now
            .iter()
            .find(|(s, n)| before.get(*s).copied().unwrap_or(0) < **n)
        {
            return Some(subject.clone());
        }
    }
    None
}

/// Runs the schedule alongside the load.
pub async fn run(ctx: FaultContext) -> FaultReport {
    let control = ctx.emulator.fault_control();
    let clock = Clock {
        start: Instant::now(),
        duration: ctx.duration,
    };
    let mut report = FaultReport::default();
    let at_start = control.counters();

    phase(
        &clock,
        &control,
        &mut report,
        "warm_up",
        (0.0, 0.08),
        vec![],
    )
    .await;
    let token = |fault, rate| FaultRule::token(fault).rate(rate);
    phase(
        &clock,
        &control,
        &mut report,
        "exchange_503_burst",
        (0.08, 0.20),
        vec![token(Fault::Status(503), FaultRate::percent(20))],
    )
    .await;
    phase(
        &clock,
        &control,
        &mut report,
        "exchange_outage",
        (0.20, 0.23),
        vec![token(Fault::Status(503), FaultRate::ALWAYS)],
    )
    .await;
    phase(
        &clock,
        &control,
        &mut report,
        "slow_domain",
        (0.23, 0.31),
        vec![token(Fault::Delay(SLOW_DOMAIN), FaultRate::ALWAYS)],
    )
    .await;
    phase(
        &clock,
        &control,
        &mut report,
        "connection_resets",
        (0.31, 0.39),
        vec![token(Fault::ResetConnection, FaultRate::percent(25))],
    )
    .await;
    phase(
        &clock,
        &control,
        &mut report,
        "garbage_responses",
        (0.39, 0.47),
        vec![token(Fault::GarbageBody, FaultRate::percent(25))],
    )
    .await;
    // One active user's session refused once by the control plane.
    clock.until(0.47).await;
    let before = total(&control);
    let start_ms = clock.ms();
    let index: HashMap<&str, usize> = ctx
        .subjects
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut rejection = None;
    // Until a second before the phase ends.
    let until = clock.start + clock.duration.mul_f64(0.55) - Duration::from_secs(1);
    if let Some(subject) = active_subject(&control, until).await {
        report.rejected_user = index.get(subject.as_str()).copied();
        rejection = Some(control.add(FaultRule::reject_sessions_of(&subject).times(1)));
    }
    clock.until(0.55).await;
    if let Some(id) = rejection {
        report.session_rejections = control.stats(id).served;
        control.remove(id);
    }
    record(
        &clock,
        &control,
        &mut report,
        "oci_401_one_user",
        start_ms,
        before,
    );

    // The domain rolls its signing key once its JWKS is down: tokens minted from now
    // on name a key the server has never fetched, so their validation needs a fetch
    // that fails (503 to the caller, not 401) until the JWKS is back.
    let down = begin(
        &clock,
        &control,
        0.55,
        vec![
            FaultRule::jwks(Fault::Status(503)),
            FaultRule::discovery(Fault::Status(503)),
        ],
    )
    .await;
    let jwks_down_ms = down.start_ms;
    match ctx.emulator.rotate_user_token_key().await {
        Ok(kid) => report.rotated_kid = Some(kid),
        Err(e) => report.rotation_error = Some(e.to_string()),
    }
    end(&clock, &control, &mut report, "jwks_down_503", 0.60, down).await;
    phase(
        &clock,
        &control,
        &mut report,
        "jwks_down_reset",
        (0.60, 0.65),
        vec![
            FaultRule::jwks(Fault::DropConnection),
            FaultRule::discovery(Fault::DropConnection),
        ],
    )
    .await;
    report.jwks_outage_ms = Some((jwks_down_ms, clock.ms()));

    if let Some(redis) = &ctx.redis {
        clock.until(0.65).await;
        let before = total(&control);
        let down_ms = clock.ms();
        redis.stop().await;
        clock.until(0.73).await;
        if let Err(e) = redis.start().await {
            report.redis_error = Some(e);
        }
        let up_ms = clock.ms();
        report.redis_outage_ms = Some((down_ms, up_ms));
        record(
            &clock,
            &control,
            &mut report,
            "redis_restart",
            down_ms,
            before,
        );
    }
    // Nothing is left injected from here on.
    control.clear();
    let faults_end_ms = report.faults_end_ms;
    phase(
        &clock,
        &control,
        &mut report,
        "recovery",
        (0.75, 1.0),
        vec![],
    )
    .await;
    report.faults_end_ms = faults_end_ms;

    let at_end = control.counters();
    for (key, n) in &at_end.faults_served {
        let n = n.saturating_sub(at_start.faults_served.get(key).copied().unwrap_or(0));
        if n > 0 {
            report.faults_served.insert(key.clone(), n);
        }
    }
    for (subject, n) in &at_end.token_faults_by_subject {
        let n = n.saturating_sub(
            at_start
                .token_faults_by_subject
                .get(subject)
                .copied()
                .unwrap_or(0),
        );
        if let (Some(&user), true) = (index.get(subject.as_str()), n > 0) {
            report.token_faults_by_user.insert(user, n);
        }
    }
    report
}

/// Judges the run from its records (see `fault_checks.rs`), stores the verdict in
/// the report, and returns the broken expectations (the driver's failures). `run`
/// holds what the driver knows (users, bound, token lifetime, counter deltas); the
/// schedule's own facts (windows, faults met) are filled in here.
pub fn check(
    report: &mut FaultReport,
    records: &[crate::client::CallRecord],
    run: checks::Facts,
) -> Vec<String> {
    let calls: Vec<checks::Call> = records
        .iter()
        .map(|r| {
            let json = crate::report::RecordJson::from(r);
            checks::Call {
                user: json.user,
                tool: json.tool.to_owned(),
                started_ms: json.started_ms,
                latency_ms: json.latency_ms,
                outcome: json.outcome,
            }
        })
        .collect();
    let facts = checks::Facts {
        faults_end_ms: report.faults_end_ms,
        redis_outage_ms: report.redis_outage_ms,
        jwks_outage_ms: report.jwks_outage_ms,
        token_faults_by_user: report.token_faults_by_user.clone(),
        session_rejections: report.session_rejections,
        ..run
    };
    let verdict = checks::judge(&calls, &facts);
    let mut failures = verdict.failures();
    if let Some(e) = &report.redis_error {
        failures.push(format!("redis did not start again: {e}"));
    }
    if let Some(e) = &report.rotation_error {
        failures.push(format!("the emulator could not roll its signing key: {e}"));
    }
    report.verdict = Some(verdict);
    failures
}
