//! The fault schedule run during load (`--faults`).

use std::sync::Arc;
use std::time::Duration;

use oci_token_exchange::Emulator;

use crate::redis::RedisControl;

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

/// What the schedule did, merged into the driver's report.
#[derive(Debug, Default, serde::Serialize)]
pub struct FaultReport {
    /// The phases run, in order.
    pub phases: Vec<String>,
}

/// Runs the schedule alongside the load.
pub async fn run(ctx: FaultContext) -> FaultReport {
    let _ = ctx;
    FaultReport::default()
}
