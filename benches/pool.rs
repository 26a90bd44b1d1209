//! Bursts of new users and the key pool.
//!
//! - `pool/burst_40_new_users`: 40 simultaneous first signed requests, one per new
//!   user token, through one `SignerCache` with the default (adaptive) key pool
//!   against the emulator, after the pool has filled and the server sat idle. Each
//!   iteration is the whole burst: the time until the 40th user has its answer.
//! - `pool/burst_40_new_users_pool_2`: the same with the old default, a fixed pool of
//!   2 keys, so most users wait for key generation.
//!
//! First it prints the memory a pooled key costs and the fill rate of a 256-key pool.
//! At the end each prints the burst's per-request p50/p99/max over all iterations,
//! and the keys per second the pool refilled at after each burst.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    clippy::disallowed_methods, // wall-clock timing of the burst
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use oci_token_exchange::{
    Emulator, KeyPool, SecretString, SignerCache, TokenExchange, UserTokenOptions,
};

const USERS: usize = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = runtime.block_on(Emulator::start()).expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()
        .expect("config");
    let http = reqwest::Client::new();
    let url = emulator.api_url().join("/20160918/instances").expect("url");
    let users = AtomicU64::new(0);

    // What a pooled key costs in memory: the resident set before and after a pool
    // of 256 fills (aws-lc allocates with malloc, so the process's RSS is the
    // measure that sees it).
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    runtime.block_on(async {
        const KEYS: usize = 256;
        let pool = KeyPool::builder().floor(KEYS).build();
        let before = rss_kib();
        let start = Instant::now();
        pool.fill();
        while pool.available() < KEYS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        let after = rss_kib();
        eprintln!(
            "pool: {KEYS} keys filled in {elapsed:.2?} ({:.1} keys/s on all cores); \
             RSS {before} KiB -> {after} KiB: {:.2} KiB per pooled key",
            KEYS as f64 / elapsed.as_secs_f64(),
            (after.saturating_sub(before)) as f64 / KEYS as f64
        );
    });

    let mut group = c.benchmark_group("pool");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(500));
    for (id, pool) in [
        ("burst_40_new_users", KeyPool::builder().build()),
        ("burst_40_new_users_pool_2", KeyPool::new(2)),
    ] {
        let floor = pool.stats().target;
        let cache = runtime.block_on(async {
            SignerCache::builder(exchange.clone())
                .key_pool(pool.clone())
                .build()
        });
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let refill_rates = Mutex::new(Vec::new());
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Not measured: the pool is full and the server idle.
                    let refill = Instant::now();
                    let refilled = runtime.block_on(async {
                        let generated = pool.generated();
                        for _ in 0..60_000 {
                            if pool.available() >= floor {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        assert!(pool.available() >= floor, "the pool did not fill");
                        let made = pool.generated() - generated;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        made
                    });
                    if refilled >= USERS as u64 / 2 {
                        refill_rates
                            .lock()
                            .unwrap()
                            .push(refilled as f64 / refill.elapsed().as_secs_f64());
                    }
                    let tokens: Vec<_> = (0..USERS)
                        .map(|_| {
                            let user = users.fetch_add(1, Ordering::Relaxed);
                            emulator.mint_user_token_with(&UserTokenOptions::new(format!(
                                "burst{user}"
                            )))
                        })
                        .collect();
                    let start = Instant::now();
                    runtime.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for token in tokens {
                            let (cache, http, url) = (cache.clone(), http.clone(), url.clone());
                            let latencies = Arc::clone(&latencies);
                            tasks.spawn(async move {
                                let begun = Instant::now();
                                let token = SecretString::from(token);
                                let signer = cache.signer_for(&token).await.expect("signer");
                                let mut request = http.get(url).build().expect("request");
                                signer.sign_reqwest(&mut request).await.expect("signed");
                                let status = http.execute(request).await.expect("sent").status();
                                assert_eq!(status, 200);
                                latencies.lock().unwrap().push(begun.elapsed());
                            });
                        }
                        tasks.join_all().await;
                    });
                    total += start.elapsed();
                }
                total
            });
        });
        let mut all = latencies.lock().unwrap().clone();
        all.sort();
        let rates = refill_rates.lock().unwrap();
        let rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let stats = pool.stats();
        eprintln!(
            "pool/{id}: {} requests: p50 {:.1?} p99 {:.1?} max {:.1?}; refill {rate:.1} keys/s \
             (from the burst's end until full, {} bursts); pool {stats:?}",
            all.len(),
            percentile(&all, 0.50),
            percentile(&all, 0.99),
            all.last().copied().unwrap_or_default(),
            rates.len(),
        );
    }
    group.finish();
}

criterion_group!(pool, benches);
criterion_main!(pool);
