//! The load driver (`examples/load/`) run briefly, as CI runs it: its JSON report
//! must show every call answered as its caller, one token exchange per user, the
//! burst served, and after a short soak memory back near its baseline with the
//! signer cache emptied. Speeds are not asserted here (benchmarks do that): only
//! counts, identities and bounds.
#![cfg(all(feature = "mcp", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Runs the driver with `args` (plus `--json`), bounded in time; returns its exit
/// code and report.
fn drive(args: &[&str], limit: Duration) -> (i32, Value) {
    let mut child = Command::new(common::example("load"))
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the driver starts");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the driver ran longer than {limit:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (status.code().unwrap_or(-1), report)
}

/// Zero errors, no hung call, no identity mismatch, `calls` calls answered.
fn assert_clean(report: &Value, calls: u64) {
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    assert_eq!(report["hung"], 0, "{report:#}");
    assert_eq!(report["identity_mismatch"], 0, "{report:#}");
    assert_eq!(report["calls"], calls, "{report:#}");
    assert_eq!(report["ok"], calls, "{report:#}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");
}

#[test]
fn every_user_is_answered_as_themselves_with_one_exchange_each() {
    let (code, report) = drive(
        &["-n", "12", "-m", "6", "-c", "6"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{report:#}");
    assert_clean(&report, 12 * 6);
    assert_eq!(report["exchanges"], 12, "one exchange per user: {report:#}");
    assert_eq!(report["latency"]["count"], 72);
    assert_eq!(report["first_call"]["count"], 12);
    assert!(
        report["key_generations"].as_u64().unwrap() >= 12,
        "{report:#}"
    );
    assert!(
        report["rss"]["peak_kib"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

#[test]
fn the_stateless_server_answers_the_same_calls() {
    let (code, report) = drive(
        &["-n", "4", "-m", "6", "-c", "4", "--stateless", "--records"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{report:#}");
    assert_clean(&report, 4 * 6);
    assert_eq!(report["exchanges"], 4, "{report:#}");
    // The per-call records name each call's user and outcome: 6 calls and a connect
    // for each of the 4 users.
    let records = report["records"].as_array().unwrap();
    assert_eq!(records.len(), 4 * 7);
    for user in 0..4_u64 {
        let mine: Vec<_> = records.iter().filter(|r| r["user"] == user).collect();
        assert_eq!(mine.len(), 7, "{records:#?}");
        assert!(mine.iter().all(|r| r["outcome"] == "ok"), "{mine:#?}");
    }
}

#[test]
fn a_burst_of_new_users_after_idling_is_served() {
    let (code, report) = drive(&["--burst", "10", "--idle", "2"], Duration::from_secs(120));
    assert_eq!(code, 0, "{report:#}");
    assert_clean(&report, 10);
    assert_eq!(report["exchanges"], 10, "{report:#}");
    assert_eq!(report["first_call"]["count"], 10, "{report:#}");
}

#[test]
fn after_a_short_soak_memory_returns_and_the_caches_empty() {
    let (code, report) = drive(
        &[
            "--soak",
            "30",
            "--token-ttl",
            "10",
            "-n",
            "300",
            "-c",
            "12",
            "-m",
            "6",
        ],
        Duration::from_secs(150),
    );
    let soak = &report["soak"];
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["identity_mismatch"], 0, "{report:#}");
    assert_eq!(report["hung"], 0, "{report:#}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    assert!(soak["visits"].as_u64().unwrap() >= 100, "{report:#}");
    assert_eq!(soak["signer_cache_entries"], 0, "{report:#}");
    assert!(
        soak["rss_growth_pct"].as_f64().unwrap() <= 10.0,
        "{report:#}"
    );
    assert!(
        soak["key_pool_available"].as_u64().unwrap() <= soak["key_pool_bound"].as_u64().unwrap(),
        "{report:#}"
    );
    // One exchange per visit (each brings a fresh token), no storm of refreshes.
    let visits = soak["visits"].as_u64().unwrap();
    let exchanges = report["exchanges"].as_u64().unwrap();
    assert!(
        exchanges <= visits,
        "{exchanges} exchanges for {visits} visits"
    );
}

#[cfg(feature = "oauth-proxy")]
#[test]
fn users_log_in_through_the_proxy_and_are_answered_as_themselves() {
    let (code, report) = drive(
        &["--proxy", "-n", "4", "-m", "3", "-c", "4"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{report:#}");
    assert_clean(&report, 4 * 3);
    assert_eq!(report["logins"], 4, "{report:#}");
    assert_eq!(report["exchanges"], 4, "{report:#}");
}

#[cfg(feature = "redis")]
#[test]
fn with_its_own_redis_the_driver_counts_redis_commands() {
    if common::redis::RedisServer::start().is_none() {
        return; // no redis-server; the notice says why
    }
    let (code, report) = drive(
        &["--redis", "-n", "4", "-m", "3", "-c", "4"],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{report:#}");
    assert_clean(&report, 4 * 3);
    assert!(report["redis_commands"].as_u64().unwrap() > 0, "{report:#}");
}
