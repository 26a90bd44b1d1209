//! Resident memory per cached signer (not a criterion benchmark: it prints RSS).
//!
//! `cargo bench --bench memory --all-features` reports
//! 1. the cache's own cost per entry: 10 000 users' signers before their first use;
//! 2. the cost of a live session per user: 500 users who each made a signed call
//!    (UPST, RSA-2048 key, signer state), against the emulator.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{
    Emulator, KeyPool, SecretString, SignerCache, TokenExchange, UserTokenOptions,
};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss");
    pages * 4096
}

/// An unsigned access token of realistic size (~1.4 KB).
fn token(i: u32) -> SecretString {
    let payload = format!(
        r#"{{"sub":"user{i}@example.com","iss":"https://identity.oraclecloud.com/","exp":4102444800,"iat":1764150000,"jti":"{i:032x}","scope":"urn:opc:idm:t.user.me openid","client_id":"0123456789abcdef0123456789abcdef","user_ocid":"ocid1.user.oc1..aaaaaaaa{i:050}","aud":["https://mcp.example.com/"],"tenant":"idcs-0123456789abcdef0123456789abcdef"}}"#
    );
    SecretString::new(format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IlNJR05JTkdfS0VZIn0.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    ))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emulator = Emulator::start().await.unwrap();
        let exchange = TokenExchange::builder()
            .domain_url(emulator.domain_url().as_str())
            .client_credentials(emulator.client_id(), emulator.client_secret().clone())
            .build()
            .unwrap();

        let cache = SignerCache::builder(exchange.clone()).capacity(20_000).build();
        let tokens: Vec<SecretString> = (0..10_000).map(token).collect();
        let before = rss_bytes();
        for t in &tokens {
            cache.signer_for(t).await.unwrap();
        }
        assert_eq!(cache.len().await, 10_000);
        let after = rss_bytes();
        println!(
            "lazy entries: 10000 signers, RSS +{} KiB = {} bytes per entry (token text excluded: {} bytes each, held by the caller)",
            (after - before) / 1024,
            (after - before) / 10_000,
            tokens[0].expose_secret().len()
        );

        let pool = KeyPool::new(4);
        let live = SignerCache::builder(exchange).key_pool(pool).capacity(20_000).build();
        let http = reqwest::Client::new();
        let url = emulator.api_url().join("/20160918/instances").unwrap();
        let call = |i: u32| {
            let subject = SecretString::new(emulator.mint_user_token_with(&UserTokenOptions::new(format!("live{i}"))));
            let (live, http, url) = (live.clone(), http.clone(), url.clone());
            async move {
                let signer = live.signer_for(&subject).await.unwrap();
                let mut request = http.get(url).build().unwrap();
                signer.sign_reqwest(&mut request).await.unwrap();
                assert_eq!(http.execute(request).await.unwrap().status(), 200);
                subject
            }
        };
        let mut held = Vec::new();
        for i in 0..20 {
            held.push(call(i).await);
        }
        let before = rss_bytes();
        for i in 20..520 {
            held.push(call(i).await);
        }
        let after = rss_bytes();
        println!(
            "live sessions: 500 users after one signed call each, RSS +{} KiB = {} bytes per user",
            (after - before) / 1024,
            (after - before) / 500
        );
        drop(held);
    });
}
