//! The server side: checking an OCI signature on a received request.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::authz;
use super::key_id::KeyId;
use super::request::{SignableBody, SignableRequest, single_header};
use super::sign::{MethodClass, REQUEST_TARGET, classify};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{PublicKey, sha256};

/// How strictly [`verify`] checks a request.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    now: SystemTime,
    max_skew: Duration,
    allow_unsigned_body: bool,
}

impl VerifyOptions {
    /// Checks against `now`, allowing OCI's 5 minutes of clock skew and requiring
    /// body headers on POST, PUT and PATCH.
    #[must_use]
    pub fn new(now: SystemTime) -> Self {
        Self {
            now,
            max_skew: Duration::from_secs(300),
            allow_unsigned_body: false,
        }
    }

    /// The largest accepted difference between the signed date and `now`.
    #[must_use]
    pub fn max_skew(mut self, skew: Duration) -> Self {
        self.max_skew = skew;
        self
    }

    /// Accepts body methods signed without body headers (upload operations).
    #[must_use]
    pub fn allow_unsigned_body(mut self, allow: bool) -> Self {
        self.allow_unsigned_body = allow;
        self
    }
}

/// What a successful [`verify`] established.
#[derive(Debug)]
pub struct VerifiedRequest {
    key_id: KeyId,
    signed_headers: Vec<String>,
}

impl VerifiedRequest {
    /// The key id that signed the request.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The signed header names, lowercase, in signing order.
    #[must_use]
    pub fn signed_headers(&self) -> &[String] {
        &self.signed_headers
    }
}

/// Longest `Authorization` header read: a session-token key id (tokens are at most
/// 64 KiB everywhere in this crate), an 8192-bit signature and the header list fit
/// with room to spare. Longer ones are refused before they are parsed.
const MAX_AUTHORIZATION_LEN: usize = 96 * 1024;
/// Most header names a signature may list (the SDKs sign at most eight): the list
/// is checked for duplicates pairwise.
const MAX_SIGNED_HEADERS: usize = 64;
/// Longest header name quoted in an error.
const MAX_QUOTED_NAME: usize = 64;

/// `name` as quoted in an error: at most [`MAX_QUOTED_NAME`] characters.
fn quoted(name: &str) -> &str {
    name.char_indices()
        .nth(MAX_QUOTED_NAME)
        .map_or(name, |(end, _)| name.get(..end).unwrap_or(name))
}

fn rejected(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::SignatureRejected, message)
}

/// Why the signed header `name`, present in `headers`, cannot be read: repeated,
/// or its value not visible ASCII. The name is quoted only in part (the reader's
/// own error names it whole, and a name may be 64 KiB long).
fn unusable_header(headers: &http::HeaderMap, name: &str) -> Error {
    let reason = if headers.get_all(name).iter().nth(1).is_some() {
        "appears more than once"
    } else {
        "is not visible ascii"
    };
    rejected(format!("signed header '{}' {reason}", quoted(name)))
}

/// Verifies the OCI signature of a received request, as the OCI services do.
///
/// `request` must describe the request as received: the raw request-line target, the
/// `Host` header, all headers including `authorization`, and the body bytes.
/// `lookup` turns the signature's key id into the public key to check against (for
/// a session token, the key bound in the token).
///
/// Checks: a well-formed `Signature` authorization with algorithm `rsa-sha256`; that
/// `(request-target)`, `host` and `date` or `x-date` are signed, and for POST, PUT and
/// PATCH also `content-length`, `content-type` and `x-content-sha256` (unless
/// [`VerifyOptions::allow_unsigned_body`]); the signature; the body's length and
/// SHA-256 against the signed values; the signed date within the allowed skew.
/// An `Authorization` header over 96 KiB, or a signature listing more than 64
/// headers, is refused before it is read further.
///
/// # Errors
/// [`ErrorKind::SignatureRejected`] naming the failed check, or whatever `lookup`
/// returns.
pub fn verify<F>(
    request: &SignableRequest<'_>,
    options: &VerifyOptions,
    lookup: F,
) -> Result<VerifiedRequest>
where
    F: FnOnce(&KeyId) -> Result<PublicKey>,
{
    let authorization = single_header(request.headers, "authorization")
        .map_err(|_| rejected("authorization header is repeated or not ascii"))?
        .ok_or_else(|| rejected("request has no authorization header"))?;
    if authorization.len() > MAX_AUTHORIZATION_LEN {
        return Err(rejected("authorization header is too long"));
    }
    let params = authz::parse(authorization)?;
    let key_id = KeyId::parse(params.key_id).map_err(|_| rejected("malformed keyId"))?;

    let names: Vec<String> = params
        .headers
        .split(' ')
        .filter(|n| !n.is_empty())
        .take(MAX_SIGNED_HEADERS + 1)
        .map(str::to_ascii_lowercase)
        .collect();
    if names.len() > MAX_SIGNED_HEADERS {
        return Err(rejected("the signature lists too many headers"));
    }
    for (i, name) in names.iter().enumerate() {
        if names.iter().skip(i + 1).any(|n| n == name) {
            return Err(rejected(format!(
                "header '{}' is listed twice in the signature",
                quoted(name)
            )));
        }
    }
    let signed = |n: &str| names.iter().any(|s| s == n);
    let class = classify(request.method).map_err(|_| rejected("invalid method"))?;
    let mut required = vec![REQUEST_TARGET, "host"];
    if class == MethodClass::Body && !options.allow_unsigned_body {
        required.extend(["content-length", "content-type", "x-content-sha256"]);
    }
    for name in required {
        if !signed(name) {
            return Err(rejected(format!("required header '{name}' is not signed")));
        }
    }
    if class != MethodClass::Body && !request.body.is_empty() && !signed("x-content-sha256") {
        return Err(rejected(
            "request has a body that the signature does not cover",
        ));
    }
    let date_name = if signed("x-date") {
        "x-date"
    } else if signed("date") {
        "date"
    } else {
        return Err(rejected("neither 'date' nor 'x-date' is signed"));
    };

    let mut signing_string = String::with_capacity(512);
    for name in &names {
        if !signing_string.is_empty() {
            signing_string.push('\n');
        }
        signing_string.push_str(name);
        signing_string.push_str(": ");
        match name.as_str() {
            REQUEST_TARGET => {
                signing_string.push_str(&request.method.to_ascii_lowercase());
                signing_string.push(' ');
                signing_string.push_str(request.target);
            }
            "host" => signing_string.push_str(&request.host),
            _ => {
                let value = single_header(request.headers, name)
                    .map_err(|_| unusable_header(request.headers, name))?
                    .ok_or_else(|| {
                        rejected(format!("signed header '{}' is missing", quoted(name)))
                    })?;
                signing_string.push_str(value);
            }
        }
    }

    let signature = STANDARD
        .decode(params.signature)
        .map_err(|_| rejected("signature is not valid base64"))?;
    let public_key = lookup(&key_id)?;
    if !public_key.verify_pkcs1_sha256(signing_string.as_bytes(), &signature) {
        return Err(rejected("signature does not match the request"));
    }

    // The signature is good; now check that the signed values describe this request.
    let header = |n: &str| single_header(request.headers, n).ok().flatten();
    if signed("x-content-sha256") {
        let actual = match request.body {
            SignableBody::Bytes(b) => sha256(b),
            SignableBody::Precomputed { sha256, .. } => sha256,
            SignableBody::Stream => {
                return Err(rejected("body hash cannot be checked on a stream"));
            }
        };
        if header("x-content-sha256") != Some(STANDARD.encode(actual).as_str()) {
            return Err(rejected("x-content-sha256 does not match the body"));
        }
    }
    if signed("content-length") {
        let actual = match request.body {
            SignableBody::Bytes(b) => Some(b.len() as u64),
            SignableBody::Precomputed { content_length, .. } => Some(content_length),
            SignableBody::Stream => None,
        };
        if actual.is_none() || header("content-length").and_then(|v| v.parse().ok()) != actual {
            return Err(rejected("content-length does not match the body"));
        }
    }
    let date = header(date_name)
        .and_then(super::date::parse)
        .ok_or_else(|| rejected(format!("signed '{date_name}' is not an http-date")))?;
    let skew = options
        .now
        .duration_since(date)
        .unwrap_or_else(|e| e.duration());
    if skew > options.max_skew {
        return Err(rejected(format!(
            "'{date_name}' is outside the allowed clock skew"
        )));
    }

    Ok(VerifiedRequest {
        key_id,
        signed_headers: names,
    })
}
