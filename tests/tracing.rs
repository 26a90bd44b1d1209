//! Operator-visible tracing of the signer lifecycle, in its own test binary: the
//! capturing subscriber is thread-scoped, and tracing's per-callsite interest cache
//! is shared by the process, so tests running beside it could hide its events.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Duration;

use oci_token_exchange::{
    Emulator, Fault, FixedClock, KeyPool, SecretString, SignerCache, TokenExchange,
    UserTokenOptions,
};

/// Collects every event and span field as text.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut text = span.metadata().name().to_owned();
        span.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(text);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut text = String::new();
        values.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(text);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = event.metadata().level().to_string();
        event.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(text);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Refreshes, failures, remembered refusals and cache lookups are traced, and no
/// field carries a token, a session token or the client secret.
#[test]
fn tracing_shows_the_lifecycle_without_secrets() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
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
    let lines = capture.0.lock().unwrap().clone();
    let text = lines.join("\n");
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
    for secret in [token.expose_secret(), upst.as_str(), secret.as_str()] {
        assert!(!text.contains(secret), "a secret in the trace:\n{text}");
    }
    assert!(!text.contains("eyJ"), "a JWT in the trace:\n{text}");
}
