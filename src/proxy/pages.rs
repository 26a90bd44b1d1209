//! What the endpoints share: parameter parsing with a size limit, OAuth error
//! responses (RFC 6749 section 5.2), redirects, and HTML pages with their security
//! headers.

use std::collections::HashMap;

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use url::Url;

/// Largest request body read by any endpoint.
pub(super) const MAX_BODY: usize = 16 * 1024;

/// Request parameters (query or form), each at most once (RFC 6749 section 3.1).
#[derive(Default)]
pub(super) struct Params(HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` text; `None` when a parameter is
    /// repeated.
    pub(super) fn parse(input: &str) -> Option<Self> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(input.as_bytes()) {
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return None;
            }
        }
        Some(Self(map))
    }

    /// A parameter, `None` when absent or empty (RFC 6749: empty = absent).
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Reads a form body (at most [`MAX_BODY`]); the error is the response to send.
pub(super) async fn read_form(
    request: http::Request<Body>,
) -> Result<(http::request::Parts, Params), Response<Body>> {
    let (parts, body) = request.into_parts();
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let bytes = read_body(body).await?;
    if !form {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not utf-8",
        )
    })?;
    let params = Params::parse(text).ok_or_else(|| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a parameter is repeated",
        )
    })?;
    Ok((parts, params))
}

/// Reads a body of at most [`MAX_BODY`] bytes; 413 beyond.
pub(super) async fn read_body(body: Body) -> Result<bytes::Bytes, Response<Body>> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        )
    })
}

/// A JSON OAuth error response, never cached.
pub(super) fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    let mut response = json_response(
        status,
        &json!({ "error": code, "error_description": description }),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    }
    response
}

/// A 429 or 503 `temporarily_unavailable` answer with `Retry-After`.
pub(super) fn temporarily_unavailable(
    status: StatusCode,
    retry_after: std::time::Duration,
    description: &str,
) -> Response<Body> {
    let mut response = oauth_error(status, "temporarily_unavailable", description);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs()),
    );
    response
}

/// A JSON response with `Cache-Control: no-store` and `Pragma: no-cache`.
pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A 302 to `location`, never cached.
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `base` with `params` added to its query.
pub(super) fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        Err(_) => base.to_owned(),
    }
}

/// The redirect to a client's registered redirect URI with an error (RFC 6749
/// section 4.1.2.1, RFC 9207 `iss`).
pub(super) fn client_error(
    redirect_uri: &str,
    error: &str,
    state: Option<&str>,
    issuer: &str,
) -> Response<Body> {
    let mut params = vec![("error", error)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer));
    redirect(&with_query(redirect_uri, &params))
}

/// Adds `Access-Control-Allow-Origin: *` (for the JSON endpoints, which use no
/// cookies).
pub(super) async fn allow_any_origin(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The answer to a CORS preflight of a JSON endpoint.
pub(super) async fn preflight() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Escapes text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
padding:0 1rem;color:#222}code{background:#f3f3f3;padding:0 .2em;word-break:break-all}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}";

/// An HTML page with the security headers; `form_action` is the CSP's
/// `form-action` sources (`'none'` for pages without a form).
pub(super) fn html(
    status: StatusCode,
    title: &str,
    body: &str,
    form_action: &str,
) -> Response<Body> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
<style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title)
    );
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error page (for errors that must not be redirected to a client).
pub(super) fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    html(
        status,
        "Login failed",
        &format!("<h1>Login failed</h1><p>{}</p>", escape(message)),
        "'none'",
    )
}

/// A scope token (RFC 6749 section 3.3): printable ASCII without space, `"` or `\`.
pub(super) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_repeats_and_treat_empty_as_absent() {
        assert!(Params::parse("a=1&a=2").is_none());
        let p = Params::parse("a=1&b=&c=x%20y").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<script>\"'&"), "&lt;script&gt;&quot;&#x27;&amp;");
    }

    #[test]
    fn client_errors_keep_the_query_and_add_state_and_iss() {
        let r = client_error(
            "http://127.0.0.1:1/cb?x=1",
            "access_denied",
            Some("s t"),
            "http://i",
        );
        let location = r.headers()[header::LOCATION].to_str().unwrap();
        assert_eq!(
            location,
            "http://127.0.0.1:1/cb?x=1&error=access_denied&state=s+t&iss=http%3A%2F%2Fi"
        );
    }
}
