//! The expectations a load run under the fault schedule must meet, judged from its
//! call records and the schedule's report. Shared by the driver (`faults::check`)
//! and `tests/load_faults.rs` (from `--json --records`); depends on nothing but
//! `serde`.
//!
//! 1. `no_hang`: no call reaches its bound (outcome `timeout`, or a latency at the
//!    bound).
//! 2. `failures_explained`: a call (or connect) fails only with the structured tool
//!    error of a failed exchange (`tool_error:oci_auth_failed`) and only for a user
//!    whose exchange attempts met at least one injected token-endpoint fault; with
//!    `--redis`, a structured tool error that starts while Redis is down (or within
//!    [`GRACE_MS`] of its restart) is counted apart, as the store's failure; and
//!    `tool_error:reauthentication_required` ending after the visit's token expired
//!    (the visit's connect + the token's lifetime) is the user's own token running
//!    out (a slow call on a loaded machine), counted apart too; and a connect refused
//!    503 (`connect:unavailable`: the bearer check cannot fetch the domain's keys)
//!    that starts while the JWKS is down, or within [`JWKS_RETRY_MS`] +
//!    [`GRACE_MS`] of its return, is the outage's, counted apart (the domain rolled
//!    its key as the JWKS went down, so new tokens name a key not yet fetched).
//! 3. `no_identity_mix`: no `whoami` names another user.
//! 4. `recovered`: every call that starts [`GRACE_MS`] after the last fault ends
//!    (after the JWKS's return plus [`JWKS_RETRY_MS`], if later) succeeds, and
//!    every user makes at least one (so every user works again without a restart).
//! 5. `no_exchange_storm`: session tokens issued <= visits (users arriving with a
//!    new token) + session rejections served (each may force one refresh); and
//!    token-endpoint requests <= [`MAX_ATTEMPTS`] x (session tokens issued + failed
//!    exchanges seen by callers) + other grants (proxy logins and refreshes).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Settling time after a fault ends: requests already waiting out a delay or a retry
/// back-off when it ended may still meet it.
pub const GRACE_MS: f64 = 3000.0;
/// Token-endpoint attempts per exchange (the library's default `max_attempts`).
pub const MAX_ATTEMPTS: u64 = 3;
/// How soon the bearer check fetches the keys again after a failed fetch (the
/// library's retry delay).
pub const JWKS_RETRY_MS: f64 = 5000.0;
/// The outcome of a connect whose token's key could not be fetched (HTTP 503).
pub const KEYS_UNAVAILABLE: &str = "connect:unavailable";
/// The one outcome kind a failed exchange may give a call.
pub const EXCHANGE_FAILURE: &str = "tool_error:oci_auth_failed";

/// One call or connect of the run.
#[derive(Clone, Debug)]
pub struct Call {
    /// The user (index into the subjects).
    pub user: usize,
    /// `whoami`, `get`, `post` or `connect`.
    pub tool: String,
    /// Start, in ms from the run's start.
    pub started_ms: f64,
    /// Duration in ms.
    pub latency_ms: f64,
    /// `ok` or the error kind.
    pub outcome: String,
}

/// What the checks need besides the calls.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Users (subjects) in the run.
    pub users: usize,
    /// Every call's bound, in ms.
    pub bound_ms: f64,
    /// Lifetime of the users' tokens (minted at each visit's connect), in ms.
    pub token_ttl_ms: f64,
    /// When the last fault ended, in ms from the run's start.
    pub faults_end_ms: f64,
    /// When Redis was down (stopped, restarted), in ms, if it was.
    pub redis_outage_ms: Option<(f64, f64)>,
    /// When the JWKS was down (its key rolled at the start), in ms.
    pub jwks_outage_ms: Option<(f64, f64)>,
    /// Injected token-endpoint faults met by each user's exchange attempts.
    pub token_faults_by_user: BTreeMap<usize, u64>,
    /// Control-plane session rejections served (each may force one refresh).
    pub session_rejections: u64,
    /// Session tokens issued during the run.
    pub exchanges: u64,
    /// Token-endpoint requests during the run.
    pub exchange_requests: u64,
    /// Other token grants (proxy code and refresh grants) during the run.
    pub other_grants: u64,
}

/// One expectation and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Expectation {
    /// Its name (see the module's documentation).
    pub name: &'static str,
    /// Whether it held.
    pub held: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// The judgement of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Calls (tool calls, not connects).
    pub calls: u64,
    /// Connects (one per visit).
    pub visits: u64,
    /// Failed calls and connects.
    pub failed: u64,
    /// Failed with the exchange's structured error, for a user whose exchange met
    /// injected faults.
    pub failed_explained: u64,
    /// Failed with a structured error while Redis was down.
    pub failed_during_redis_outage: u64,
    /// Failed asking for a new login after the visit's token expired.
    pub failed_token_expired: u64,
    /// Connects refused 503 while the JWKS was down (their token's key unfetched).
    pub failed_keys_unavailable: u64,
    /// Failed otherwise (must be 0), with up to 10 examples.
    pub failed_unexplained: u64,
    pub unexplained_examples: Vec<String>,
    /// Failed exchange-error calls beyond the faults their user met (a user's
    /// failed calls minus its faulted token requests, summed over users): calls that
    /// failed without a faulted exchange attempt of their own, because the library
    /// remembered a non-retryable failure (`REFUSED_TOKEN_MEMORY`, 30 s). Reported,
    /// not an expectation: the failure is still the caller's own user's.
    pub failed_without_own_attempt: u64,
    /// Failures by kind.
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Calls at their bound.
    pub hung: u64,
    /// `whoami` answers naming another user.
    pub identity_mismatch: u64,
    /// Calls started after the faults (plus the grace), and how many failed.
    pub calls_after_faults: u64,
    pub failed_after_faults: u64,
    /// Users with a successful call after the faults, of all users.
    pub users_ok_after_faults: u64,
    pub users: u64,
    /// Session tokens issued, and their bound (visits + session rejections).
    pub exchanges: u64,
    pub exchange_bound: u64,
    /// Token-endpoint requests, and their bound.
    pub exchange_requests: u64,
    pub exchange_request_bound: u64,
    /// Every expectation, in order.
    pub expectations: Vec<Expectation>,
}

impl Verdict {
    /// The broken expectations, one line each.
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.expectations
            .iter()
            .filter(|e| !e.held)
            .map(|e| format!("fault expectation {} broken: {}", e.name, e.detail))
            .collect()
    }
}

/// Judges a run.
#[must_use]
pub fn judge(calls: &[Call], facts: &Facts) -> Verdict {
    let mut v = Verdict {
        users: facts.users as u64,
        exchanges: facts.exchanges,
        exchange_requests: facts.exchange_requests,
        ..Verdict::default()
    };
    // A key rolled during the JWKS outage is fetched within the retry delay of
    // the JWKS's return.
    let after = facts.jwks_outage_ms.map_or(facts.faults_end_ms, |(_, up)| {
        facts.faults_end_ms.max(up + JWKS_RETRY_MS)
    }) + GRACE_MS;
    let mut ok_after = BTreeSet::new();
    let mut exchange_failures_by_user: BTreeMap<usize, u64> = BTreeMap::new();
    let mut exchange_failures = 0_u64;
    // Each user's visit starts (connects), sorted, to find a call's token expiry.
    let mut visits: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.tool == "connect") {
        visits.entry(call.user).or_default().push(call.started_ms);
    }
    for starts in visits.values_mut() {
        starts.sort_by(f64::total_cmp);
    }
    let token_expired = |call: &Call| {
        let visit = visits.get(&call.user).and_then(|starts| {
            starts
                .iter()
                .rev()
                .find(|&&s| s <= call.started_ms)
                .copied()
        });
        visit.is_some_and(|start| {
            call.started_ms + call.latency_ms >= start + facts.token_ttl_ms - GRACE_MS
        })
    };
    for call in calls {
        let connect = call.tool == "connect";
        if connect {
            v.visits += 1;
        } else {
            v.calls += 1;
        }
        let at_bound = call.latency_ms >= facts.bound_ms && facts.bound_ms > 0.0;
        if call.outcome == "timeout" || at_bound {
            v.hung += 1;
        }
        if call.started_ms >= after {
            if !connect {
                v.calls_after_faults += 1;
            }
            if call.outcome == "ok" {
                ok_after.insert(call.user);
            } else if !(call.outcome == "tool_error:reauthentication_required"
                && token_expired(call))
            {
                v.failed_after_faults += 1;
            }
        }
        if call.outcome == "ok" {
            continue;
        }
        v.failed += 1;
        *v.failed_by_kind.entry(call.outcome.clone()).or_insert(0) += 1;
        if call.outcome == "identity_mismatch" {
            v.identity_mismatch += 1;
        }
        let met_faults = facts
            .token_faults_by_user
            .get(&call.user)
            .copied()
            .unwrap_or(0);
        let in_jwks_outage = facts.jwks_outage_ms.is_some_and(|(down, up)| {
            call.started_ms >= down && call.started_ms <= up + JWKS_RETRY_MS + GRACE_MS
        });
        let in_redis_outage = facts
            .redis_outage_ms
            .is_some_and(|(down, up)| call.started_ms >= down && call.started_ms <= up + GRACE_MS);
        if call.outcome == EXCHANGE_FAILURE && met_faults > 0 {
            v.failed_explained += 1;
            exchange_failures += 1;
            *exchange_failures_by_user.entry(call.user).or_insert(0) += 1;
        } else if in_redis_outage && call.outcome.starts_with("tool_error:") {
            v.failed_during_redis_outage += 1;
        } else if call.outcome == "tool_error:reauthentication_required" && token_expired(call) {
            v.failed_token_expired += 1;
        } else if call.outcome == KEYS_UNAVAILABLE && in_jwks_outage {
            v.failed_keys_unavailable += 1;
        } else {
            v.failed_unexplained += 1;
            if v.unexplained_examples.len() < 10 {
                v.unexplained_examples.push(format!(
                    "user {} {} at {:.1} s: {} (exchange faults met: {met_faults})",
                    call.user,
                    call.tool,
                    call.started_ms / 1000.0,
                    call.outcome
                ));
            }
        }
    }
    v.users_ok_after_faults = ok_after.len() as u64;
    v.failed_without_own_attempt = exchange_failures_by_user
        .iter()
        .map(|(user, failed)| {
            failed.saturating_sub(facts.token_faults_by_user.get(user).copied().unwrap_or(0))
        })
        .sum();
    v.exchange_bound = v.visits + facts.session_rejections;
    v.exchange_request_bound = MAX_ATTEMPTS
        .saturating_mul(facts.exchanges + exchange_failures)
        .saturating_add(facts.other_grants);

    let mut expect = |name, held, detail: String| {
        v.expectations.push(Expectation { name, held, detail });
    };
    expect(
        "no_hang",
        v.hung == 0,
        format!(
            "{} of {} calls and connects at the {} ms bound",
            v.hung,
            calls.len(),
            facts.bound_ms
        ),
    );
    expect(
        "failures_explained",
        v.failed_unexplained == 0,
        format!(
            "{} failed: {} by their own exchange's faults ({EXCHANGE_FAILURE}), {} while Redis \
             was down, {} with their token expired, {} refused while the JWKS was down, {} \
             otherwise {:?}",
            v.failed,
            v.failed_explained,
            v.failed_during_redis_outage,
            v.failed_token_expired,
            v.failed_keys_unavailable,
            v.failed_unexplained,
            v.unexplained_examples
        ),
    );
    expect(
        "no_identity_mix",
        v.identity_mismatch == 0,
        format!("{} whoami answers named another user", v.identity_mismatch),
    );
    expect(
        "recovered",
        v.failed_after_faults == 0 && v.users_ok_after_faults == v.users,
        format!(
            "after {:.1} s (the faults, +{GRACE_MS} ms): {} calls, {} failed; {} of {} users made a \
             successful call",
            after / 1000.0,
            v.calls_after_faults,
            v.failed_after_faults,
            v.users_ok_after_faults,
            v.users
        ),
    );
    expect(
        "no_exchange_storm",
        v.exchanges <= v.exchange_bound && v.exchange_requests <= v.exchange_request_bound,
        format!(
            "session tokens {} <= visits {} + session rejections {} = {}; token requests {} \
             <= {MAX_ATTEMPTS} x (tokens {} + failed exchanges {exchange_failures}) + other \
             grants {} = {}",
            v.exchanges,
            v.visits,
            facts.session_rejections,
            v.exchange_bound,
            v.exchange_requests,
            v.exchanges,
            facts.other_grants,
            v.exchange_request_bound
        ),
    );
    v
}
