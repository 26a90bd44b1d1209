//! The reqwest-middleware signer and the API-key signer, against the emulator.
#![cfg(all(feature = "middleware", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use oci_token_exchange::{
    ApiKeySigner, BodyDigest, Credentials, CredentialsProvider, Emulator, ErrorKind, FixedClock,
    KeyPool, PublicKey, SecretString, SignWith, SignableBody, SignableRequest, SigningMiddleware,
    TokenExchange, TokenExchangeSigner, VerifyOptions, verify,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::Value;

async fn setup(user: &str) -> (Emulator, Arc<TokenExchangeSigner>) {
    let emulator = Emulator::start().await.unwrap();
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .unwrap();
    let signer = TokenExchangeSigner::builder(exchange)
        .subject_token(SecretString::new(emulator.mint_user_token(user)))
        .key_pool(KeyPool::new(1))
        .build()
        .unwrap();
    (emulator, Arc::new(signer))
}

fn client(middleware: SigningMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_requests_and_renews_the_session_once_on_401() {
    let (emulator, signer) = setup("ann").await;
    let http = client(SigningMiddleware::new(signer.clone()));
    let base = emulator.api_url();

    let response = http
        .get(base.join("/20160918/compartments").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await[0]["lifecycleState"], "ACTIVE");
    let response = http
        .post(base.join("/20160918/vcns").unwrap())
        .header("content-type", "application/json")
        .body(r#"{"cidrBlock":"10.0.0.0/16"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["body"]["cidrBlock"], "10.0.0.0/16");
    assert_eq!(emulator.exchanges_for("ann"), 1);

    // OCI refuses the session once: the middleware renews it and replays the POST.
    emulator.reject_next_session_tokens(1);
    let response = http
        .post(base.join("/20160918/vcns").unwrap())
        .header("content-type", "application/json")
        .body(r#"{"retry":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["body"]["retry"], true);
    assert_eq!(
        emulator.exchanges_for("ann"),
        2,
        "one new exchange for the retry"
    );
    let counters = emulator.counters();
    assert_eq!(
        (counters.verified_requests, counters.rejected_requests),
        (3, 1)
    );

    // Refused again within a minute of that forced renewal: no second exchange,
    // the 401 is returned (a 401 storm costs at most one exchange a minute).
    emulator.reject_next_session_tokens(1);
    let response = http.get(base.join("/x").unwrap()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(emulator.counters().rejected_requests, 2);
    assert_eq!(emulator.exchanges_for("ann"), 2);
}

fn stream(bytes: &'static [u8]) -> reqwest::Body {
    reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_are_buffered_within_a_limit_or_signed_from_a_digest() {
    let (emulator, signer) = setup("bo").await;
    let url = emulator.api_url().join("/20160918/vcns").unwrap();

    let http = client(SigningMiddleware::new(signer.clone()));
    let response = http
        .put(url.clone())
        .body(stream(b"{\"streamed\":1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["bodyLength"], 14);

    let small = client(SigningMiddleware::new(signer.clone()).max_buffered_body(4));
    let err = small
        .put(url.clone())
        .body(stream(b"{\"streamed\":1}"))
        .send()
        .await
        .expect_err("too big");
    let reqwest_middleware::Error::Middleware(inner) = err else {
        panic!("{err:?}")
    };
    let inner = inner
        .downcast_ref::<oci_token_exchange::Error>()
        .expect("our error");
    assert_eq!(inner.kind(), ErrorKind::UnsignableBody);

    let body: &'static [u8] = b"{\"digested\":2}";
    let digest = BodyDigest::of(body);
    let response = small
        .put(url)
        .with_extension(digest)
        .body(stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "signed from the digest, not buffered"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("oci-token-exchange-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn api_keys_from_the_oci_config_file() {
    let dir = temp_dir("config");
    let key = dir.join("key.pem");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/keys/rsa2048-pkcs8.pem"
        ),
        &key,
    )
    .unwrap();
    std::fs::write(dir.join("token"), "header.payload.signature\n").unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nregion = us-phoenix-1\nkey_file = {key}\ntenancy = ocid1.tenancy.oc1..t\n\n\
             [api]\nuser = ocid1.user.oc1..u\nfingerprint = aa:bb:cc\n\n\
             [session]\nsecurity_token_file = {token}\n\n[locked]\npass_phrase = x\n",
            key = key.display(),
            token = dir.join("token").display()
        ),
    )
    .unwrap();

    // Signature dates come from the injected clock.
    let signed_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let api = ApiKeySigner::from_config_file(Some(&config), "api")
        .unwrap()
        .with_clock(Arc::new(FixedClock::new(signed_at)));
    assert_eq!(api.region(), Some("us-phoenix-1"));
    assert_eq!(
        api.key_id().expose_secret(),
        "ocid1.tenancy.oc1..t/ocid1.user.oc1..u/aa:bb:cc"
    );
    let mut request = http::Request::get("https://iaas.us-phoenix-1.oraclecloud.com/20160918/vcns")
        .body(Vec::new())
        .unwrap();
    let used = api.sign_http(&mut request).await.unwrap();
    assert!(used.session().is_none());
    assert!(!api.refused(&used), "a fixed key is not renewed");
    assert_eq!(
        request.headers()["date"],
        httpdate::fmt_http_date(signed_at).as_str()
    );
    let public = PublicKey::from_pem(include_str!("../fixtures/keys/rsa2048-public.pem")).unwrap();
    let received = SignableRequest::from_parts(
        "GET",
        "iaas.us-phoenix-1.oraclecloud.com",
        "/20160918/vcns",
        request.headers(),
        SignableBody::EMPTY,
    );
    verify(&received, &VerifyOptions::new(signed_at), |_| {
        Ok(public.clone())
    })
    .unwrap();

    let session = ApiKeySigner::from_config_file(Some(&config), "session").unwrap();
    assert_eq!(session.key_id().token(), Some("header.payload.signature"));
    assert!(!format!("{session:?}").contains("payload"));

    let locked = ApiKeySigner::from_config_file(Some(&config), "locked").unwrap_err();
    assert_eq!(locked.kind(), ErrorKind::EncryptedKey);
    let missing = ApiKeySigner::from_config_file(Some(&config), "nope").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::InvalidConfig);
    let no_file = ApiKeySigner::from_config_file(Some(&dir.join("absent")), "api").unwrap_err();
    assert_eq!(no_file.kind(), ErrorKind::InvalidConfig);

    // A fixed key is not renewed: a 401 is returned as is, after one request.
    let emulator = Emulator::start().await.unwrap();
    let http = client(SigningMiddleware::new(Arc::new(api)));
    let response = http
        .get(emulator.api_url().join("/x").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the emulator accepts session tokens only"
    );
    assert_eq!(emulator.counters().rejected_requests, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_list_compartments_example_runs_offline() {
    let out = std::process::Command::new(common::example("list_compartments"))
        .env_remove("OCI_DOMAIN_URL")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("status: 200\n"), "{stdout}");
    let list: Value = serde_json::from_str(stdout.lines().nth(1).expect("body")).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{stdout}");
}

/// Issue 9, defect 5: a 401 for a request that cannot be replayed (streamed with a
/// digest, or with its body excluded) still drops the refused session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_is_dropped_even_when_the_body_cannot_be_replayed() {
    let body: &'static [u8] = b"{\"digested\":3}";
    let digest = BodyDigest::of(body);
    for exclude_body in [false, true] {
        let (emulator, signer) = setup("cy").await;
        let url = emulator.api_url().join("/20160918/vcns").unwrap();
        let http = client(
            SigningMiddleware::new(signer.clone())
                .options(oci_token_exchange::SigningOptions::default().exclude_body(exclude_body)),
        );
        let mut request = http.put(url).body(stream(body));
        if !exclude_body {
            request = request.with_extension(digest);
        }
        signer.session().await.unwrap();
        emulator.reject_next_session_tokens(1);
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "not replayable");
        assert!(
            signer.current_session().is_none(),
            "exclude_body {exclude_body}: the refused session is kept"
        );
        assert_eq!(emulator.counters().rejected_requests, 1);
    }
}

/// One client for every user: each request names its signer with `SignWith`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_signs_each_request_as_its_own_user() {
    let emulator = Emulator::start().await.unwrap();
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .unwrap();
    let signer = |user: &str| {
        Arc::new(
            TokenExchangeSigner::builder(exchange.clone())
                .subject_token(SecretString::new(emulator.mint_user_token(user)))
                .key_pool(KeyPool::new(0))
                .build()
                .unwrap(),
        )
    };
    let (ann, bob) = (signer("ann"), signer("bob"));
    let http = client(SigningMiddleware::per_request());
    let url = emulator.api_url().join("/20160918/vcns").unwrap();

    for (user, who) in [("ann", &ann), ("bob", &bob), ("ann", &ann)] {
        let response = http
            .post(url.clone())
            .with_extension(SignWith::new(who.clone()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let principal = json(response).await["principal"].to_string();
        assert!(
            principal.contains(&Emulator::user_ocid(user)),
            "{principal}"
        );
    }
    assert_eq!(
        (emulator.exchanges_for("ann"), emulator.exchanges_for("bob")),
        (1, 1)
    );

    // A 401 renews only the refused user's session, and the request is replayed.
    for (user, who) in [("bob", &bob), ("ann", &ann)] {
        emulator.reject_next_session_tokens(1);
        let response = http
            .post(url.clone())
            .with_extension(SignWith::new(who.clone()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{user}");
        let principal = json(response).await["principal"].to_string();
        assert!(
            principal.contains(&Emulator::user_ocid(user)),
            "{principal}"
        );
    }
    assert_eq!(
        (emulator.exchanges_for("ann"), emulator.exchanges_for("bob")),
        (2, 2)
    );

    // Without a signer, a clear error and nothing sent.
    let err = http.get(url).send().await.expect_err("no signer");
    let reqwest_middleware::Error::Middleware(inner) = err else {
        panic!("{err:?}")
    };
    let inner = inner.downcast_ref::<oci_token_exchange::Error>().unwrap();
    assert_eq!(inner.kind(), ErrorKind::InvalidConfig);
    assert_eq!(
        emulator.counters().verified_requests + emulator.counters().rejected_requests,
        7
    );
}

/// Records each refusal the middleware reports, then lets the signer judge it.
#[derive(Debug)]
struct Recording {
    signer: Arc<TokenExchangeSigner>,
    refused: std::sync::Mutex<Vec<Credentials>>,
}

impl CredentialsProvider for Recording {
    fn credentials(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = oci_token_exchange::Result<Credentials>> + Send + '_>,
    > {
        CredentialsProvider::credentials(&*self.signer)
    }

    fn refused(&self, used: &Credentials) -> bool {
        self.refused.lock().unwrap().push(used.clone());
        CredentialsProvider::refused(&*self.signer, used)
    }

    fn now(&self) -> SystemTime {
        CredentialsProvider::now(&*self.signer)
    }
}

/// Review fix (issue 9): when the replay after a 401 is refused too, the provider
/// is told about the replay's credentials as well (and there is no second replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_replay_is_reported_to_the_provider() {
    let (emulator, signer) = setup("dee").await;
    let provider = Arc::new(Recording {
        signer,
        refused: std::sync::Mutex::default(),
    });
    let http = client(SigningMiddleware::new(provider.clone()));
    emulator.reject_next_session_tokens(2);
    let response = http
        .get(emulator.api_url().join("/20160918/compartments").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(emulator.counters().rejected_requests, 2, "one replay only");
    let refused = provider.refused.lock().unwrap();
    assert_eq!(
        refused.len(),
        2,
        "both 401s are reported, the replay's too: {refused:?}"
    );
    let (first, replay) = (
        refused[0].session().expect("a session"),
        refused[1].session().expect("a session"),
    );
    assert!(
        !Arc::ptr_eq(first, replay),
        "the second report names the renewed session the replay used"
    );
    assert_eq!(emulator.exchanges_for("dee"), 2);
}
