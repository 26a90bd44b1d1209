//! One token exchange against the emulator on loopback: `exchange/roundtrip` with a
//! pre-generated key (HTTP round trip plus the emulator's work: verifying the user
//! token and signing the UPST), `exchange/with_keygen` including a fresh RSA-2048
//! key as every real exchange needs. `keygen/rsa_2048` in `signing` gives the key
//! generation alone.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oci_token_exchange::{Emulator, KeySize, SecretString, SigningKey, TokenExchange};

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = runtime.block_on(Emulator::start()).expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .expect("config");
    let subject = SecretString::new(emulator.mint_user_token("bench@example.com"));
    let key = SigningKey::generate(KeySize::Rsa2048).expect("key");

    let mut group = c.benchmark_group("exchange");
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("roundtrip", |b| {
        b.iter(|| {
            runtime
                .block_on(exchange.exchange(&subject, key.public_key()))
                .expect("exchange")
        });
    });
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(25));
    group.bench_function("with_keygen", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let key = tokio::task::spawn_blocking(|| SigningKey::generate(KeySize::Rsa2048))
                    .await
                    .expect("join")
                    .expect("key");
                exchange
                    .exchange(&subject, key.public_key())
                    .await
                    .expect("exchange")
            })
        });
    });
    group.finish();
}

criterion_group!(exchange, benches);
criterion_main!(exchange);
