//! Token exchange against the emulator, on loopback: the happy path end to end, and
//! every error path.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use oci_token_exchange::{
    Clock as _, Emulator, ErrorKind, Fault, KeyId, RequestedToken, SecretString, SigningKey,
    SigningParams, SystemClock, TokenExchange, UserTokenOptions, sign_reqwest_request,
};

static KEY: LazyLock<SigningKey> = LazyLock::new(|| {
    SigningKey::from_pem(include_str!("../fixtures/keys/rsa2048-pkcs8.pem")).expect("key")
});

fn client(emulator: &Emulator) -> TokenExchange {
    TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build()
        .expect("valid config")
}

#[tokio::test]
async fn exchange_then_signed_get_and_post_are_accepted() {
    let emulator = Emulator::start().await.expect("emulator");
    let subject = SecretString::new(emulator.mint_user_token("alice@example.com"));
    let upst = client(&emulator)
        .exchange(&subject, KEY.public_key())
        .await
        .expect("exchange succeeds");
    assert_eq!(upst.user_ocid(), Emulator::user_ocid("alice@example.com"));
    assert_eq!(
        upst.tenancy_ocid(),
        Some(oci_token_exchange::EMULATOR_TENANCY_OCID)
    );
    assert_eq!(upst.public_key(), KEY.public_key());
    assert!(upst.jti().is_some());
    assert!(!format!("{upst:?}").contains(upst.token().expose_secret()));

    // What the client sent, field by field, as the emulator parsed it.
    let sent = emulator.last_exchange().expect("recorded");
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(sent.basic_auth);
    let field = |n: &str| {
        sent.form
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(
        field("requested_token_type"),
        Some("urn:oci:token-type:oci-upst")
    );
    assert_eq!(field("subject_token_type"), Some("jwt"));
    assert_eq!(field("subject_token"), Some("[redacted]"));
    let public_key = KEY.public_key().to_spki_base64();
    assert_eq!(field("public_key"), Some(public_key.as_str()));
    assert_eq!(sent.form.len(), 5);
    assert_eq!(emulator.exchanges_for("alice@example.com"), 1);

    let key_id = KeyId::session_token(upst.token().expose_secret()).expect("key id");
    let http = reqwest::Client::new();
    let base = emulator.api_url();
    for (method, body) in [("GET", None), ("POST", Some(r#"{"displayName":"x"}"#))] {
        let url = base
            .join("/20160918/instances?compartmentId=ocid1.compartment.oc1..c%3Ax")
            .unwrap();
        let mut builder = http.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            builder = builder
                .header("content-type", "application/json")
                .body(body);
        }
        let mut request = builder.build().unwrap();
        sign_reqwest_request(
            &mut request,
            &SigningParams::new(&KEY, &key_id, SystemClock.now()),
        )
        .expect("signs");
        let response = http.execute(request).await.expect("sent");
        assert_eq!(response.status(), 200, "{method}");
        let json: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(
            json["principal"]["userId"],
            Emulator::user_ocid("alice@example.com")
        );
    }
    assert_eq!(emulator.counters().verified_requests, 2);

    // A request signed with another key is refused with OCI's error shape.
    let other = SigningKey::from_pem(include_str!("../fixtures/signing/key.pem")).unwrap();
    let mut request = http
        .get(base.join("/20160918/vcns").unwrap())
        .build()
        .unwrap();
    sign_reqwest_request(
        &mut request,
        &SigningParams::new(&other, &key_id, SystemClock.now()),
    )
    .unwrap();
    let response = http.execute(request).await.unwrap();
    assert_eq!(response.status(), 401);
    let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(json["code"], "NotAuthenticated");
    assert_eq!(emulator.counters().rejected_requests, 1);
}

#[tokio::test]
async fn wrong_secret_is_invalid_client_without_retry_or_leak() {
    let emulator = Emulator::start().await.unwrap();
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), "wrong-secret-value")
        .build()
        .unwrap();
    let subject = SecretString::new(emulator.mint_user_token("bob"));
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ExchangeRejected);
    assert_eq!(err.http_status(), Some(401));
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert!(
        err.opc_request_id()
            .is_some_and(|id| id.starts_with("emulator-"))
    );
    assert!(!err.is_retryable() && !err.is_reauth_required());
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wrong-secret-value") && !text.contains(subject.expose_secret()),
        "{text}"
    );
    assert_eq!(emulator.counters().exchange_requests, 1);
}

#[tokio::test]
async fn bad_subject_tokens_fail_locally_without_a_network_call() {
    let emulator = Emulator::start().await.unwrap();
    let expired =
        emulator.mint_user_token_with(&UserTokenOptions::new("carol").ttl(Duration::ZERO));
    let err = client(&emulator)
        .exchange(&SecretString::new(expired), KEY.public_key())
        .await
        .expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::SubjectTokenExpired);
    assert!(err.is_reauth_required());
    let err = client(&emulator)
        .exchange(&SecretString::new("not-a-jwt"), KEY.public_key())
        .await
        .expect_err("malformed");
    assert_eq!(err.kind(), ErrorKind::SubjectTokenMalformed);
    assert_eq!(emulator.counters().exchange_requests, 0);
}

#[tokio::test]
async fn the_domain_refuses_untrusted_tokens_and_small_keys() {
    let emulator = Emulator::start().await.unwrap();
    let foreign = emulator
        .mint_user_token_with(&UserTokenOptions::new("dave").issuer("https://evil.example"));
    let err = client(&emulator)
        .exchange(&SecretString::new(foreign), KEY.public_key())
        .await
        .expect_err("untrusted issuer");
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
    assert!(err.is_reauth_required());

    let small = SigningKey::from_pem(include_str!("../fixtures/signing/key.pem")).unwrap();
    let subject = SecretString::new(emulator.mint_user_token("dave"));
    let err = client(&emulator)
        .exchange(&subject, small.public_key())
        .await
        .expect_err("1024");
    assert_eq!(
        (err.http_status(), err.oauth_error()),
        (Some(400), Some("invalid_request"))
    );
    assert_eq!(
        emulator.counters().exchange_requests,
        2,
        "4xx is never retried"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let emulator = Emulator::start().await.unwrap();
    let subject = SecretString::new(emulator.mint_user_token("erin"));
    let exchange = client(&emulator);

    emulator.inject_fault(Fault::Status(500), 1);
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect("500 then 200");
    assert_eq!(emulator.counters().exchange_requests, 2);

    emulator.inject_fault(Fault::DropConnection, 1);
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect("dropped then 200");
    assert_eq!(emulator.counters().exchange_requests, 4);

    emulator.inject_fault(Fault::ResetConnection, 1);
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect("reset then 200");
    assert_eq!(emulator.counters().exchange_requests, 6);

    emulator.inject_fault(Fault::Status(503), 3);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("3 x 503");
    assert_eq!(err.http_status(), Some(503));
    assert!(err.is_retryable());
    assert_eq!(
        emulator.counters().exchange_requests,
        9,
        "bounded to 3 attempts"
    );

    emulator.inject_fault(Fault::Status(400), 1);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("400");
    assert_eq!(err.http_status(), Some(400));
    assert_eq!(
        emulator.counters().exchange_requests,
        10,
        "400 is not retried"
    );

    emulator.inject_fault(Fault::GarbageBody, 1);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("garbage");
    assert_eq!(err.kind(), ErrorKind::MalformedResponse);
    assert_eq!(emulator.counters().exchange_requests, 11);

    emulator.inject_fault(Fault::Redirect, 1);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("redirect");
    assert_eq!(err.http_status(), Some(302));
    assert_eq!(
        emulator.counters().exchange_requests,
        12,
        "redirect not followed"
    );

    emulator.inject_fault(Fault::MismatchedKey, 1);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::MalformedResponse);
    assert!(err.to_string().contains("different public key"));
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_cap() {
    let emulator = Emulator::start().await.unwrap();
    let subject = SecretString::new(emulator.mint_user_token("frank"));
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(10), Duration::from_secs(2))
        .build()
        .unwrap();
    emulator.inject_fault(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    #[allow(clippy::disallowed_methods)] // measuring a real sleep
    let started = Instant::now();
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect("429 then 200");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );

    emulator.inject_fault(
        Fault::TooManyRequests {
            retry_after_secs: 60,
        },
        1,
    );
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("too long to wait");
    assert_eq!(err.http_status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(emulator.counters().exchange_requests, 3);
}

#[tokio::test]
async fn a_slow_domain_times_out() {
    let emulator = Emulator::start().await.unwrap();
    let subject = SecretString::new(emulator.mint_user_token("grace"));
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .attempt_timeout(Duration::from_millis(200))
        .max_attempts(1)
        .build()
        .unwrap();
    emulator.inject_fault(Fault::Delay(Duration::from_secs(3)), 1);
    let err = exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect_err("timeout");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn rpst_and_extra_fields_are_sent() {
    let emulator = Emulator::start().await.unwrap();
    let exchange = TokenExchange::builder()
        .domain_url(format!(
            "{}/",
            emulator.domain_url().as_str().trim_end_matches('/')
        ))
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .requested_token(RequestedToken::Rpst {
            res_type: "resource".into(),
            rpst_exp: Some("3600".into()),
        })
        .extra_field("scope", "urn:opc:idm:__myscopes__")
        .build()
        .unwrap();
    let subject = SecretString::new(emulator.mint_user_token("heidi"));
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .expect("rpst");
    let form = emulator.last_exchange().unwrap().form;
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        field("requested_token_type").as_deref(),
        Some("urn:oci:token-type:oci-rpst")
    );
    assert_eq!(field("res_type").as_deref(), Some("resource"));
    assert_eq!(field("rpst_exp").as_deref(), Some("3600"));
    assert_eq!(field("scope").as_deref(), Some("urn:opc:idm:__myscopes__"));
}

#[test]
fn configuration_is_validated_without_io() {
    let base = || TokenExchange::builder().client_credentials("id", "secret");
    let cases = [
        (
            TokenExchange::builder().client_credentials("id", "s"),
            "domain url is required",
        ),
        (base().domain_url("http://idcs.example.com"), "https"),
        (base().domain_url("https://idcs.example.com/oauth2"), "path"),
        (
            TokenExchange::builder().domain_url("https://idcs.example.com"),
            "credentials",
        ),
        (
            TokenExchange::builder()
                .domain_url("https://x.example")
                .client_credentials("", "s"),
            "client id",
        ),
        (
            TokenExchange::builder()
                .domain_url("https://x.example")
                .client_credentials("id", ""),
            "secret",
        ),
        (
            base().domain_url("https://x.example").max_attempts(0),
            "attempts",
        ),
        (
            base()
                .domain_url("https://x.example")
                .attempt_timeout(Duration::ZERO),
            "timeouts",
        ),
        (
            base()
                .domain_url("https://x.example")
                .extra_field("subject_token", "x"),
            "extra field",
        ),
    ];
    for (builder, needle) in cases {
        let err = builder.build().expect_err(needle);
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        assert!(!err.to_string().contains("secret\""));
    }
    let ok = base()
        .domain_url("https://idcs-abc.identity.oraclecloud.com:443/")
        .build()
        .unwrap();
    assert_eq!(
        ok.token_url().as_str(),
        "https://idcs-abc.identity.oraclecloud.com/oauth2/v1/token"
    );
    assert!(!format!("{ok:?}").contains("secret"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    static RUNTIME: LazyLock<tokio::runtime::Runtime> =
        LazyLock::new(|| tokio::runtime::Runtime::new().expect("runtime"));
    // One emulator per property, so injected faults never reach the other test.
    static TOKENS_EMULATOR: LazyLock<Emulator> =
        LazyLock::new(|| RUNTIME.block_on(Emulator::start()).expect("emulator"));
    static RESPONSES_EMULATOR: LazyLock<Emulator> =
        LazyLock::new(|| RUNTIME.block_on(Emulator::start()).expect("emulator"));

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn no_subject_token_makes_the_client_panic(token in "\\PC{0,200}|[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,20}") {
            let exchange = client(&TOKENS_EMULATOR);
            let result = RUNTIME.block_on(exchange.exchange(&SecretString::new(token), KEY.public_key()));
            prop_assert!(result.is_err());
        }

        #[test]
        fn no_response_makes_the_client_panic(
            status in prop::sample::select(vec![200u16, 201, 400, 401, 403, 404, 429, 500, 502]),
            body in "\\PC{0,300}|\\{\"token\":\"\\PC{0,100}\"\\}|\\{\"error\":\"\\PC{0,30}\",\"error_description\":\"\\PC{0,60}\"\\}",
        ) {
            let exchange = TokenExchange::builder()
                .domain_url(RESPONSES_EMULATOR.domain_url().as_str())
                .client_credentials(RESPONSES_EMULATOR.client_id(), RESPONSES_EMULATOR.client_secret().clone())
                .max_attempts(1)
                .build()
                .unwrap();
            let subject = SecretString::new(RESPONSES_EMULATOR.mint_user_token("prop"));
            RESPONSES_EMULATOR.inject_fault(Fault::Respond { status, body }, 1);
            let result = RUNTIME.block_on(exchange.exchange(&subject, KEY.public_key()));
            prop_assert!(result.is_err(), "{result:?}");
        }
    }
}

/// Issue 9, defect 7: only the subject token was scrubbed from the domain's error
/// text; an echoed client secret or Basic credential reached the caller's error.
#[tokio::test]
async fn echoed_client_credentials_are_scrubbed_from_errors() {
    use base64::Engine as _;
    let emulator = Emulator::start().await.unwrap();
    let secret = emulator.client_secret().expose_secret().to_owned();
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{secret}", emulator.client_id()));
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .max_attempts(1)
        .build()
        .unwrap();
    let subject = SecretString::new(emulator.mint_user_token("carol"));
    for (error, description) in [
        (secret.clone(), format!("client secret {secret} is wrong")),
        (
            "invalid_client".to_owned(),
            format!("bad header Authorization: Basic {basic}"),
        ),
        ("invalid_client".to_owned(), format!("credential {basic}")),
    ] {
        let body = serde_json::json!({"error": error, "error_description": description});
        emulator.inject_fault(
            Fault::Respond {
                status: 401,
                body: body.to_string(),
            },
            1,
        );
        let err = exchange
            .exchange(&subject, KEY.public_key())
            .await
            .expect_err("refused");
        let text = format!(
            "{err} {err:?} {:?} {:?}",
            err.oauth_error(),
            err.oauth_error_description()
        );
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(&basic), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}

/// Every attempt is traced with its number, status, latency, request id and
/// outcome, and the retry decision; no token or secret appears in any event.
#[tokio::test]
async fn attempts_are_traced_without_secrets() {
    use base64::Engine as _;
    let (captured, _guard) = common::LogCapture::start();

    let emulator = Emulator::start().await.unwrap();
    let secret = emulator.client_secret().expose_secret().to_owned();
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{secret}", emulator.client_id()));
    let exchange = client(&emulator);
    let subject = SecretString::new(emulator.mint_user_token("dave"));
    // A 503, then success.
    emulator.inject_fault(
        Fault::Respond {
            status: 503,
            body: "{}".into(),
        },
        1,
    );
    let upst = exchange.exchange(&subject, KEY.public_key()).await.unwrap();
    // A refusal that echoes every secret.
    emulator.inject_fault(
        Fault::Respond {
            status: 400,
            body: serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("{} {secret} {basic}", subject.expose_secret()),
            })
            .to_string(),
        },
        1,
    );
    exchange
        .exchange(&subject, KEY.public_key())
        .await
        .unwrap_err();

    let text = captured.text();
    for field in [
        "attempt=1",
        "attempt=2",
        "status=503",
        "status=200",
        "status=400",
        "latency_ms=",
        "opc_request_id=",
        "outcome=\"ok\"",
        "outcome=\"retryable_status\"",
        "outcome=\"rejected\"",
        "retrying token exchange",
        "delay_ms=",
    ] {
        assert!(text.contains(field), "{field} missing from:\n{text}");
    }
    for (name, secret) in [
        ("subject token", subject.expose_secret()),
        ("upst", upst.token().expose_secret()),
        ("client secret", secret.as_str()),
        ("basic credential", basic.as_str()),
    ] {
        captured.assert_free_of(name, secret);
    }
}
