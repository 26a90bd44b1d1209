//! HTTP helpers shared by every outgoing call the crate makes: a client that never
//! follows redirects, and a size-limited body read.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// A `reqwest::Client` that never follows redirects (a redirect would re-send
/// credentials or tokens to a place this crate did not choose), with a connect
/// timeout and, if given, a whole-request timeout.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] if the client cannot be built.
pub(crate) fn client_without_redirects(
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().map_err(|e| {
        Error::new(ErrorKind::InvalidConfig, "cannot build the http client")
            .with_source(e.without_url())
    })
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed while reading (the error carries no URL).
    Transport(reqwest::Error),
    /// The body is longer than allowed.
    TooLarge,
}

/// Reads `response`'s body, failing as soon as it exceeds `max_bytes` (before
/// reading anything when the announced `content-length` already does).
pub(crate) async fn read_body_limited(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Transport(e.without_url()))?
    {
        if out.len().saturating_add(chunk.len()) > max_bytes {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
