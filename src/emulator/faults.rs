//! Standing faults: rules that keep failing a deterministic fraction of one
//! endpoint's requests until removed (or until they have fired `times` times), for
//! fault schedules run while a load driver is calling.
//!
//! The queued faults of [`Emulator::inject_fault`](super::Emulator::inject_fault)
//! and [`Emulator::reject_next_session_tokens`](super::Emulator::reject_next_session_tokens)
//! still work and are consumed first; standing rules apply to the requests they
//! leave alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Counters, Emulator, Fault, State};

/// The endpoint a standing fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultEndpoint {
    /// The token endpoint (`/oauth2/v1/token`), any grant.
    Token,
    /// The JWKS (`/admin/v1/SigningCert/jwk`).
    Jwks,
    /// OIDC discovery (`/.well-known/openid-configuration`).
    Discovery,
    /// The control plane (signed API calls): only session rejections
    /// ([`FaultRule::reject_sessions_of`]).
    ControlPlane,
}

impl FaultEndpoint {
    /// The endpoint's name in [`Counters::faults_served`] keys: `token`, `jwks`,
    /// `discovery`, `api`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Jwks => "jwks",
            Self::Discovery => "discovery",
            Self::ControlPlane => "api",
        }
    }
}

/// A deterministic fraction of requests: `num` out of every `den`, spread evenly
/// (request `i`, counted from 0 among the requests a rule sees, meets the fault when
/// `floor((i + 1) * num / den) > floor(i * num / den)`; so 20 % fails requests 4, 9,
/// 14, ... and any 5 consecutive requests hold exactly one failure). Reproducible:
/// no randomness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRate {
    num: u32,
    den: u32,
}

impl FaultRate {
    /// Every request.
    pub const ALWAYS: Self = Self { num: 1, den: 1 };

    /// `num` requests out of every `den` (`num >= den` means every request; `num == 0`
    /// or `den == 0` none).
    #[must_use]
    pub fn ratio(num: u32, den: u32) -> Self {
        if den == 0 {
            Self { num: 0, den: 1 }
        } else {
            Self {
                num: num.min(den),
                den,
            }
        }
    }

    /// `percent` requests out of every 100.
    #[must_use]
    pub fn percent(percent: u32) -> Self {
        Self::ratio(percent, 100)
    }

    /// One request out of every `n` (the `n`-th, `2n`-th, ...).
    #[must_use]
    pub fn one_in(n: u32) -> Self {
        Self::ratio(1, n)
    }

    /// Whether the `i`-th request (from 0) meets the fault.
    fn hits(self, i: u64) -> bool {
        let (num, den) = (u128::from(self.num), u128::from(self.den));
        let i = u128::from(i);
        (i + 1) * num / den > i * num / den
    }
}

#[derive(Clone, Debug)]
enum Action {
    /// Answer the endpoint's request with this fault.
    Fault(Fault),
    /// Reject a correctly signed API call whose session token's `sub` is one of these
    /// (the user OCID of a subject, or the value given).
    RejectSessions(Vec<String>),
}

/// A standing fault: what an endpoint does instead of answering, on which fraction
/// of its requests, and how many times at most. Add it with [`FaultControl::add`].
#[derive(Clone, Debug)]
pub struct FaultRule {
    endpoint: FaultEndpoint,
    action: Action,
    rate: FaultRate,
    times: Option<u64>,
}

impl FaultRule {
    /// `fault` on every token-endpoint request (any grant). See [`Fault`].
    #[must_use]
    pub fn token(fault: Fault) -> Self {
        Self::on(FaultEndpoint::Token, fault)
    }

    /// `fault` on every JWKS request ([`Fault::MismatchedKey`] does nothing there).
    #[must_use]
    pub fn jwks(fault: Fault) -> Self {
        Self::on(FaultEndpoint::Jwks, fault)
    }

    /// `fault` on every discovery request ([`Fault::MismatchedKey`] does nothing
    /// there).
    #[must_use]
    pub fn discovery(fault: Fault) -> Self {
        Self::on(FaultEndpoint::Discovery, fault)
    }

    /// `fault` on `endpoint`'s requests. On [`FaultEndpoint::ControlPlane`] every fault
    /// means a 401 rejection of any caller's session (prefer
    /// [`reject_sessions_of`](Self::reject_sessions_of)).
    #[must_use]
    pub fn on(endpoint: FaultEndpoint, fault: Fault) -> Self {
        let action = if endpoint == FaultEndpoint::ControlPlane {
            Action::RejectSessions(Vec::new())
        } else {
            Action::Fault(fault)
        };
        Self {
            endpoint,
            action,
            rate: FaultRate::ALWAYS,
            times: None,
        }
    }

    /// The control plane answers 401 `NotAuthenticated` (as OCI does for a session
    /// token it no longer accepts) to correctly signed calls made with a session
    /// token of `subject`: the `sub` of the user token it was exchanged for (e.g.
    /// `alice@example.com`) or the UPST's own `sub` (the user OCID,
    /// [`Emulator::user_ocid`]). Other users' calls are untouched and not counted.
    #[must_use]
    pub fn reject_sessions_of(subject: &str) -> Self {
        Self {
            endpoint: FaultEndpoint::ControlPlane,
            action: Action::RejectSessions(vec![Emulator::user_ocid(subject), subject.to_owned()]),
            rate: FaultRate::ALWAYS,
            times: None,
        }
    }

    /// Applies to this fraction of the requests the rule sees (default: all).
    #[must_use]
    pub fn rate(mut self, rate: FaultRate) -> Self {
        self.rate = rate;
        self
    }

    /// Fires at most `n` times, then lets requests through (default: until removed).
    #[must_use]
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }
}

/// Identifies a standing fault added with [`FaultControl::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(u64);

/// What a standing fault has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Requests the rule was asked about (on its endpoint, of its subject).
    pub seen: u64,
    /// Requests it answered with its fault.
    pub served: u64,
    /// Whether it still applies (not removed, `times` not used up).
    pub active: bool,
}

struct Rule {
    id: FaultId,
    rule: FaultRule,
    stats: FaultStats,
}

#[derive(Default)]
pub(crate) struct Rules {
    next_id: u64,
    active: Vec<Rule>,
    /// Statistics of removed or used-up rules.
    finished: HashMap<FaultId, FaultStats>,
}

/// What the standing rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Total delay of the `Delay` rules that fired (before answering).
    pub(crate) delay: Duration,
    /// The first non-delay fault that fired.
    pub(crate) fault: Option<Fault>,
}

impl Rules {
    /// Runs the rules of `endpoint` over one request (whose session subject is
    /// `subject` on the control plane), counting what they do. Delays add up; the
    /// first other fault wins and later rules do not see the request.
    pub(crate) fn decide(
        &mut self,
        endpoint: FaultEndpoint,
        subject: Option<&str>,
        counters: &Mutex<Counters>,
    ) -> Decision {
        let mut decision = Decision::default();
        let mut used_up = Vec::new();
        for rule in &mut self.active {
            if rule.rule.endpoint != endpoint {
                continue;
            }
            let fault = match &rule.rule.action {
                Action::Fault(fault) => fault.clone(),
                Action::RejectSessions(subjects) => {
                    let matches = subjects.is_empty()
                        || subject.is_some_and(|s| subjects.iter().any(|x| x == s));
                    if !matches {
                        continue;
                    }
                    Fault::Status(401)
                }
            };
            let i = rule.stats.seen;
            rule.stats.seen += 1;
            if !rule.rule.rate.hits(i) {
                continue;
            }
            rule.stats.served += 1;
            if rule.rule.times.is_some_and(|n| rule.stats.served >= n) {
                used_up.push(rule.id);
            }
            let kind = if endpoint == FaultEndpoint::ControlPlane {
                "session_rejected"
            } else {
                fault.name()
            };
            count_fault(counters, endpoint, kind);
            if let Fault::Delay(delay) = fault {
                decision.delay = decision.delay.saturating_add(delay);
            } else {
                decision.fault = Some(fault);
                break;
            }
        }
        for id in used_up {
            self.finish(id);
        }
        decision
    }

    fn finish(&mut self, id: FaultId) -> bool {
        let Some(at) = self.active.iter().position(|r| r.id == id) else {
            return false;
        };
        let rule = self.active.remove(at);
        let stats = FaultStats {
            active: false,
            ..rule.stats
        };
        self.finished.insert(id, stats);
        true
    }
}

/// Counts one fault served (`<endpoint>/<kind>` in [`Counters::faults_served`]).
pub(crate) fn count_fault(counters: &Mutex<Counters>, endpoint: FaultEndpoint, kind: &str) {
    let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
    counters.faults_served_total += 1;
    *counters
        .faults_served
        .entry(format!("{}/{kind}", endpoint.name()))
        .or_insert(0) += 1;
}

impl Fault {
    /// The fault's name in [`Counters::faults_served`] keys: `status`,
    /// `too_many_requests`, `delay`, `garbage_body`, `drop_connection`,
    /// `reset_connection`, `redirect`, `respond`, `mismatched_key`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status(_) => "status",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Delay(_) => "delay",
            Self::GarbageBody => "garbage_body",
            Self::DropConnection => "drop_connection",
            Self::ResetConnection => "reset_connection",
            Self::Redirect => "redirect",
            Self::Respond { .. } => "respond",
            Self::MismatchedKey => "mismatched_key",
        }
    }
}

/// A cheap, cloneable, thread-safe handle on a running emulator's faults, for a
/// fault schedule running in its own task ([`Emulator::fault_control`]). It keeps
/// the emulator's state alive but not its server: once the [`Emulator`] is dropped,
/// nothing answers.
#[derive(Clone)]
pub struct FaultControl {
    pub(crate) state: Arc<State>,
}

impl fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultControl")
            .field("issuer", &self.state.issuer)
            .finish_non_exhaustive()
    }
}

impl FaultControl {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.state
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a standing fault; it applies from the next request until
    /// [`remove`](Self::remove)d (or used up).
    #[must_use = "the id removes the fault and reads its statistics"]
    pub fn add(&self, rule: FaultRule) -> FaultId {
        let mut rules = self.rules();
        rules.next_id += 1;
        let id = FaultId(rules.next_id);
        if rule.times == Some(0) {
            rules.finished.insert(id, FaultStats::default());
        } else {
            rules.active.push(Rule {
                id,
                rule,
                stats: FaultStats {
                    active: true,
                    ..FaultStats::default()
                },
            });
        }
        id
    }

    /// Stops a standing fault (requests already waiting out a delay finish it); does
    /// nothing if it is no longer active.
    pub fn remove(&self, id: FaultId) {
        self.rules().finish(id);
    }

    /// Stops every standing fault, and drops queued token faults
    /// ([`Emulator::inject_fault`]) and pending session rejections
    /// ([`Emulator::reject_next_session_tokens`]): the emulator answers normally
    /// from the next request.
    pub fn clear(&self) {
        {
            let mut rules = self.rules();
            let ids: Vec<FaultId> = rules.active.iter().map(|r| r.id).collect();
            for id in ids {
                rules.finish(id);
            }
        }
        self.state
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.state
            .reject_next_upsts
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// What a standing fault has done (zeros for an unknown id).
    #[must_use]
    pub fn stats(&self, id: FaultId) -> FaultStats {
        let rules = self.rules();
        rules
            .active
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.stats)
            .or_else(|| rules.finished.get(&id).copied())
            .unwrap_or_default()
    }

    /// How many standing faults are active.
    #[must_use]
    pub fn active(&self) -> usize {
        self.rules().active.len()
    }

    /// A snapshot of the emulator's counters (as [`Emulator::counters`]).
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.state.counters().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::FaultRate;

    fn hits(rate: FaultRate, n: u64) -> Vec<u64> {
        (0..n).filter(|&i| rate.hits(i)).collect()
    }

    #[test]
    fn rates_spread_evenly() {
        assert_eq!(hits(FaultRate::percent(20), 15), vec![4, 9, 14]);
        assert_eq!(hits(FaultRate::one_in(3), 7), vec![2, 5]);
        assert_eq!(hits(FaultRate::ALWAYS, 3), vec![0, 1, 2]);
        assert_eq!(hits(FaultRate::ratio(0, 5), 10), Vec::<u64>::new());
        assert_eq!(hits(FaultRate::ratio(1, 0), 10), Vec::<u64>::new());
        assert_eq!(hits(FaultRate::ratio(9, 4), 3), vec![0, 1, 2]);
        assert_eq!(hits(FaultRate::ratio(2, 5), 10).len(), 4);
        assert!(FaultRate::ALWAYS.hits(u64::MAX));
    }
}
