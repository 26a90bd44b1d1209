//! The emulator's standing faults: a deterministic fraction of token, JWKS,
//! discovery or control-plane requests fail until the fault is removed (or used up),
//! thread-safely, counted per endpoint and kind; the queued faults keep working.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use oci_token_exchange::{
    Clock as _, Emulator, ErrorKind, Fault, FaultControl, FaultEndpoint, FaultRate, FaultRule,
    KeyId, SecretString, SigningKey, SigningParams, SystemClock, TokenExchange, Upst,
    sign_reqwest_request,
};

static KEY: LazyLock<SigningKey> = LazyLock::new(|| {
    SigningKey::from_pem(include_str!("../fixtures/keys/rsa2048-pkcs8.pem")).expect("key")
});

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(BOUND).build().unwrap()
}

/// One raw token-endpoint request without client credentials: answered 401
/// `invalid_client` normally, or by the fault. `Err` for a dropped connection.
async fn token_request(http: &reqwest::Client, emulator: &Emulator) -> Result<(u16, String), ()> {
    let url = emulator.domain_url().join("/oauth2/v1/token").unwrap();
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token")
        .send()
        .await
        .map_err(|e| assert!(!e.is_timeout(), "{e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

async fn get(http: &reqwest::Client, emulator: &Emulator, path: &str) -> Result<u16, ()> {
    let url = emulator.domain_url().join(path).unwrap();
    http.get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| assert!(!e.is_timeout(), "{e}"))
}

fn served(control: &FaultControl, key: &str) -> u64 {
    control
        .counters()
        .faults_served
        .get(key)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_fraction_of_token_requests_fail_until_the_fault_is_removed() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let id = control.add(FaultRule::token(Fault::Status(503)).rate(FaultRate::percent(20)));
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(token_request(&http, &emulator).await.unwrap().0);
    }
    // 20 %: requests 4, 9 and 14 (from 0), the others answered normally.
    let failed: Vec<usize> = (0..15).filter(|&i| statuses[i] == 503).collect();
    assert_eq!(failed, vec![4, 9, 14], "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 503 || s == 401));
    let stats = control.stats(id);
    assert_eq!((stats.seen, stats.served, stats.active), (15, 3, true));
    assert_eq!(served(&control, "token/status"), 3);
    assert_eq!(control.counters().faults_served_total, 3);

    control.remove(id);
    control.remove(id); // again: nothing
    for _ in 0..10 {
        assert_eq!(token_request(&http, &emulator).await.unwrap().0, 401);
    }
    let stats = control.stats(id);
    assert_eq!((stats.seen, stats.served, stats.active), (15, 3, false));
    assert_eq!(emulator.counters().exchange_requests, 25);
}

#[tokio::test]
async fn the_library_retries_through_a_503_burst_and_fails_clearly_when_every_attempt_does() {
    let emulator = Emulator::start().await.unwrap();
    let client = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
        .unwrap();
    let subject = SecretString::new(emulator.mint_user_token("alice@example.com"));
    // One request in two fails: every exchange gets through on a retry.
    let half = emulator.add_fault(FaultRule::token(Fault::Status(503)).rate(FaultRate::one_in(2)));
    for _ in 0..4 {
        client.exchange(&subject, KEY.public_key()).await.unwrap();
    }
    assert_eq!(emulator.exchanges_for("alice@example.com"), 4);
    // Requests 1, 3 and 5 failed, each counted against the subject that met it.
    let by_subject = emulator.counters().token_faults_by_subject;
    assert_eq!(
        by_subject.get("alice@example.com"),
        Some(&3),
        "{by_subject:?}"
    );
    assert_eq!(by_subject.len(), 1);
    emulator.remove_fault(half);
    assert!(!emulator.fault_control().stats(half).active);
    // Every request fails: the exchange gives up with a retryable server error.
    let all = emulator.add_fault(FaultRule::token(Fault::Status(503)));
    let err = client
        .exchange(&subject, KEY.public_key())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ExchangeRejected, "{err}");
    assert_eq!(err.http_status(), Some(503));
    assert!(err.is_retryable());
    assert_eq!(emulator.fault_control().stats(all).served, 3, "3 attempts");
    assert_eq!(
        emulator.counters().token_faults_by_subject["alice@example.com"],
        6
    );
    emulator.remove_fault(all);
    client.exchange(&subject, KEY.public_key()).await.unwrap();
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // measuring a real delay (a lower bound only)
async fn a_slow_domain_delays_every_token_request_until_turned_off() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let delay = Duration::from_millis(400);
    let id = control.add(FaultRule::token(Fault::Delay(delay)));
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(token_request(&http, &emulator).await.unwrap().0, 401);
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    }
    // A delay adds to another standing fault: slow, then 503.
    let unavailable = control.add(FaultRule::token(Fault::Status(503)));
    let started = Instant::now();
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 503);
    assert!(started.elapsed() >= delay);
    control.remove(unavailable);
    assert_eq!(served(&control, "token/delay"), 3);
    assert_eq!(served(&control, "token/status"), 1);

    control.remove(id);
    assert_eq!(control.active(), 0);
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 401);
    assert_eq!(served(&control, "token/delay"), 3, "no delay once removed");
}

#[tokio::test]
async fn resets_and_garbage_bodies_hit_their_fraction_of_requests() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let reset = control.add(FaultRule::token(Fault::DropConnection).rate(FaultRate::one_in(2)));
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(token_request(&http, &emulator).await.map(|(s, _)| s));
    }
    assert_eq!(
        outcomes,
        vec![Ok(401), Err(()), Ok(401), Err(()), Ok(401), Err(())]
    );
    assert_eq!(control.stats(reset).served, 3);
    control.remove(reset);

    let garbage = control.add(FaultRule::token(Fault::GarbageBody).rate(FaultRate::one_in(3)));
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push(token_request(&http, &emulator).await.unwrap());
    }
    let garbled: Vec<usize> = (0..6)
        .filter(|&i| bodies[i] == (200, "<html>not json</html>".to_owned()))
        .collect();
    assert_eq!(garbled, vec![2, 5], "{bodies:?}");
    control.remove(garbage);
    assert_eq!(served(&control, "token/drop_connection"), 3);
    assert_eq!(served(&control, "token/garbage_body"), 2);
}

/// What the client's socket reads after sending a token request: `Ok(bytes)` up to
/// end of file, or the read's error kind.
async fn raw_token_read(emulator: &Emulator) -> Result<Vec<u8>, std::io::ErrorKind> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let url = emulator.domain_url();
    let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = "grant_type=refresh_token";
    let request = format!(
        "POST /oauth2/v1/token HTTP/1.1\r\nhost: x\r\n\
         content-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut read))
        .await
        .expect("the emulator answers or closes within 10 s")
        .map(|_| read)
        .map_err(|e| e.kind())
}

/// `ResetConnection` is a TCP reset (the client's read fails with ECONNRESET);
/// `DropConnection` an orderly close (the client reads end of file, no answer).
#[tokio::test]
async fn a_reset_is_a_tcp_reset_and_a_drop_is_an_orderly_close() {
    let emulator = Emulator::start().await.unwrap();
    emulator.inject_fault(Fault::ResetConnection, 1);
    assert_eq!(
        raw_token_read(&emulator).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
    emulator.inject_fault(Fault::DropConnection, 1);
    assert_eq!(raw_token_read(&emulator).await, Ok(Vec::new()));
    // Neither leaves the endpoint broken: the next request is answered.
    let answered = raw_token_read(&emulator).await.unwrap();
    assert!(answered.starts_with(b"HTTP/1.1 "), "{answered:?}");
    let control = emulator.fault_control();
    assert_eq!(served(&control, "token/reset_connection"), 1);
    assert_eq!(served(&control, "token/drop_connection"), 1);
}

#[tokio::test]
async fn the_jwks_and_discovery_go_down_and_come_back() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let jwks = "/admin/v1/SigningCert/jwk";
    let discovery = "/.well-known/openid-configuration";

    let down = control.add(FaultRule::jwks(Fault::Status(503)));
    assert_eq!(get(&http, &emulator, jwks).await, Ok(503));
    assert_eq!(get(&http, &emulator, discovery).await, Ok(200), "only jwks");
    control.remove(down);
    let reset = control.add(FaultRule::on(FaultEndpoint::Jwks, Fault::DropConnection));
    assert_eq!(get(&http, &emulator, jwks).await, Err(()));
    control.remove(reset);
    assert_eq!(get(&http, &emulator, jwks).await, Ok(200));

    let discovery_down = control.add(FaultRule::discovery(Fault::Status(503)).times(2));
    assert_eq!(get(&http, &emulator, discovery).await, Ok(503));
    assert_eq!(get(&http, &emulator, discovery).await, Ok(503));
    assert_eq!(get(&http, &emulator, discovery).await, Ok(200), "used up");
    assert!(!control.stats(discovery_down).active);

    let counters = emulator.counters();
    assert_eq!(counters.jwks_requests, 1, "documents served, faults apart");
    assert_eq!(counters.discovery_requests, 2);
    assert_eq!(served(&control, "jwks/status"), 1);
    assert_eq!(served(&control, "jwks/drop_connection"), 1);
    assert_eq!(served(&control, "discovery/status"), 2);
    assert_eq!(counters.faults_served_total, 4);
    assert_eq!(
        counters.exchange_requests, 0,
        "the token endpoint untouched"
    );
}

async fn session(emulator: &Emulator, subject: &str) -> Upst {
    TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .unwrap()
        .exchange(
            &SecretString::new(emulator.mint_user_token(subject)),
            KEY.public_key(),
        )
        .await
        .unwrap()
}

/// A signed GET with `upst`: the status.
async fn call(http: &reqwest::Client, emulator: &Emulator, upst: &Upst) -> u16 {
    let key_id = KeyId::session_token(upst.token().expose_secret()).unwrap();
    let url = emulator.api_url().join("/20160918/users").unwrap();
    let mut request = http.get(url).build().unwrap();
    sign_reqwest_request(
        &mut request,
        &SigningParams::new(&KEY, &key_id, SystemClock.now()),
    )
    .unwrap();
    http.execute(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_control_plane_rejects_one_users_sessions_only() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let alice = session(&emulator, "alice@example.com").await;
    let bob = session(&emulator, "bob@example.com").await;

    // By the user token's subject, twice.
    let id = control.add(FaultRule::reject_sessions_of("alice@example.com").times(2));
    assert_eq!(call(&http, &emulator, &bob).await, 200);
    assert_eq!(call(&http, &emulator, &alice).await, 401);
    assert_eq!(call(&http, &emulator, &bob).await, 200);
    assert_eq!(call(&http, &emulator, &alice).await, 401);
    assert_eq!(call(&http, &emulator, &alice).await, 200, "used up");
    let stats = control.stats(id);
    assert_eq!((stats.seen, stats.served, stats.active), (2, 2, false));

    // By the session token's own subject (the user OCID), until removed.
    let id = control.add(FaultRule::reject_sessions_of(&Emulator::user_ocid(
        "bob@example.com",
    )));
    for _ in 0..3 {
        assert_eq!(call(&http, &emulator, &bob).await, 401);
        assert_eq!(call(&http, &emulator, &alice).await, 200);
    }
    control.remove(id);
    assert_eq!(call(&http, &emulator, &bob).await, 200);

    let counters = emulator.counters();
    assert_eq!(counters.rejected_requests, 5);
    assert_eq!(served(&control, "api/session_rejected"), 5);
}

#[tokio::test]
async fn queued_faults_still_work_come_first_and_are_counted() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let http = http();
    let standing = control.add(FaultRule::token(Fault::Status(503)));
    emulator.inject_fault(Fault::GarbageBody, 1);
    emulator.inject_fault(Fault::Status(500), 1);
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 200);
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 500);
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 503);
    assert_eq!(control.stats(standing).seen, 1, "queued ones first");
    assert_eq!(served(&control, "token/garbage_body"), 1);
    assert_eq!(served(&control, "token/status"), 2);

    let alice = session_after_clear(&emulator, &control).await;
    emulator.reject_next_session_tokens(1);
    assert_eq!(call(&http, &emulator, &alice).await, 401);
    assert_eq!(call(&http, &emulator, &alice).await, 200);
    assert_eq!(served(&control, "api/session_rejected"), 1);

    // clear() drops queued faults and pending rejections too.
    emulator.inject_fault(Fault::Status(500), 5);
    emulator.reject_next_session_tokens(5);
    let jwks_down = control.add(FaultRule::jwks(Fault::Status(503)));
    control.clear();
    assert!(!control.stats(jwks_down).active);
    assert_eq!(control.active(), 0);
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 401);
    assert_eq!(call(&http, &emulator, &alice).await, 200);
    assert_eq!(
        get(&http, &emulator, "/admin/v1/SigningCert/jwk").await,
        Ok(200)
    );
}

async fn session_after_clear(emulator: &Emulator, control: &FaultControl) -> Upst {
    control.clear();
    session(emulator, "alice@example.com").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_meet_exactly_their_fraction() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.fault_control();
    let id = control.add(FaultRule::token(Fault::Status(503)).rate(FaultRate::percent(20)));
    let url = emulator.domain_url().join("/oauth2/v1/token").unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.spawn(async move {
            let http = http();
            let mut failed = 0;
            for _ in 0..25 {
                let response = http.post(url.clone()).send().await.unwrap();
                if response.status() == 503 {
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(n) = tokio::time::timeout(BOUND, tasks.join_next())
        .await
        .unwrap()
    {
        failed += n.unwrap();
    }
    assert_eq!(failed, 40, "20 % of 200");
    let stats = control.stats(id);
    assert_eq!((stats.seen, stats.served), (200, 40));

    // The handle moves into another task, which turns the fault off.
    let moved = control.clone();
    tokio::spawn(async move { moved.remove(id) }).await.unwrap();
    let http = http();
    assert_eq!(token_request(&http, &emulator).await.unwrap().0, 401);
    assert!(format!("{control:?}").contains("FaultControl"));
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn published_kids(http: &reqwest::Client, emulator: &Emulator) -> Vec<String> {
    let url = emulator
        .domain_url()
        .join("/admin/v1/SigningCert/jwk")
        .unwrap();
    let jwks: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Key rotation, as an identity domain rolls its signing key: new tokens carry the
/// new kid, the JWKS lists the new key and the one before it, the exchange accepts
/// tokens of both and refuses those of a retired key.
#[tokio::test]
async fn the_user_token_key_rotates() {
    let emulator = Emulator::builder().start().await.unwrap();
    let http = http();
    let client = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .max_attempts(1)
        .build()
        .unwrap();
    let first = emulator.mint_user_token("ann");
    let first_kid = kid_of(&first);
    assert_eq!(
        published_kids(&http, &emulator).await,
        std::slice::from_ref(&first_kid)
    );

    let second_kid = emulator.rotate_user_token_key().await.unwrap();
    assert_ne!(second_kid, first_kid);
    let second = emulator.mint_user_token("ann");
    assert_eq!(kid_of(&second), second_kid);
    assert_eq!(
        published_kids(&http, &emulator).await,
        [second_kid.clone(), first_kid.clone()]
    );
    for token in [&first, &second] {
        client
            .exchange(&SecretString::new(token.clone()), KEY.public_key())
            .await
            .expect("both published keys are accepted");
    }

    let third_kid = emulator.rotate_user_token_key().await.unwrap();
    assert_eq!(
        published_kids(&http, &emulator).await,
        [third_kid, second_kid]
    );
    let err = client
        .exchange(&SecretString::new(first), KEY.public_key())
        .await
        .expect_err("the retired key's token");
    assert_eq!(err.kind(), ErrorKind::ExchangeRejected, "{err}");
    client
        .exchange(&SecretString::new(second), KEY.public_key())
        .await
        .expect("the previous key's token");
}
