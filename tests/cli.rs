//! `examples/sign.rs`, run as a user would: on Oracle's two documented requests.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::{Command, Output};

use serde_json::Value;

const TENANCY: &str =
    "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
const USER: &str = "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
const FINGERPRINT: &str = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
const DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";

fn run(args: &[&str]) -> Output {
    Command::new(common::example("sign"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("example runs")
}

fn vector(id: &str) -> Value {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/signing/vectors.json")).expect("json");
    doc["vectors"]
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v["id"] == id)
        .cloned()
        .expect("vector exists")
}

fn key_id() -> String {
    format!("{TENANCY}/{USER}/{FINGERPRINT}")
}

#[test]
fn documented_get_prints_the_documented_headers() {
    let v = vector("doc-get-instances");
    let key_id = key_id();
    let out = run(&[
        "--key",
        "fixtures/signing/key.pem",
        "--key-id",
        &key_id,
        "--url",
        v["url"].as_str().expect("url"),
        "--date",
        DATE,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], format!("date: {DATE}"));
    assert_eq!(lines[1], "host: iaas.us-phoenix-1.oraclecloud.com");
    let sig = v["signature"].as_str().expect("signature");
    assert!(lines[2].starts_with(
        "authorization: Signature version=\"1\",headers=\"date (request-target) host\""
    ));
    assert!(
        lines[2].ends_with(&format!("signature=\"{sig}\"")),
        "{}",
        lines[2]
    );
}

#[test]
fn documented_post_prints_body_headers_and_verbose_signing_string() {
    let v = vector("doc-post-volumeattachments");
    let key_id = key_id();
    let out = run(&[
        "--key",
        "fixtures/signing/key.pem",
        "--key-id",
        &key_id,
        "--url",
        v["url"].as_str().expect("url"),
        "--method",
        "POST",
        "--header",
        "content-type: application/json",
        "--body",
        v["body"].as_str().expect("body"),
        "--date",
        DATE,
        "--verbose",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let sig = v["signature"].as_str().expect("signature");
    let expected_prefix = "date: Thu, 05 Jan 2014 21:31:40 GMT\n\
        host: iaas.us-phoenix-1.oraclecloud.com\n\
        content-length: 316\n\
        content-type: application/json\n\
        x-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=\n\
        authorization: Signature version=\"1\",headers=\"date (request-target) host content-length content-type x-content-sha256\",";
    assert!(stdout.starts_with(expected_prefix), "{stdout}");
    assert!(
        stdout.ends_with(&format!("signature=\"{sig}\"\n")),
        "{stdout}"
    );

    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    let expected = format!(
        "--- signing string ---\n{}\n--- end ---\n",
        v["signing_string"].as_str().expect("signing string")
    );
    assert_eq!(stderr, expected);
}

#[test]
fn bad_input_is_one_line_and_exit_2_without_secrets() {
    let secret_token = "eyJsecret\"token";
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--bogus"],
        vec![
            "--key",
            "fixtures/keys/ec-p256-pkcs8.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
        ],
        vec![
            "--key",
            "fixtures/keys/rsa2048-encrypted-pkcs8.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
        ],
        vec![
            "--key",
            "does/not/exist.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
        ],
        vec![
            "--key",
            "fixtures/signing/key.pem",
            "--session-token",
            secret_token,
            "--url",
            "https://h/",
        ],
        vec![
            "--key",
            "fixtures/signing/key.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "not a url",
        ],
        vec![
            "--key",
            "fixtures/signing/key.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
            "--date",
            "yesterday",
        ],
        vec![
            "--key",
            "fixtures/signing/key.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
            "--method",
            "FROB",
            "--body",
            "x",
        ],
        vec![
            "--key",
            "fixtures/signing/key.pem",
            "--key-id",
            "a/b/c",
            "--url",
            "https://h/",
            "--header",
            "no colon",
        ],
    ];
    for args in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("sign: "), "{stderr}");
        assert!(!stderr.contains("eyJsecret"), "{stderr}");
    }
}

/// Issue 9, defect 6, through the CLI: `--verbose` printed the `opc-obo-token`
/// value in the signing string; stdout still carries the header as sent.
#[test]
fn verbose_redacts_the_obo_token() {
    let key_id = key_id();
    let obo = "eyJobo.cli-secret-obo-value.sig";
    let out = run(&[
        "--key",
        "fixtures/signing/key.pem",
        "--key-id",
        &key_id,
        "--url",
        "https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances",
        "--header",
        &format!("opc-obo-token: {obo}"),
        "--date",
        DATE,
        "--verbose",
    ]);
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("opc-obo-token: [redacted]\n"), "{stderr}");
    assert!(!stderr.contains(obo), "{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(stdout.contains("opc-obo-token\""), "{stdout}");
}
