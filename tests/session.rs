//! The signer lifecycle, the key pool and the per-user cache, against the emulator.
#![cfg(all(feature = "reqwest", feature = "emulator"))]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::{
    Clock, Emulator, ErrorKind, Fault, FixedClock, KeyPool, SecretString, SignerCache,
    TokenExchange, TokenExchangeSigner, UserTokenOptions,
};

const START: u64 = 1_800_000_000;

struct World {
    clock: Arc<FixedClock>,
    emulator: Emulator,
    exchange: TokenExchange,
}

async fn world(upst_ttl: Duration) -> World {
    let clock = Arc::new(FixedClock::at_unix(START));
    let emulator = Emulator::builder()
        .clock(clock.clone())
        .upst_ttl(upst_ttl)
        .start()
        .await
        .expect("emulator");
    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .clock(clock.clone())
        .build()
        .expect("exchange");
    World {
        clock,
        emulator,
        exchange,
    }
}

impl World {
    fn token(&self, options: UserTokenOptions) -> SecretString {
        SecretString::new(self.emulator.mint_user_token_with(&options))
    }

    fn signer(&self, token: SecretString) -> TokenExchangeSigner {
        TokenExchangeSigner::builder(self.exchange.clone())
            .subject_token(token)
            .clock(self.clock.clone())
            .build()
            .expect("signer")
    }

    fn cache(&self, capacity: u64) -> SignerCache {
        SignerCache::builder(self.exchange.clone())
            .capacity(capacity)
            .key_pool(KeyPool::new(4))
            .clock(self.clock.clone())
            .build()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_over_twenty_tokens_make_twenty_exchanges() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(1000);
    let users: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
    let tokens: Vec<SecretString> = users
        .iter()
        .map(|u| w.token(UserTokenOptions::new(u.clone())))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let cache = cache.clone();
        let token = tokens[i % 20].clone();
        let user = users[i % 20].clone();
        tasks.push(tokio::spawn(async move {
            let session = cache.signer_for(&token).await?.session().await?;
            assert_eq!(
                session.user_ocid(),
                Emulator::user_ocid(&user),
                "users never mix"
            );
            Ok::<_, oci_token_exchange::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("every task gets its user's session");
    }
    assert_eq!(w.emulator.counters().exchanges, 20);
    for user in &users {
        assert_eq!(w.emulator.exchanges_for(user), 1, "{user}");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.exchanges, stats.failures),
        (20, 180, 20, 0)
    );
    assert_eq!(cache.len().await, 20);
}

#[tokio::test]
async fn refresh_happens_inside_the_margin_and_not_before() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("ann").ttl(Duration::from_secs(6 * 3600))));
    let first = signer.session().await.unwrap();
    let expires = first.expires_at();
    assert_eq!(
        expires,
        SystemTime::UNIX_EPOCH + Duration::from_secs(START + 3600)
    );

    w.clock.set(expires - Duration::from_secs(301));
    assert!(
        Arc::ptr_eq(&first, &signer.session().await.unwrap()),
        "not before the margin"
    );
    assert_eq!(w.emulator.exchanges_for("ann"), 1);

    w.clock.set(expires - Duration::from_secs(299));
    let second = signer.session().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second), "inside the margin");
    assert_eq!(w.emulator.exchanges_for("ann"), 2);
    assert!(second.expires_at() > expires);
}

#[tokio::test]
async fn margin_is_capped_at_half_a_short_lifetime() {
    let w = world(Duration::from_secs(400)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("bea")));
    let first = signer.session().await.unwrap();
    assert_eq!(
        first.refresh_at(),
        first.expires_at() - Duration::from_secs(200)
    );
    w.clock.advance(Duration::from_secs(199));
    assert!(Arc::ptr_eq(&first, &signer.session().await.unwrap()));
    w.clock.advance(Duration::from_secs(2));
    assert!(!Arc::ptr_eq(&first, &signer.session().await.unwrap()));
}

#[tokio::test]
async fn an_expired_subject_means_reauth_without_an_exchange() {
    let w = world(Duration::from_secs(3600)).await;
    let token = w.token(UserTokenOptions::new("cat").ttl(Duration::from_secs(600)));
    let signer = w.signer(token.clone());
    let session = signer.session().await.unwrap();
    assert_eq!(
        session.expires_at(),
        w.clock.now() + Duration::from_secs(600),
        "capped by the subject"
    );

    w.clock.advance(Duration::from_secs(601));
    let requests = w.emulator.counters().exchange_requests;
    let err = signer.session().await.expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::SubjectTokenExpired);
    assert!(err.is_reauth_required());
    assert_eq!(
        w.emulator.counters().exchange_requests,
        requests,
        "no network call"
    );

    let cache = w.cache(10);
    let err = cache
        .signer_for(&token)
        .await
        .expect_err("refused before lookup");
    assert!(err.is_reauth_required());
    assert_eq!(cache.stats().misses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_releases_every_waiter_and_is_not_remembered() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = Arc::new(w.signer(w.token(UserTokenOptions::new("dan"))));
    w.emulator.inject_fault(Fault::Status(503), 3);
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let signer = Arc::clone(&signer);
            tokio::spawn(async move { signer.session().await })
        })
        .collect();
    for waiter in waiters {
        let err = waiter.await.unwrap().expect_err("all fail together");
        assert_eq!(err.http_status(), Some(503));
    }
    assert_eq!(
        w.emulator.counters().exchange_requests,
        3,
        "one refresh of 3 attempts for 50 callers"
    );
    signer
        .session()
        .await
        .expect("the next call exchanges again");
    assert_eq!(w.emulator.counters().exchanges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_caller_does_not_strand_the_others() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = Arc::new(w.signer(w.token(UserTokenOptions::new("eve"))));
    w.emulator
        .inject_fault(Fault::Delay(Duration::from_millis(400)), 1);
    let first = tokio::time::timeout(Duration::from_millis(50), signer.session()).await;
    assert!(first.is_err(), "the first caller gave up");
    let session = tokio::time::timeout(Duration::from_secs(10), signer.session())
        .await
        .expect("the others are not stranded")
        .expect("session");
    assert_eq!(session.user_ocid(), Emulator::user_ocid("eve"));
    assert_eq!(
        w.emulator.counters().exchange_requests,
        1,
        "the refresh went on for them"
    );
}

#[tokio::test]
async fn a_token_with_another_users_jti_never_gets_that_signer() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(10);
    let alice = w.token(UserTokenOptions::new("alice").jti("shared-jti"));
    let mallory = w.token(UserTokenOptions::new("mallory").jti("shared-jti"));
    let signer = cache.signer_for(&alice).await.unwrap();
    let err = cache.signer_for(&mallory).await.expect_err("conflict");
    assert_eq!(err.kind(), ErrorKind::SubjectTokenConflict);
    cache.invalidate(&mallory).await;
    let again = cache.signer_for(&alice).await.unwrap();
    assert!(
        Arc::ptr_eq(&signer, &again),
        "the entry was neither replaced nor evicted"
    );
    assert_eq!(
        again.session().await.unwrap().user_ocid(),
        Emulator::user_ocid("alice")
    );
    assert_eq!(cache.stats().conflicts, 1);

    // The same jti from another issuer is another key.
    let other_issuer = w.token(
        UserTokenOptions::new("alice")
            .jti("shared-jti")
            .issuer("https://other.example"),
    );
    let other = cache.signer_for(&other_issuer).await.unwrap();
    assert!(!Arc::ptr_eq(&signer, &other));
}

#[tokio::test]
async fn tokens_without_jti_never_share_an_entry() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(10);
    let a = w.token(UserTokenOptions::new("ivy").without_jti());
    let b = w.token(UserTokenOptions::new("jon").without_jti());
    let (sa, sb) = (
        cache.signer_for(&a).await.unwrap(),
        cache.signer_for(&b).await.unwrap(),
    );
    assert!(!Arc::ptr_eq(&sa, &sb));
    assert_eq!(
        sa.session().await.unwrap().user_ocid(),
        Emulator::user_ocid("ivy")
    );
    assert_eq!(
        sb.session().await.unwrap().user_ocid(),
        Emulator::user_ocid("jon")
    );
    assert!(Arc::ptr_eq(&sa, &cache.signer_for(&a).await.unwrap()));
    assert_eq!(cache.len().await, 2);
    cache.invalidate(&a).await;
    assert_eq!(cache.len().await, 1);
    assert!(
        !Arc::ptr_eq(&sa, &cache.signer_for(&a).await.unwrap()),
        "invalidate drops the signer even while a caller still holds it"
    );
}

/// An unsigned JWT: the cache reads claims only, and signers exchange lazily.
fn unsigned_token(sub: &str, jti: &str, exp: u64) -> SecretString {
    let payload =
        format!(r#"{{"iss":"https://issuer.example","sub":"{sub}","jti":"{jti}","exp":{exp}}}"#);
    SecretString::new(format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(payload)
    ))
}

#[tokio::test]
async fn churn_of_twenty_thousand_tokens_stays_within_capacity() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(1000);
    for i in 0..20_000u32 {
        cache
            .signer_for(&unsigned_token("u", &format!("jti-{i}"), START + 3600))
            .await
            .unwrap();
        if i % 1000 == 999 {
            assert!(cache.len().await <= 1000, "at {i}");
        }
    }
    assert!(cache.len().await <= 1000);
    let stats = cache.stats();
    assert_eq!(stats.misses, 20_000);
    assert!(stats.evictions >= 19_000, "{stats:?}");
    assert_eq!(
        w.emulator.counters().exchange_requests,
        0,
        "lookups alone never exchange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_made_while_sessions_are_swapped_all_verify() {
    // UPSTs live 60 s and are replaced 30 s before expiry. Four tasks sign and send
    // in lockstep rounds; the clock moves 10 s between rounds, so every third round
    // all four race into a refresh.
    let w = world(Duration::from_secs(60)).await;
    let signer =
        Arc::new(w.signer(w.token(UserTokenOptions::new("kim").ttl(Duration::from_secs(86_400)))));
    let http = reqwest::Client::new();
    let url = w.emulator.api_url().join("/20160918/instances").unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    signer.session().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (signer, http, url, barrier, clock) = (
            Arc::clone(&signer),
            http.clone(),
            url.clone(),
            Arc::clone(&barrier),
            w.clock.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..25 {
                let body = format!(r#"{{"task":{t},"round":{round}}}"#);
                let mut request = http
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .body(body)
                    .build()
                    .unwrap();
                signer.sign_reqwest(&mut request).await.unwrap();
                statuses.push(http.execute(request).await.unwrap().status().as_u16());
                if barrier.wait().await.is_leader() {
                    clock.advance(Duration::from_secs(10));
                }
                barrier.wait().await;
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 100);
    assert!(all.iter().all(|&s| s == 200), "{all:?}");
    let exchanges = w.emulator.exchanges_for("kim");
    assert!(
        exchanges >= 8,
        "sessions were replaced during the run ({exchanges})"
    );
    assert_eq!(w.emulator.counters().rejected_requests, 0);

    // A session replaced long ago still signs validly until its own UPST expires.
    let w2 = world(Duration::from_secs(600)).await;
    let signer = w2.signer(w2.token(UserTokenOptions::new("lou")));
    let old = signer.session().await.unwrap();
    signer.invalidate();
    let new = signer.session().await.unwrap();
    assert!(!Arc::ptr_eq(&old, &new));
    for session in [&old, &new] {
        let mut request = http
            .get(w2.emulator.api_url().join("/x").unwrap())
            .build()
            .unwrap();
        oci_token_exchange::sign_reqwest_request(
            &mut request,
            &session.signing_params(w2.clock.now()),
        )
        .unwrap();
        assert_eq!(http.execute(request).await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn invalidate_forces_one_new_exchange() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("lee")));
    let first = signer.session().await.unwrap();
    signer.invalidate();
    let second = signer.session().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(signer.session_refused(&first), "stale: no effect");
    assert!(Arc::ptr_eq(&second, &signer.session().await.unwrap()));
    assert!(signer.session_refused(&second));
    assert!(signer.current_session().is_none());
    signer.session().await.unwrap();
    assert_eq!(w.emulator.exchanges_for("lee"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_pool_never_hands_out_a_key_twice() {
    let pool = KeyPool::new(2);
    pool.fill();
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let key = pool.take().await.unwrap();
        assert!(
            seen.insert(key.public_key().to_spki_base64()),
            "a key was handed out twice"
        );
    }
    // The pool refills in the background up to its target.
    for _ in 0..200 {
        if pool.available() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pool.available(), 2);
    assert_eq!(pool.generated(), 8);

    let off = KeyPool::new(0);
    off.take().await.unwrap();
    assert_eq!((off.available(), off.generated()), (0, 1));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let token = unsigned_token("sub", "jti", START);
    let exchange = TokenExchange::builder()
        .domain_url("https://idcs-x.identity.oraclecloud.com")
        .client_credentials("id", "client-secret-value")
        .build()
        .unwrap();
    let signer = TokenExchangeSigner::builder(exchange.clone())
        .subject_token(token.clone())
        .build()
        .unwrap();
    let cache = SignerCache::builder(exchange).build();
    let text = format!("{signer:?} {cache:?}");
    assert!(
        !text.contains(token.expose_secret()) && !text.contains("client-secret-value"),
        "{text}"
    );
}

/// A token source whose first call panics, as buggy user code might.
#[derive(Debug)]
struct PanicsOnce {
    calls: std::sync::atomic::AtomicU32,
    token: SecretString,
}

impl oci_token_exchange::SubjectTokenSource for PanicsOnce {
    fn subject_token(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = oci_token_exchange::Result<SecretString>> + Send + '_>,
    > {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if call == 0 {
                // Give every waiter time to join this refresh, then fail hard.
                tokio::time::sleep(Duration::from_millis(300)).await;
                panic!("the first refresh panics");
            }
            Ok(self.token.clone())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_panics_releases_its_waiters_and_the_next_one_works() {
    let w = world(Duration::from_secs(3600)).await;
    let source = Arc::new(PanicsOnce {
        calls: 0.into(),
        token: w.token(UserTokenOptions::new("max")),
    });
    let signer = Arc::new(
        TokenExchangeSigner::builder(w.exchange.clone())
            .subject_token_source(source)
            .clock(w.clock.clone())
            .build()
            .unwrap(),
    );
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let signer = Arc::clone(&signer);
            tokio::spawn(async move { signer.session().await })
        })
        .collect();
    for waiter in waiters {
        let err = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("no waiter hangs")
            .unwrap()
            .expect_err("the refresh panicked");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
    let session = signer.session().await.expect("the next refresh runs");
    assert_eq!(session.user_ocid(), Emulator::user_ocid("max"));
    assert_eq!(w.emulator.counters().exchanges, 1);
}

#[tokio::test]
async fn a_transient_refresh_failure_keeps_the_still_valid_session() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("ned").ttl(Duration::from_secs(6 * 3600))));
    let first = signer.session().await.unwrap();
    w.clock.set(first.expires_at() - Duration::from_secs(299));
    w.emulator.inject_fault(Fault::Status(503), 3);
    let during = signer
        .session()
        .await
        .expect("the valid session, not the 503");
    assert!(Arc::ptr_eq(&first, &during));
    let requests = w.emulator.counters().exchange_requests;
    // Within the backoff, no new attempt: callers do not wait on a failing domain.
    w.clock.advance(Duration::from_secs(5));
    assert!(Arc::ptr_eq(&first, &signer.session().await.unwrap()));
    assert_eq!(w.emulator.counters().exchange_requests, requests);
    // After it, the refresh is tried again and succeeds.
    w.clock.advance(Duration::from_secs(6));
    let fresh = signer.session().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    // A reauthentication error is never papered over.
    let short = w.signer(w.token(UserTokenOptions::new("ola").ttl(Duration::from_secs(900))));
    short.session().await.unwrap();
    w.clock.advance(Duration::from_secs(901));
    assert!(
        short
            .session()
            .await
            .expect_err("expired")
            .is_reauth_required()
    );
}

fn invalid_grant() -> Fault {
    Fault::Respond {
        status: 400,
        body: r#"{"error":"invalid_grant","error_description":"the subject token was revoked"}"#
            .into(),
    }
}

/// Issue 9, defect 1: a reauthentication error is never answered with the old
/// session, not even just after the failure.
#[tokio::test]
async fn a_reauth_failure_is_never_masked_by_the_fallback() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("pia").ttl(Duration::from_secs(6 * 3600))));
    let first = signer.session().await.unwrap();
    w.clock.set(first.expires_at() - Duration::from_secs(299));
    w.emulator.inject_fault(invalid_grant(), 1);
    let err = signer
        .session()
        .await
        .expect_err("the refusal, not the old session");
    assert!(err.is_reauth_required(), "{err:?}");
    w.clock.advance(Duration::from_secs(1));
    let err = signer
        .session()
        .await
        .expect_err("still the refusal one second later");
    assert!(err.is_reauth_required(), "{err:?}");
    assert_eq!(err.oauth_error(), Some("invalid_grant"));
}

/// A refusal for good drops the old session: once the refusal's memory has passed,
/// a transient failure must not bring the refused user's old session back.
#[tokio::test]
async fn a_session_refused_for_good_never_returns_as_a_fallback() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("ria").ttl(Duration::from_secs(6 * 3600))));
    let first = signer.session().await.unwrap();
    w.clock.set(first.expires_at() - Duration::from_secs(299));
    w.emulator.inject_fault(invalid_grant(), 1);
    assert!(signer.session().await.unwrap_err().is_reauth_required());
    // The refusal is forgotten after 30 s; the next attempt fails transiently.
    w.clock.advance(Duration::from_secs(31));
    w.emulator.inject_fault(Fault::Status(503), 3);
    let err = signer
        .session()
        .await
        .expect_err("the transient failure, not the refused user's old session");
    assert!(err.is_retryable(), "{err:?}");
}

/// A refresh whose task never runs (its runtime shut down first) does not leave the
/// signer waiting on it forever.
#[test]
fn a_refresh_whose_task_never_ran_does_not_wedge_the_signer() {
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let w = background.block_on(world(Duration::from_secs(3600)));
    let signer = w.signer(w.token(UserTokenOptions::new("sol")));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        // Polled once: the refresh is registered and its task spawned, not run.
        let mut call = std::pin::pin!(signer.session());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
    });
    drop(first); // the refresh task is dropped unrun
    let session = background
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), signer.session()).await });
    let session = session
        .expect("no hang")
        .expect("a fresh refresh, not a dead one");
    assert_eq!(session.user_ocid(), Emulator::user_ocid("sol"));
    drop(w);
    background.shutdown_background();
}

/// Issue 9, defect 1: a clock that steps back ends the fallback window instead of
/// stretching it.
#[tokio::test]
async fn a_clock_step_back_ends_the_fallback_window() {
    let w = world(Duration::from_secs(3600)).await;
    let signer =
        w.signer(w.token(UserTokenOptions::new("quin").ttl(Duration::from_secs(6 * 3600))));
    let first = signer.session().await.unwrap();
    let failed_at = first.expires_at() - Duration::from_secs(200);
    w.clock.set(failed_at);
    w.emulator.inject_fault(Fault::Status(503), 3);
    let during = signer.session().await.expect("the still-valid session");
    assert!(Arc::ptr_eq(&first, &during));
    let requests = w.emulator.counters().exchange_requests;
    // The clock steps back 50 s (still inside the refresh margin), then 11 s pass.
    w.clock.set(failed_at - Duration::from_secs(50));
    w.clock.advance(Duration::from_secs(11));
    let fresh = signer
        .session()
        .await
        .expect("a new attempt, which succeeds");
    assert!(!Arc::ptr_eq(&first, &fresh), "the window did not end");
    assert_eq!(w.emulator.counters().exchange_requests, requests + 1);
}

/// Found by the fault schedule under load: a garbage answer from the domain (200 with
/// an HTML body) says nothing about the user's token, so it fails the call that met it
/// but is not remembered as a refusal: the next call exchanges again. (Remembered, it
/// failed that user's calls for 30 s.)
#[tokio::test]
async fn a_garbage_answer_is_not_remembered_as_a_refusal() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(10);
    let token = w.token(UserTokenOptions::new("gus"));
    w.emulator.inject_fault(Fault::GarbageBody, 1);
    let err = cache
        .signer_for(&token)
        .await
        .unwrap()
        .session()
        .await
        .expect_err("the garbage answer");
    assert_eq!(err.kind(), ErrorKind::MalformedResponse);
    cache
        .signer_for(&token)
        .await
        .unwrap()
        .session()
        .await
        .expect("the next call exchanges again");
    assert_eq!(w.emulator.counters().exchanges, 1);
}

/// Issue 9, defect 8: a token the domain refuses costs one exchange per burst, not
/// one per request; the memory lasts 30 s of clock time.
#[tokio::test]
async fn a_refused_token_costs_one_exchange_per_burst() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(10);
    let token = w.token(UserTokenOptions::new("rex"));
    w.emulator.inject_fault(invalid_grant(), 1);
    let keys = w.emulator.counters().exchange_requests;
    for _ in 0..20 {
        let err = cache
            .signer_for(&token)
            .await
            .unwrap()
            .session()
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ExchangeRejected);
        assert!(err.is_reauth_required());
        assert_eq!(err.http_status(), Some(400));
    }
    assert_eq!(w.emulator.counters().exchange_requests, keys + 1);
    w.clock.advance(Duration::from_secs(29));
    assert!(
        cache
            .signer_for(&token)
            .await
            .unwrap()
            .session()
            .await
            .is_err()
    );
    assert_eq!(w.emulator.counters().exchange_requests, keys + 1);
    w.clock.advance(Duration::from_secs(2));
    cache
        .signer_for(&token)
        .await
        .unwrap()
        .session()
        .await
        .expect("after 30 s a new attempt, which succeeds");
    assert_eq!(w.emulator.counters().exchange_requests, keys + 2);
}

/// Issue 9, defect 10: a full cache whose admission policy rejects a new entry still
/// gives every concurrent caller of one token the same signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_is_still_single_flight_per_token() {
    let w = world(Duration::from_secs(3600)).await;
    let cache = w.cache(1);
    let hot = w.token(UserTokenOptions::new("hot"));
    for _ in 0..500 {
        cache.signer_for(&hot).await.unwrap();
    }
    assert_eq!(cache.len().await, 1);
    w.emulator
        .inject_fault(Fault::Delay(Duration::from_millis(300)), 1);
    let new = w.token(UserTokenOptions::new("newcomer"));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cache = cache.clone();
        let new = new.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            let signer = cache.signer_for(&new).await?;
            // Let the cache run its maintenance (admission) meanwhile.
            cache.len().await;
            signer.session().await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("session");
    }
    assert_eq!(w.emulator.exchanges_for("newcomer"), 1);
}

/// A token source that can move the test clock while a refresh is under way, as a
/// slow source or a slow exchange lets real time pass.
#[derive(Debug)]
struct SteppingSource {
    token: SecretString,
    clock: Arc<FixedClock>,
    /// Added to the clock by the next call, once.
    step_on_next_call: std::sync::Mutex<Duration>,
}

impl SteppingSource {
    fn new(token: SecretString, clock: Arc<FixedClock>) -> Arc<Self> {
        Arc::new(Self {
            token,
            clock,
            step_on_next_call: std::sync::Mutex::new(Duration::ZERO),
        })
    }

    fn signer(self: &Arc<Self>, w: &World) -> TokenExchangeSigner {
        TokenExchangeSigner::builder(w.exchange.clone())
            .subject_token_source(
                Arc::clone(self) as Arc<dyn oci_token_exchange::SubjectTokenSource>
            )
            .clock(w.clock.clone())
            .build()
            .unwrap()
    }
}

impl oci_token_exchange::SubjectTokenSource for SteppingSource {
    fn subject_token(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = oci_token_exchange::Result<SecretString>> + Send + '_>,
    > {
        let step = std::mem::take(&mut *self.step_on_next_call.lock().unwrap());
        self.clock.advance(step);
        let token = self.token.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// Review fix (issue 9): the fallback is judged when the refresh ends, not when the
/// caller arrived. A session that was a valid fallback when the refresh started but
/// expires (within the 30 s skew) while it runs is not handed out.
#[tokio::test]
async fn a_fallback_that_expired_during_the_refresh_is_not_handed_out() {
    let w = world(Duration::from_secs(3600)).await;
    let source = SteppingSource::new(
        w.token(UserTokenOptions::new("uma").ttl(Duration::from_secs(6 * 3600))),
        w.clock.clone(),
    );
    let signer = source.signer(&w);
    let first = signer.session().await.unwrap();
    // Inside the refresh margin, 299 s before the UPST expires: a valid fallback.
    w.clock.set(first.expires_at() - Duration::from_secs(299));
    // The refresh takes 280 s and fails transiently: it ends 19 s before expiry,
    // inside the 30 s skew.
    *source.step_on_next_call.lock().unwrap() = Duration::from_secs(280);
    w.emulator.inject_fault(Fault::Status(503), 3);
    let err = signer
        .session()
        .await
        .expect_err("the transient failure, not a session about to expire");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.http_status(), Some(503));
}

/// Review fix (issue 9): a forced refresh (after OCI refused a session) that fails
/// keeps its mark, so the session made by the next attempt is still the one the
/// 401 guard protects: a second 401 within a minute does not renew it again.
#[tokio::test]
async fn a_failed_forced_refresh_keeps_the_401_guard_for_the_next_session() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("wes")));
    let first = signer.session().await.unwrap();
    assert!(signer.session_refused(&first), "a first 401 renews");
    w.emulator.inject_fault(Fault::Status(503), 3);
    let err = signer
        .session()
        .await
        .expect_err("the forced refresh fails");
    assert!(err.is_retryable(), "{err:?}");
    let second = signer.session().await.expect("the next attempt succeeds");
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(
        !signer.session_refused(&second),
        "a 401 for the replacement of a refused session does not renew it again"
    );
    assert!(Arc::ptr_eq(&second, &signer.session().await.unwrap()));
    assert_eq!(w.emulator.exchanges_for("wes"), 2);
}

/// Review fix (issue 9): a clock that steps back ends the 401 guard instead of
/// stretching it (the guard window is measured with `within`).
#[tokio::test]
async fn a_clock_step_back_ends_the_401_guard() {
    let w = world(Duration::from_secs(3600)).await;
    let signer = w.signer(w.token(UserTokenOptions::new("xia")));
    let first = signer.session().await.unwrap();
    assert!(signer.session_refused(&first));
    let second = signer.session().await.unwrap();
    assert!(
        !signer.session_refused(&second),
        "the guard holds just after a forced renewal"
    );
    assert!(signer.current_session().is_some());
    // The clock steps back 10 s to before the forced session was made.
    w.clock
        .set(SystemTime::UNIX_EPOCH + Duration::from_secs(START - 10));
    assert!(
        signer.session_refused(&second),
        "a clock step back ends the guard: the refused session is dropped"
    );
    assert!(signer.current_session().is_none());
    let third = signer.session().await.unwrap();
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(w.emulator.exchanges_for("xia"), 3);
}
