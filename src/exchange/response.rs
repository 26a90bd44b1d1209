//! The token endpoint's answer: the token on success, else an [`Error`] carrying the
//! status, the OAuth error (with secrets scrubbed) and `opc-request-id`.

use std::time::{Duration, SystemTime};

use url::Url;

use crate::error::{Error, ErrorKind, HttpDetails, Result};
use crate::http_util::{self, BodyError};
use crate::secret::SecretString;

/// Largest response body read from the token endpoint.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Most bytes of `error_description` kept in an error (whole characters).
const MAX_DESCRIPTION_BYTES: usize = 300;
/// Most bytes of `error` kept in an error.
const MAX_ERROR_BYTES: usize = 64;
/// Most bytes of `opc-request-id` kept.
const MAX_REQUEST_ID_BYTES: usize = 100;
/// What a scrubbed secret reads as.
const REDACTED: &str = "[redacted]";
/// Dot-separated parts of a secret (a JWT's header, payload and signature) shorter
/// than this are not scrubbed on their own: they would match ordinary words.
const MIN_PART_CHARS: usize = 8;

/// A successful answer.
pub(super) struct Reply {
    pub(super) token: SecretString,
    pub(super) status: u16,
    pub(super) opc_request_id: Option<String>,
}

/// Reads the answer to one exchange request sent to `token_url`.
///
/// `secrets` are scrubbed from any text of the answer that reaches the error.
pub(super) async fn read(
    response: reqwest::Response,
    token_url: &Url,
    now: SystemTime,
    secrets: &[&str],
) -> Result<Reply> {
    if response.url() != token_url {
        return Err(Error::new(
            ErrorKind::ExchangeRejected,
            "the http client followed a redirect from the token endpoint; configure it without redirects",
        ));
    }
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut details = HttpDetails {
        status: Some(status.as_u16()),
        opc_request_id: header("opc-request-id")
            .map(|id| truncate(&scrub(&id, secrets), MAX_REQUEST_ID_BYTES)),
        retry_after: header("retry-after").and_then(|v| parse_retry_after(&v, now)),
        ..HttpDetails::default()
    };
    let bytes = match http_util::read_body_limited(response, MAX_RESPONSE_BYTES).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(Error::new(
                ErrorKind::MalformedResponse,
                "token endpoint response is too large",
            )
            .with_http(details));
        }
        Err(BodyError::Transport(e)) => return Err(transport_error(e).with_http(details)),
    };
    if status.is_success() {
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: String,
        }
        return match serde_json::from_slice::<TokenResponse>(&bytes) {
            Ok(r) => Ok(Reply {
                token: SecretString::new(r.token),
                status: status.as_u16(),
                opc_request_id: details.opc_request_id,
            }),
            Err(_) => Err(Error::new(
                ErrorKind::MalformedResponse,
                "token response is not json with a 'token' string",
            )
            .with_http(details)),
        };
    }
    if status.is_redirection() {
        return Err(Error::new(
            ErrorKind::ExchangeRejected,
            "token endpoint answered with a redirect, which is not followed",
        )
        .with_http(details));
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        let field = |n: &str| {
            map.get(n)
                .and_then(|v| v.as_str())
                .map(|s| scrub(s, secrets))
        };
        details.oauth_error = field("error").map(|e| truncate(&e, MAX_ERROR_BYTES));
        details.oauth_error_description =
            field("error_description").map(|d| truncate(&d, MAX_DESCRIPTION_BYTES));
    }
    Err(Error::new(
        ErrorKind::ExchangeRejected,
        "identity domain refused the token exchange",
    )
    .with_http(details))
}

/// A failure to send or receive, without the URL (reqwest's message can hold it;
/// never the body) in the message.
pub(super) fn transport_error(e: reqwest::Error) -> Error {
    let err = if e.is_timeout() {
        Error::new(ErrorKind::Timeout, "token exchange timed out")
    } else if e.is_connect() {
        Error::new(
            ErrorKind::Transport,
            "cannot connect to the identity domain",
        )
    } else {
        Error::new(ErrorKind::Transport, "token exchange request failed")
    };
    err.with_source(e.without_url())
}

/// Replaces any secret echoed by the server with `[redacted]`, and control
/// characters with spaces.
///
/// Each whole secret is replaced, then each dot-separated part of at least
/// [`MIN_PART_CHARS`] characters (a JWT's header, payload and signature), longest
/// first so that a part never hides a longer match.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    let mut pieces: Vec<&str> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| std::iter::once(*s).chain(s.split('.').filter(|p| p.len() >= MIN_PART_CHARS)))
        .collect();
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    pieces.dedup();
    for piece in pieces {
        if out.contains(piece) {
            out = out.replace(piece, REDACTED);
        }
    }
    out.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a
/// character boundary: an error's size is bounded in bytes whatever the script (300
/// characters of a 4-byte script were 1.2 KB, more in `Debug`'s escapes).
fn truncate(text: &str, max_bytes: usize) -> String {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// A `Retry-After` value: delay seconds or an HTTP-date (relative to `now`).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now + Duration::from_secs(7)), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn scrub_removes_echoed_secrets_and_their_parts() {
        let s = scrub("bad token eyJabcdefgh\n", &["eyJabcdefgh"]);
        assert_eq!(s, "bad token [redacted] ");
        let s = scrub(
            "payload eyJwYXlsb2Fk was rejected",
            &["eyJoZWFkZXI.eyJwYXlsb2Fk.c2lnbmF0dXJlMTIz"],
        );
        assert_eq!(s, "payload [redacted] was rejected");
        // Short secrets (a client secret need not be long) are scrubbed whole; an
        // empty one is ignored.
        assert_eq!(
            scrub("secret abc1 wrong", &["abc1", ""]),
            "secret [redacted] wrong"
        );
        // The longer form wins over the part it contains.
        assert_eq!(
            scrub(
                "Basic Y2xpZW50OnMz",
                &["Y2xpZW50OnMz", "Basic Y2xpZW50OnMz"]
            ),
            "[redacted]"
        );
    }
}
