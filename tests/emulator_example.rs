//! `examples/emulator.rs`: the emulator as a standalone process, as
//! `benches/compare/` and servers in other languages use it.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The running example; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emulator() -> Command {
    let mut command = Command::new(common::example("emulator"));
    command
        .env_remove("EMULATOR_REDIRECT_URIS")
        .env_remove("EMULATOR_BIND")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts the example and reads its four `key: value` lines (at most 30 s).
fn start(mut command: Command) -> (Running, HashMap<String, String>) {
    let mut child = command.spawn().expect("the example starts");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(4) {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = HashMap::new();
    for _ in 0..4 {
        let line = receive
            .recv_timeout(Duration::from_secs(30))
            .expect("the example prints its endpoints");
        let (key, value) = line.split_once(": ").expect("key: value");
        printed.insert(key.to_owned(), value.to_owned());
    }
    (running, printed)
}

#[tokio::test]
async fn prints_its_endpoints_and_logs_in_at_exactly_the_given_redirect_uris() {
    let mut command = emulator();
    command.env(
        "EMULATOR_REDIRECT_URIS",
        "http://127.0.0.1:1/a/callback, http://127.0.0.1:2/b/callback,",
    );
    let (_running, printed) = start(command);
    assert_eq!(printed["client_id"], "emulator-client");
    assert_eq!(printed["client_secret"], "emulator-secret");
    let domain = printed["domain"].trim_end_matches('/').to_owned();
    assert!(domain.starts_with("http://127.0.0.1:"), "{domain}");
    assert!(printed["api"].starts_with("http://127.0.0.1:"));

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let discovery: serde_json::Value = http
        .get(format!("{domain}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], domain.as_str());

    let authorize = |redirect_uri: &'static str| {
        let url = url::Url::parse_with_params(
            &format!("{domain}/oauth2/v1/authorize"),
            [
                ("client_id", printed["client_id"].as_str()),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
            ],
        )
        .unwrap();
        http.get(url).send()
    };
    for registered in [
        "http://127.0.0.1:1/a/callback",
        "http://127.0.0.1:2/b/callback",
    ] {
        let response = authorize(registered).await.unwrap();
        assert_eq!(response.status(), 302, "{registered}");
        let location = response.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with(&format!("{registered}?code=")),
            "{location}"
        );
    }
    let response = authorize("http://127.0.0.1:3/c/callback").await.unwrap();
    assert_eq!(response.status(), 400, "an unregistered redirect URI");
}

#[test]
fn refuses_a_bind_address_it_cannot_honour() {
    let out = emulator()
        .env("EMULATOR_BIND", "127.0.0.1:8080")
        .output()
        .expect("the example runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EMULATOR_BIND"), "{stderr}");
}
