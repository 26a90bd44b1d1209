//! The signer: a pure function from (request, key, key id, time, options) to headers.

use std::sync::LazyLock;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::authz;
use super::key_id::KeyId;
use super::request::{SignableBody, SignableRequest, is_visible_ascii, single_header};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{SigningKey, sha256};

pub(crate) const REQUEST_TARGET: &str = "(request-target)";
/// Signed headers whose values are credentials: shown as `[redacted]` in
/// [`SigningOutput::signing_string`] (the signature covers the real value).
const SECRET_HEADERS: [&str; 1] = ["opc-obo-token"];
/// What a secret header value reads as in the shown signing string.
const REDACTED: &str = "[redacted]";
/// Content type that every OCI SDK defaults to on body methods.
const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Which header carries the signed date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DateHeader {
    /// `date` (what the Python, Go and Java SDKs sign; the default).
    #[default]
    Date,
    /// `x-date` (what the TypeScript SDK signs; the service prefers it when both are
    /// sent). Useful where a proxy or browser rewrites `date`.
    XDate,
}

impl DateHeader {
    fn name(self) -> &'static str {
        match self {
            Self::Date => "date",
            Self::XDate => "x-date",
        }
    }
}

/// How a request is signed beyond the defaults.
///
/// The defaults follow the OCI SDKs: `date (request-target) host` for every method,
/// plus `content-length content-type x-content-sha256` for POST, PUT and PATCH, plus
/// `opc-obo-token` when the request carries one (as the Java SDK does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningOptions {
    date_header: DateHeader,
    exclude_body: bool,
    extra_headers: Vec<HeaderName>,
    explicit_headers: Option<Vec<Part>>,
}

/// One entry of the signed header list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    RequestTarget,
    Header(HeaderName),
}

impl Default for SigningOptions {
    fn default() -> Self {
        Self {
            date_header: DateHeader::Date,
            exclude_body: false,
            extra_headers: vec![HeaderName::from_static("opc-obo-token")],
            explicit_headers: None,
        }
    }
}

pub(crate) static DEFAULT_OPTIONS: LazyLock<SigningOptions> =
    LazyLock::new(SigningOptions::default);

impl SigningOptions {
    /// The defaults (see the type's documentation).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Signs `x-date` instead of `date`.
    #[must_use]
    pub fn date_header(mut self, header: DateHeader) -> Self {
        self.date_header = header;
        self
    }

    /// Signs only `date (request-target) host` even on body methods, as OCI expects
    /// for uploads (Object Storage `PutObject` and `UploadPart`, Streaming
    /// `PutMessages`). The body headers are still sent, just not signed.
    #[must_use]
    pub fn exclude_body(mut self, exclude: bool) -> Self {
        self.exclude_body = exclude;
        self
    }

    /// Headers signed when the request carries them, after the standard ones
    /// (default: `opc-obo-token`). Replaces the list.
    #[must_use]
    pub fn extra_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.extra_headers = names.into_iter().collect();
        self
    }

    /// Signs exactly these headers, in this order, instead of the computed list; for
    /// interoperating with signers that order headers differently (the TypeScript
    /// SDK signs `content-type` before `content-length`). Use `(request-target)` for
    /// the pseudo-header. `date`, `x-date`, `host`, `content-length`, `content-type`
    /// and `x-content-sha256` are filled in as usual; any other header must be
    /// present in the request.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidHeader`] if a name is not a valid lowercase header name.
    pub fn signed_headers<'n>(mut self, names: impl IntoIterator<Item = &'n str>) -> Result<Self> {
        let names = names
            .into_iter()
            .map(|n| {
                if n == REQUEST_TARGET {
                    return Ok(Part::RequestTarget);
                }
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map(Part::Header)
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidHeader,
                            "invalid name in signed header list",
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.explicit_headers = Some(names);
        Ok(self)
    }
}

impl SigningOptions {
    /// Whether body headers are left unsigned.
    #[must_use]
    pub fn excludes_body(&self) -> bool {
        self.exclude_body
    }
}

/// Everything besides the request that a signature depends on.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    key: &'a SigningKey,
    key_id: &'a KeyId,
    time: SystemTime,
    options: &'a SigningOptions,
}

impl<'a> SigningParams<'a> {
    /// Parameters with the default [`SigningOptions`]. `time` is used for the date
    /// header when the request does not carry one.
    #[must_use]
    pub fn new(key: &'a SigningKey, key_id: &'a KeyId, time: SystemTime) -> Self {
        Self {
            key,
            key_id,
            time,
            options: &DEFAULT_OPTIONS,
        }
    }

    /// Uses `options` instead of the defaults.
    #[must_use]
    pub fn with_options(mut self, options: &'a SigningOptions) -> Self {
        self.options = options;
        self
    }
}

/// The result of signing: the headers to set on the request, in signing order,
/// ending with `authorization` (marked sensitive).
#[derive(Clone)]
pub struct SigningOutput {
    headers: Vec<(HeaderName, HeaderValue)>,
    signing_string: String,
}

impl SigningOutput {
    /// The headers to set: every signed header except `(request-target)`, then
    /// `authorization`. Setting them makes the request match its signature.
    #[must_use]
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The `Authorization` header value. It contains the key id, which for a session
    /// token is a bearer credential: do not log it.
    #[must_use]
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n == http::header::AUTHORIZATION)
            .map(|(_, v)| v)
    }

    /// The string that was signed (for debugging a 401). It holds no secret: signed
    /// header values, the method, host and path, except that the value of a signed
    /// `opc-obo-token` (a user's token) reads `[redacted]`; the signature covers the
    /// real value.
    #[must_use]
    pub fn signing_string(&self) -> &str {
        &self.signing_string
    }

    /// Sets every header on `headers`, replacing existing values.
    pub fn apply_to_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

impl std::fmt::Debug for SigningOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SigningOutput")
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

/// How OCI treats a method's body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodClass {
    /// GET, HEAD, DELETE, OPTIONS: body not signed.
    Plain,
    /// POST, PUT, PATCH: body headers signed.
    Body,
    /// Anything else: signable only without a body.
    Other,
}

pub(crate) fn classify(method: &str) -> Result<MethodClass> {
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(Error::new(
            ErrorKind::UnsupportedMethod,
            "method is not a valid http token",
        ));
    }
    let upper = |m: &str| method.eq_ignore_ascii_case(m);
    Ok(if upper("POST") || upper("PUT") || upper("PATCH") {
        MethodClass::Body
    } else if upper("GET") || upper("HEAD") || upper("DELETE") || upper("OPTIONS") {
        MethodClass::Plain
    } else {
        MethodClass::Other
    })
}

/// Signs `request`. Pure: no I/O, no clock; the request is not modified.
///
/// # Errors
/// - [`ErrorKind::UnsupportedMethod`]: a method that is not an HTTP token, or a body
///   on a method whose body OCI does not sign (GET, HEAD, DELETE, unknown methods).
/// - [`ErrorKind::InvalidHeader`]: a signed header that is repeated, not visible
///   ASCII, or a `content-length` that disagrees with the body.
/// - [`ErrorKind::InvalidDate`]: a caller-supplied `date`/`x-date` that is not an
///   HTTP-date, or a signing time outside the years 1970 to 9999.
/// - [`ErrorKind::InvalidUrl`]: a target that is not an origin-form path.
/// - [`ErrorKind::UnsignableBody`]: a [`SignableBody::Stream`] whose hash is needed.
/// - [`ErrorKind::Crypto`]: the backend failed.
pub fn sign(request: &SignableRequest<'_>, params: &SigningParams<'_>) -> Result<SigningOutput> {
    let options = params.options;
    let class = classify(request.method)?;
    let signs_body = class == MethodClass::Body && !options.exclude_body;
    if class != MethodClass::Body && !request.body.is_empty() {
        return Err(Error::new(
            ErrorKind::UnsupportedMethod,
            format!(
                "{} request has a body, which oci signatures do not cover for this method",
                request.method
            ),
        ));
    }
    check_target(request.target)?;
    if !is_visible_ascii(&request.host) || request.host.contains(' ') || request.host.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            "host is empty or not visible ascii",
        ));
    }

    let names: Vec<Part> = match &options.explicit_headers {
        Some(list) => list.clone(),
        None => {
            let mut names = Vec::with_capacity(7);
            names.push(Part::Header(HeaderName::from_static(
                options.date_header.name(),
            )));
            names.push(Part::RequestTarget);
            names.push(Part::Header(http::header::HOST));
            if signs_body {
                names.push(Part::Header(http::header::CONTENT_LENGTH));
                names.push(Part::Header(http::header::CONTENT_TYPE));
                names.push(Part::Header(HeaderName::from_static("x-content-sha256")));
            }
            for extra in &options.extra_headers {
                let part = Part::Header(extra.clone());
                if request.headers.contains_key(extra) && !names.contains(&part) {
                    names.push(part);
                }
            }
            names
        }
    };

    let mut signing_string = String::with_capacity(256 + request.target.len());
    let mut header_list = String::with_capacity(96);
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(names.len() + 1);
    // Byte ranges of secret values in `signing_string`, to redact in the shown copy.
    let mut secret_ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for part in &names {
        if !signing_string.is_empty() {
            signing_string.push('\n');
            header_list.push(' ');
        }
        let name = match part {
            Part::RequestTarget => {
                header_list.push_str(REQUEST_TARGET);
                signing_string.push_str(REQUEST_TARGET);
                signing_string.push_str(": ");
                for b in request.method.bytes() {
                    signing_string.push(char::from(b.to_ascii_lowercase()));
                }
                signing_string.push(' ');
                signing_string.push_str(request.target);
                continue;
            }
            Part::Header(name) => name,
        };
        header_list.push_str(name.as_str());
        signing_string.push_str(name.as_str());
        signing_string.push_str(": ");
        let value = header_value(request, params, name)?;
        if SECRET_HEADERS.contains(&name.as_str()) {
            secret_ranges.push(signing_string.len()..signing_string.len() + value.len());
        }
        signing_string.push_str(&value);
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Error::new(
                ErrorKind::InvalidHeader,
                format!("header '{name}' is not a valid header value"),
            )
        })?;
        out.push((name.clone(), value));
    }

    let signature = params.key.sign_pkcs1_sha256(signing_string.as_bytes())?;
    let signing_string = redact(signing_string, &secret_ranges);
    let authorization = authz::format(
        &header_list,
        params.key_id.expose_secret(),
        &STANDARD.encode(signature),
    );
    let mut authorization = HeaderValue::from_str(&authorization).map_err(|_| {
        Error::new(
            ErrorKind::InvalidKeyId,
            "key id is not a valid header value",
        )
    })?;
    authorization.set_sensitive(true);
    out.push((http::header::AUTHORIZATION, authorization));
    Ok(SigningOutput {
        headers: out,
        signing_string,
    })
}

/// `signed` with each range (ascending, disjoint) replaced by `[redacted]`; the
/// original is wiped when anything was redacted.
fn redact(signed: String, ranges: &[std::ops::Range<usize>]) -> String {
    if ranges.is_empty() {
        return signed;
    }
    let signed = zeroize::Zeroizing::new(signed);
    let mut shown = String::with_capacity(signed.len());
    let mut from = 0;
    for range in ranges {
        shown.push_str(signed.get(from..range.start).unwrap_or_default());
        shown.push_str(REDACTED);
        from = range.end;
    }
    shown.push_str(signed.get(from..).unwrap_or_default());
    shown
}

fn check_target(target: &str) -> Result<()> {
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            "request target must be a percent-encoded path starting with '/'",
        ));
    }
    Ok(())
}

fn header_value(
    request: &SignableRequest<'_>,
    params: &SigningParams<'_>,
    name: &HeaderName,
) -> Result<String> {
    if name == http::header::HOST {
        return Ok(request.host.clone().into_owned());
    }
    let supplied = single_header(request.headers, name.as_str())?;
    Ok(match name.as_str() {
        "date" | "x-date" => match supplied {
            Some(v) => {
                super::date::parse(v).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidDate,
                        format!("header '{name}' is not an http-date"),
                    )
                })?;
                v.to_owned()
            }
            None => super::date::format(params.time)?,
        },
        "content-length" => {
            let len = match request.body {
                SignableBody::Bytes(b) => b.len() as u64,
                SignableBody::Precomputed { content_length, .. } => content_length,
                SignableBody::Stream => return Err(unsignable()),
            };
            if let Some(v) = supplied
                && v.parse::<u64>().ok() != Some(len)
            {
                return Err(Error::new(
                    ErrorKind::InvalidHeader,
                    "content-length header does not match the body length",
                ));
            }
            len.to_string()
        }
        "x-content-sha256" => {
            let digest = match request.body {
                SignableBody::Bytes(b) => sha256(b),
                SignableBody::Precomputed { sha256, .. } => sha256,
                SignableBody::Stream => return Err(unsignable()),
            };
            STANDARD.encode(digest)
        }
        "content-type" => supplied.unwrap_or(DEFAULT_CONTENT_TYPE).to_owned(),
        _ => supplied
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidHeader,
                    format!("header '{name}' is to be signed but the request has none"),
                )
            })?
            .to_owned(),
    })
}

fn unsignable() -> Error {
    Error::new(
        ErrorKind::UnsignableBody,
        "streamed body has no precomputed length and sha-256; buffer it or supply them",
    )
}
