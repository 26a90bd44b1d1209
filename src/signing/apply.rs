//! Signing requests of the `http` and `reqwest` crates in place.

use super::request::{SignableBody, SignableRequest};
use super::sign::{SigningOutput, SigningParams, sign};
use crate::error::Result;

/// Signs an [`http::Request`] whose body is in memory and sets the signature headers.
///
/// The request is modified only when signing succeeds. For a streamed body, sign
/// [`http::request::Parts`] with [`sign_http_parts`] and a
/// [`SignableBody::Precomputed`].
///
/// # Errors
/// As [`sign`]; the request is then left untouched.
pub fn sign_http_request<B: AsRef<[u8]>>(
    request: &mut http::Request<B>,
    params: &SigningParams<'_>,
) -> Result<SigningOutput> {
    let output = {
        let signable = SignableRequest::from_uri(
            request.method().as_str(),
            request.uri(),
            request.headers(),
            SignableBody::Bytes(request.body().as_ref()),
        )?;
        sign(&signable, params)?
    };
    output.apply_to_headers(request.headers_mut());
    Ok(output)
}

/// Signs the head of an `http` request whose body is described by `body` (for
/// example [`SignableBody::Precomputed`] for a stream) and sets the signature
/// headers.
///
/// # Errors
/// As [`sign`]; `parts` is then left untouched.
pub fn sign_http_parts(
    parts: &mut http::request::Parts,
    body: SignableBody<'_>,
    params: &SigningParams<'_>,
) -> Result<SigningOutput> {
    let output = {
        let signable =
            SignableRequest::from_uri(parts.method.as_str(), &parts.uri, &parts.headers, body)?;
        sign(&signable, params)?
    };
    output.apply_to_headers(&mut parts.headers);
    Ok(output)
}

/// Signs a [`reqwest::Request`] and sets the signature headers.
///
/// A buffered body is hashed. A streaming body cannot be hashed without consuming
/// it, so it fails with [`ErrorKind::UnsignableBody`](crate::ErrorKind::UnsignableBody)
/// unless body headers are excluded ([`SigningOptions::exclude_body`](crate::SigningOptions::exclude_body));
/// it is never signed as empty.
///
/// # Errors
/// As [`sign`]; the request is then left untouched.
#[cfg(feature = "reqwest")]
pub fn sign_reqwest_request(
    request: &mut reqwest::Request,
    params: &SigningParams<'_>,
) -> Result<SigningOutput> {
    sign_reqwest_request_with_body(request, None, params)
}

/// [`sign_reqwest_request`] with the body described by `body` (for a stream with a
/// known digest) instead of read from the request.
#[cfg(feature = "reqwest")]
pub(crate) fn sign_reqwest_request_with_body(
    request: &mut reqwest::Request,
    body: Option<SignableBody<'_>>,
    params: &SigningParams<'_>,
) -> Result<SigningOutput> {
    let output = {
        let body = body.unwrap_or_else(|| match request.body() {
            None => SignableBody::EMPTY,
            Some(body) => body
                .as_bytes()
                .map_or(SignableBody::Stream, SignableBody::Bytes),
        });
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url(),
            request.headers(),
            body,
        )?;
        sign(&signable, params)?
    };
    output.apply_to_headers(request.headers_mut());
    Ok(output)
}
