//! The login side of the emulated identity domain: the authorization endpoint (no
//! login page: it logs in the configured demo user at once) and the
//! `authorization_code` and `refresh_token` grants of the token endpoint.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use url::Url;

use super::server::{json_response, oauth_error};
use super::{CodeGrant, RefreshGrant, State, UserTokenOptions, random_secret};

/// The authorization endpoint as routed.
pub(super) const AUTHORIZE_PATH: &str = "/oauth2/v1/authorize";
/// `grant_type` of the authorization code grant.
pub(super) const AUTHORIZATION_CODE: &str = "authorization_code";
/// `grant_type` of the refresh token grant.
pub(super) const REFRESH_TOKEN: &str = "refresh_token";
/// The scopes discovery lists.
pub(super) const SCOPES_SUPPORTED: [&str; 4] =
    ["openid", "profile", "email", "urn:opc:idm:__myscopes__"];
/// The scope of a login that asked for none.
const DEFAULT_SCOPE: &str = "openid";
/// How long an authorization code can be redeemed.
const CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a refresh token lives.
const REFRESH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most codes, and most refresh tokens, held at once (after pruning expired ones).
const MAX_GRANTS: usize = 10_000;

/// A plain-text error page: errors about the client or its redirect URI are never
/// redirected. The text is fixed; nothing from the request is echoed.
fn error_page(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "Authorization error: {message}\n"
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A 302 to `redirect_uri` with `params` added to its query, or an error page when
/// the URI cannot carry them.
fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "the redirect_uri is not a URL");
    };
    url.query_pairs_mut().extend_pairs(params);
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return error_page(StatusCode::BAD_REQUEST, "the redirect_uri is not a URL");
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// An RFC 6749 section 4.1.2.1 error redirect, with the `state` when there was one.
fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response<Full<Bytes>> {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect(redirect_uri, &params)
}

/// Whether `value` is 43 to 128 characters of RFC 7636's unreserved set (the shape of
/// both a verifier and an S256 challenge).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(crate::key::sha256(verifier.as_bytes()))
}

/// Drops the expired entries, then says whether there is room for one more.
fn prune<T>(map: &mut HashMap<String, T>, now: u64, expires: impl Fn(&T) -> u64) -> bool {
    map.retain(|_, grant| expires(grant) > now);
    map.len() < MAX_GRANTS
}

/// `GET /oauth2/v1/authorize`: checks the client and its redirect URI (errors shown
/// as a page), then the request (errors redirected), then logs in the current login
/// subject and redirects with a single-use code.
pub(super) fn authorize(state: &State, parts: &http::request::Parts) -> Response<Full<Bytes>> {
    state.counters().authorize_requests += 1;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    *state
        .last_authorization
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(query.clone());
    if parts.method != Method::GET {
        return error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "the authorization endpoint takes GET",
        );
    }
    let mut params = HashMap::new();
    for (k, v) in query {
        if params.insert(k, v).is_some() {
            return error_page(StatusCode::BAD_REQUEST, "a parameter is repeated");
        }
    }
    let param = |name: &str| params.get(name).map(String::as_str);
    if param("client_id") != Some(state.client_id.as_str()) {
        return error_page(StatusCode::BAD_REQUEST, "unknown client_id");
    }
    let Some(redirect_uri) = param("redirect_uri").filter(|uri| {
        state
            .redirect_uris
            .iter()
            .any(|registered| registered == uri)
    }) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the redirect_uri is not registered for this client",
        );
    };
    let client_state = param("state");
    let fail = |error: &str, description: &str| {
        error_redirect(redirect_uri, client_state, error, description)
    };
    if param("response_type") != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    let challenge = match (param("code_challenge"), param("code_challenge_method")) {
        (None, None) => None,
        (Some(challenge), Some("S256")) if pkce_shaped(challenge) => Some(challenge.to_owned()),
        (Some(_), Some("S256")) => {
            return fail(
                "invalid_request",
                "code_challenge is not a valid S256 challenge",
            );
        }
        (Some(_), _) => {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            );
        }
    };
    if state
        .deny_logins
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        tracing::info!(outcome = "denied", "emulator login");
        return fail("access_denied", "the user denied the request");
    }
    let scope = param("scope")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SCOPE)
        .to_owned();
    let subject = state.login_subject();
    let now = state.now_secs();
    let code = random_secret();
    {
        let mut codes = state.codes.lock().unwrap_or_else(PoisonError::into_inner);
        if !prune(&mut codes, now, |grant| grant.expires) {
            return fail(
                "temporarily_unavailable",
                "too many outstanding authorization codes",
            );
        }
        codes.insert(
            code.clone(),
            CodeGrant {
                subject,
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                scope,
                expires: now.saturating_add(CODE_TTL.as_secs()),
            },
        );
    }
    state.counters().logins += 1;
    tracing::info!(outcome = "logged_in", "emulator login");
    let mut out = vec![("code", code.as_str())];
    if let Some(client_state) = client_state {
        out.push(("state", client_state));
    }
    redirect(redirect_uri, &out)
}

fn bad(error: &str, description: &str) -> Response<Full<Bytes>> {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// The `authorization_code` grant (the client is already authenticated).
pub(super) fn code_grant(state: &State, fields: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    if field("scope").is_some() {
        return bad(
            "invalid_request",
            "scope is not allowed with the authorization_code grant",
        );
    }
    let Some(code) = field("code") else {
        return bad("invalid_request", "code is required");
    };
    // Taken under the lock: two requests can never redeem one code.
    let grant = state
        .codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(code);
    let Some(grant) = grant.filter(|grant| grant.expires > state.now_secs()) else {
        return bad(
            "invalid_grant",
            "the authorization code is invalid, expired or already used",
        );
    };
    if field("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return bad(
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        );
    }
    match (&grant.challenge, field("code_verifier")) {
        (None, None) => {}
        (Some(_), None) => return bad("invalid_grant", "code_verifier is required"),
        (None, Some(_)) => {
            return bad(
                "invalid_grant",
                "code_verifier sent for a code issued without a challenge",
            );
        }
        (Some(challenge), Some(verifier)) => {
            if !pkce_shaped(verifier) || s256(verifier) != *challenge {
                return bad(
                    "invalid_grant",
                    "code_verifier does not match the challenge",
                );
            }
        }
    }
    let response = issue(state, &grant.subject, &grant.scope);
    if response.status() == StatusCode::OK {
        state.counters().code_grants += 1;
    }
    response
}

/// The `refresh_token` grant (the client is already authenticated): rotating, a
/// used refresh token is refused.
pub(super) fn refresh_grant(
    state: &State,
    fields: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    if !state.refresh_tokens {
        return bad(
            "unauthorized_client",
            "the refresh_token grant is not enabled for this client",
        );
    }
    let Some(token) = field("refresh_token") else {
        return bad("invalid_request", "refresh_token is required");
    };
    let grant = state
        .refresh
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(token);
    let Some(grant) = grant.filter(|grant| grant.expires > state.now_secs()) else {
        return bad(
            "invalid_grant",
            "the refresh token is invalid, expired or already used",
        );
    };
    // A narrower scope may be asked for; never a wider one.
    let scope = match field("scope") {
        None => grant.scope,
        Some(asked) => {
            let granted: Vec<&str> = grant.scope.split_whitespace().collect();
            if asked.split_whitespace().any(|s| !granted.contains(&s)) {
                return bad("invalid_scope", "the scope exceeds the one granted");
            }
            asked.to_owned()
        }
    };
    let response = issue(state, &grant.subject, &scope);
    if response.status() == StatusCode::OK {
        state.counters().refresh_grants += 1;
    }
    response
}

/// The token response of both grants: an access token exchangeable like
/// `mint_user_token`'s, an id token and (when enabled) a new refresh token.
fn issue(state: &State, subject: &str, scope: &str) -> Response<Full<Bytes>> {
    let ttl = state.access_token_ttl;
    // `UserTokenOptions::new` gives each token a fresh random `jti`.
    let access_token = state.mint(&UserTokenOptions::new(subject).ttl(ttl).scope(scope));
    let mut id_options = UserTokenOptions::new(subject)
        .ttl(ttl)
        .audience(state.client_id.as_str());
    id_options.scope = None;
    let id_token = state.mint(&id_options);
    if access_token.is_empty() || id_token.is_empty() {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign the tokens",
        );
    }
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "id_token": id_token,
        "scope": scope,
    });
    if state.refresh_tokens {
        let now = state.now_secs();
        let token = random_secret();
        let mut refresh = state.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        if !prune(&mut refresh, now, |grant| grant.expires) {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many live refresh tokens",
            );
        }
        refresh.insert(
            token.clone(),
            RefreshGrant {
                subject: subject.to_owned(),
                scope: scope.to_owned(),
                expires: now.saturating_add(REFRESH_TTL.as_secs()),
            },
        );
        if let Some(map) = body.as_object_mut() {
            map.insert("refresh_token".into(), json!(token));
        }
    }
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(super::pkce_shaped(verifier));
        assert_eq!(
            super::s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pkce_shape_is_rfc_7636_length_and_charset() {
        assert!(!super::pkce_shaped(&"a".repeat(42)));
        assert!(super::pkce_shaped(&"a".repeat(128)));
        assert!(!super::pkce_shaped(&"a".repeat(129)));
        assert!(!super::pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
