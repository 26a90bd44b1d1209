//! `examples/quickstart.rs`, run as the README says, and in its real-endpoint mode
//! against an emulator started here (standing in for the identity domain and OCI).
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;
use std::time::Duration;

use oci_token_exchange::{Emulator, UserTokenOptions};

fn quickstart() -> Command {
    let mut command = Command::new(common::example("quickstart"));
    for var in [
        "OCI_DOMAIN_URL",
        "OCI_CLIENT_ID",
        "OCI_CLIENT_SECRET",
        "OCI_SUBJECT_TOKEN",
        "OCI_API_URL",
        "OCI_API_METHOD",
        "OCI_API_BODY",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn offline_run_exchanges_and_makes_two_accepted_calls() {
    let out = quickstart().output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("status: 200").count(), 2, "{stdout}");
    assert!(
        stdout.contains("emulator saw 1 exchange(s), 2 verified and 0 rejected"),
        "{stdout}"
    );
    // The session token never reaches the output.
    assert!(!stdout.contains("eyJ"), "{stdout}");
}

/// The quickstart configured for `emulator` as if it were a real domain and API.
fn configured(emulator: &Emulator, subject: &str, secret: &str) -> Command {
    let mut command = quickstart();
    command
        .env("OCI_DOMAIN_URL", emulator.domain_url().as_str())
        .env("OCI_CLIENT_ID", emulator.client_id())
        .env("OCI_CLIENT_SECRET", secret)
        .env("OCI_SUBJECT_TOKEN", subject)
        .env(
            "OCI_API_URL",
            format!("{}20160918/vcns", emulator.api_url()),
        );
    command
}

// The child process blocks one worker thread; the emulator is served by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_calls_the_configured_endpoints() {
    let emulator = Emulator::start().await.expect("emulator");
    let subject = emulator.mint_user_token("zoe@example.com");
    let secret = emulator.client_secret().expose_secret().to_owned();
    let out = configured(&emulator, &subject, &secret)
        .env("OCI_API_METHOD", "POST")
        .env("OCI_API_BODY", r#"{"a":1}"#)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("status: 200\n"), "{stdout}");
    assert!(
        stdout.contains(&Emulator::user_ocid("zoe@example.com")),
        "{stdout}"
    );
    assert!(stdout.contains(r#""body":{"a":1}"#), "{stdout}");
    assert_eq!(emulator.exchanges_for("zoe@example.com"), 1);

    // A wrong secret: one line on stderr, no secret in it, exit 2.
    let out = configured(&emulator, &subject, "not-the-secret")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid_client") && !stderr.contains("not-the-secret"),
        "{stderr}"
    );

    // An expired user token: the reauthentication error, before any network call.
    let expired = emulator.mint_user_token_with(&UserTokenOptions::new("zoe").ttl(Duration::ZERO));
    let before = emulator.counters().exchange_requests;
    let out = configured(&emulator, &expired, &secret)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    assert_eq!(emulator.counters().exchange_requests, before);

    // A non-2xx answer: status printed, exit 1.
    emulator.reject_next_session_tokens(1);
    let out = configured(&emulator, &subject, &secret)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("status: 401\n"));
}
