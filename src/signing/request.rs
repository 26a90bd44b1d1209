//! What gets signed: a request's method, host, target, headers and body.

use std::borrow::Cow;

use http::HeaderMap;
use url::{Position, Url};

use crate::error::{Error, ErrorKind, Result};

/// The body of a request, as far as signing needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignableBody<'a> {
    /// The exact bytes that will be sent (empty for no body).
    Bytes(&'a [u8]),
    /// A body that is streamed: its byte length and SHA-256, computed by the caller.
    Precomputed {
        /// The body's length in bytes.
        content_length: u64,
        /// SHA-256 of the body bytes.
        sha256: [u8; 32],
    },
    /// A streamed body whose hash is unknown. It can be signed only when body headers
    /// are excluded ([`SigningOptions::exclude_body`](crate::SigningOptions::exclude_body));
    /// otherwise signing fails with [`ErrorKind::UnsignableBody`], never treating it
    /// as empty.
    Stream,
}

impl SignableBody<'_> {
    /// No body.
    pub const EMPTY: SignableBody<'static> = SignableBody::Bytes(&[]);

    /// Whether this body certainly has no bytes.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Bytes(b) => b.is_empty(),
            Self::Precomputed { content_length, .. } => *content_length == 0,
            Self::Stream => false,
        }
    }
}

/// A request to sign (or, on the server side, to verify), borrowed from wherever it
/// lives.
///
/// `target` is the path and query **exactly as sent on the wire** (already
/// percent-encoded; nothing is decoded or re-encoded) and `host` is the value of the
/// `Host` header (host, plus `:port` when the URL names a non-default port).
#[derive(Clone)]
pub struct SignableRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: Cow<'a, str>,
    pub(crate) target: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: SignableBody<'a>,
}

/// Header names only: values such as `opc-obo-token` are credentials.
impl std::fmt::Debug for SignableRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(http::HeaderName::as_str).collect();
        f.debug_struct("SignableRequest")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("target", &self.target)
            .field("headers", &names)
            .field(
                "body_len",
                &match self.body {
                    SignableBody::Bytes(bytes) => Some(bytes.len() as u64),
                    SignableBody::Precomputed { content_length, .. } => Some(content_length),
                    SignableBody::Stream => None,
                },
            )
            .finish()
    }
}

impl<'a> SignableRequest<'a> {
    /// A request to `url` as `reqwest` (and any client built on the `url` crate)
    /// sends it: host lower-cased, default port dropped, path and query as
    /// serialised by [`Url`]. A `Host` header in `headers` takes precedence.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidUrl`] if the URL is not `http`/`https` or has no host;
    /// [`ErrorKind::InvalidHeader`] for an unusable `Host` header.
    pub fn new(
        method: &'a str,
        url: &'a Url,
        headers: &'a HeaderMap,
        body: SignableBody<'a>,
    ) -> Result<Self> {
        match url.scheme() {
            "https" => {}
            "http" => refuse_plain_http(url.host_str().unwrap_or_default())?,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("url scheme '{other}' is not http or https"),
                ));
            }
        }
        let host = match host_header(headers)? {
            Some(h) => Cow::Borrowed(h),
            None => {
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| Error::new(ErrorKind::InvalidUrl, "url has no host"))?;
                match url.port() {
                    Some(port) => Cow::Owned(format!("{host}:{port}")),
                    None => Cow::Borrowed(host),
                }
            }
        };
        let target = &url[Position::BeforePath..Position::AfterQuery];
        Ok(Self {
            method,
            host,
            target,
            headers,
            body,
        })
    }

    /// A request for an [`http::Uri`] as hyper sends it: the path and query
    /// verbatim, the `Host` header if present, else the URI's host and any
    /// non-default port.
    ///
    /// As [`SignableRequest::new`], an absolute `http` URI is signed only for a
    /// loopback host, and other schemes are refused. A URI without a scheme (the
    /// origin-form `/path?query` of a request line, with the host in the `Host`
    /// header) carries no transport, so it is signed as it is: the caller decides
    /// where it goes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidUrl`] if the URI's scheme is not `http`/`https`, is `http`
    /// to a host that is not loopback, or if there is neither a `Host` header nor a
    /// host in the URI; [`ErrorKind::InvalidHeader`] for an unusable `Host` header.
    pub fn from_uri(
        method: &'a str,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
        body: SignableBody<'a>,
    ) -> Result<Self> {
        match uri.scheme_str() {
            None | Some("https") => {}
            Some("http") => refuse_plain_http(uri.host().unwrap_or_default())?,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidUrl,
                    format!("url scheme '{other}' is not http or https"),
                ));
            }
        }
        let host = match host_header(headers)? {
            Some(h) => Cow::Borrowed(h),
            None => {
                let host = uri
                    .host()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| Error::new(ErrorKind::InvalidUrl, "uri has no host"))?;
                let default_port = match uri.scheme_str() {
                    Some("https") => Some(443),
                    Some("http") => Some(80),
                    _ => None,
                };
                match uri.port_u16() {
                    Some(port) if Some(port) != default_port => {
                        Cow::Owned(format!("{host}:{port}"))
                    }
                    _ => Cow::Borrowed(host),
                }
            }
        };
        let target = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        Ok(Self {
            method,
            host,
            target,
            headers,
            body,
        })
    }

    /// A request from its raw parts, as a server receives them: the request line's
    /// target and the `Host` header value.
    #[must_use]
    pub fn from_parts(
        method: &'a str,
        host: &'a str,
        target: &'a str,
        headers: &'a HeaderMap,
        body: SignableBody<'a>,
    ) -> Self {
        Self {
            method,
            host: Cow::Borrowed(host),
            target,
            headers,
            body,
        }
    }

    /// The method.
    #[must_use]
    pub fn method(&self) -> &str {
        self.method
    }

    /// The host as signed.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path and query as signed.
    #[must_use]
    pub fn target(&self) -> &str {
        self.target
    }
}

/// The crate's one loopback rule: whether `host` (a name, an IPv4 address or a
/// bracketed IPv6 address) is `localhost` or a loopback address.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A signed request carries a bearer-equivalent key id (`ST$<token>`) and a
/// replayable signature: over plain HTTP, only to this machine.
fn refuse_plain_http(host: &str) -> Result<()> {
    if is_loopback_host(host) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidUrl,
            "refusing to sign a plain-http request to a non-loopback host; use https",
        ))
    }
}

/// The single `Host` header, if any.
fn host_header(headers: &HeaderMap) -> Result<Option<&str>> {
    single_header(headers, "host")
}

/// The single value of a header as a string, if present.
///
/// # Errors
/// [`ErrorKind::InvalidHeader`] when the header appears more than once or its value
/// is not visible ASCII (spaces and tabs allowed inside, not at the ends).
pub(crate) fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("header '{name}' appears more than once"),
        ));
    }
    let value = value
        .to_str()
        .ok()
        .filter(|v| is_visible_ascii(v))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidHeader,
                format!("header '{name}' is not visible ascii"),
            )
        })?;
    Ok(Some(value))
}

/// Visible ASCII with inner spaces or tabs, nothing at the ends that HTTP would strip.
pub(crate) fn is_visible_ascii(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
        && !bytes.first().is_some_and(|b| b.is_ascii_whitespace())
        && !bytes.last().is_some_and(|b| b.is_ascii_whitespace())
}
