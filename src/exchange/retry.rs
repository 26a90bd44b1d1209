//! The retrying request loop: one POST per attempt, bounded attempts, jittered
//! exponential backoff, `Retry-After` honoured within the cap, each attempt traced.

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

use super::Inner;
use super::response::{self, Reply};
use crate::error::{Error, ErrorKind, Result};

/// Sends the prepared request until it succeeds, fails for good, or the attempts
/// run out.
///
/// Tracing (target `oci_token_exchange::exchange`): one event per attempt with
/// `attempt`, `status` (absent without a response), `latency_ms`, `opc_request_id`
/// and `outcome`; one `retrying` event with `attempt`, `delay_ms` and `outcome`
/// before each retry. Never the form, the subject token, a secret or a header.
pub(super) async fn send(
    inner: &Inner,
    headers: &http::HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> Result<Reply> {
    let mut backoff = inner.initial_backoff;
    let mut attempt: u32 = 1;
    loop {
        let started = tokio::time::Instant::now();
        let result = attempt_once(inner, headers, body, secrets).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let err = match result {
            Ok(reply) => {
                tracing::info!(
                    target: "oci_token_exchange::exchange",
                    attempt,
                    status = reply.status,
                    latency_ms,
                    opc_request_id = reply.opc_request_id.as_deref(),
                    outcome = "ok",
                    "token exchange attempt"
                );
                return Ok(reply);
            }
            Err(err) => err,
        };
        let outcome = outcome(&err);
        tracing::warn!(
            target: "oci_token_exchange::exchange",
            attempt,
            status = err.http_status(),
            latency_ms,
            opc_request_id = err.opc_request_id(),
            outcome,
            oauth_error = err.oauth_error(),
            "token exchange attempt"
        );
        if !err.is_retryable() || attempt >= inner.max_attempts {
            return Err(err);
        }
        let mut delay = jitter(backoff);
        if let Some(after) = err.retry_after() {
            if after > inner.max_backoff {
                tracing::warn!(
                    target: "oci_token_exchange::exchange",
                    attempt,
                    retry_after_ms = millis(after),
                    "not retrying: retry-after exceeds the maximum backoff"
                );
                return Err(err);
            }
            delay = delay.max(after);
        }
        tracing::info!(
            target: "oci_token_exchange::exchange",
            attempt,
            delay_ms = millis(delay),
            outcome,
            "retrying token exchange"
        );
        tokio::time::sleep(delay).await;
        backoff = backoff.saturating_mul(2).min(inner.max_backoff);
        attempt += 1;
    }
}

async fn attempt_once(
    inner: &Inner,
    headers: &http::HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> Result<Reply> {
    let response = inner
        .http
        .post(inner.token_url.clone())
        .headers(headers.clone())
        .body(body.to_vec())
        .timeout(inner.attempt_timeout)
        .send()
        .await
        .map_err(response::transport_error)?;
    response::read(response, &inner.token_url, inner.clock.now(), secrets).await
}

/// The stable `outcome` field of a failed attempt.
fn outcome(err: &Error) -> &'static str {
    match err.kind() {
        ErrorKind::ExchangeRejected if err.is_retryable() => "retryable_status",
        ErrorKind::ExchangeRejected => "rejected",
        ErrorKind::MalformedResponse => "malformed_response",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Transport => "transport",
        _ => "error",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A delay drawn uniformly from [step/2, step].
pub(super) fn jitter(step: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = step / 2;
    let extra = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if extra == 0 {
        0
    } else {
        random % extra.saturating_add(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }
}
