//! Operator-visible tracing of the signer lifecycle, captured with the tests' one
//! global capturing subscriber (`common::LogCapture`).
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use oci_token_exchange::{
    Emulator, Fault, FixedClock, KeyPool, SecretString, SignerCache, TokenExchange,
    UserTokenOptions,
};

/// Refreshes, failures, remembered refusals and cache lookups are traced, and no
/// field carries a token, a session token or the client secret.
#[test]
fn tracing_shows_the_lifecycle_without_secrets() {
    let (capture, _guard) = common::LogCapture::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, upst, secret) = runtime.block_on(async {
        let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
        let emulator = Emulator::builder()
            .clock(clock.clone())
            .start()
            .await
            .unwrap();
        let exchange = TokenExchange::builder()
            .domain_url(emulator.domain_url().as_str())
            .client_credentials(emulator.client_id(), emulator.client_secret().clone())
            .backoff(Duration::from_millis(5), Duration::from_millis(50))
            .clock(clock.clone())
            .build()
            .unwrap();
        let cache = SignerCache::builder(exchange)
            .key_pool(KeyPool::new(0))
            .clock(clock.clone())
            .build();
        let token = SecretString::new(emulator.mint_user_token_with(
            &UserTokenOptions::new("tia").ttl(Duration::from_secs(6 * 3600)),
        ));
        let session = cache
            .signer_for(&token)
            .await
            .unwrap()
            .session()
            .await
            .unwrap();
        cache.signer_for(&token).await.unwrap();
        clock.set(session.expires_at() - Duration::from_secs(100));
        emulator.inject_fault(Fault::Status(503), 3);
        cache
            .signer_for(&token)
            .await
            .unwrap()
            .session()
            .await
            .unwrap();
        clock.advance(Duration::from_secs(11));
        emulator.inject_fault(
            Fault::Respond {
                status: 400,
                body: r#"{"error":"invalid_grant"}"#.into(),
            },
            1,
        );
        let signer = cache.signer_for(&token).await.unwrap();
        signer.session().await.unwrap_err();
        signer.session().await.unwrap_err();
        (
            token,
            session.upst().token().expose_secret().to_owned(),
            emulator.client_secret().expose_secret().to_owned(),
        )
    });
    let text = capture.text();
    for expected in [
        "session refreshed",
        "session refresh failed",
        "fallback=true",
        "refused token remembered",
        "signer cache miss",
        "signer cache hit",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    for (name, secret) in [
        ("user token", token.expose_secret()),
        ("upst", upst.as_str()),
        ("client secret", secret.as_str()),
    ] {
        capture.assert_free_of(name, secret);
    }
    assert!(!text.contains("eyJ"), "a JWT in the trace:\n{text}");
}
