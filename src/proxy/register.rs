//! RFC 8414 authorization-server metadata and RFC 7591 client registration.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::model::{self, CLIENTS, Client, REGISTRATION_LIFETIME};
use super::pages::{json_response, oauth_error, read_body, temporarily_unavailable};
use super::{Inner, crypto, redirect};

/// Registrations a proxy accepts by default: 60 a minute, bursts of 20.
pub(super) const DEFAULT_REGISTRATION_RATE: (u32, u32) = (60, 20);
/// Largest registration request body: real clients send a few hundred bytes.
const MAX_REGISTRATION_BYTES: usize = 4 * 1024;
/// Most redirect URIs of one client.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI, in bytes.
const MAX_REDIRECT_URI_BYTES: usize = 512;
/// Longest client name, in characters.
const MAX_CLIENT_NAME_CHARS: usize = 200;
/// What a refused registration is told to wait when the store is full.
const STORE_FULL_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A token bucket of registrations, refilled by the proxy's clock.
pub(super) struct RateLimit {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Option<SystemTime>)>,
}

impl RateLimit {
    pub(super) fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), None)),
        }
    }

    /// Takes one registration, or says how long until one is available.
    fn take(&self, now: SystemTime) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        // A clock that moves back refills nothing.
        let elapsed = last
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or(Duration::ZERO);
        if last.is_none_or(|at| now > at) {
            *last = Some(now);
        }
        *tokens = (*tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(Duration::from_secs_f64(wait.clamp(1.0, 3600.0).ceil()))
        }
    }
}

/// The metadata's path (the issuer is an origin, so there is no path-inserted form).
pub(super) const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// `GET /.well-known/oauth-authorization-server`.
pub(super) async fn metadata(State(inner): State<Arc<Inner>>) -> Response<Body> {
    let base = &inner.base;
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "registration_endpoint": format!("{base}/register"),
            "revocation_endpoint": format!("{base}/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": inner.default_scopes,
            "authorization_response_iss_parameter_supported": true,
        }),
    );
    // Public metadata may be cached briefly.
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    response.headers_mut().remove(http::header::PRAGMA);
    response
}

fn invalid(code: &str, description: &str) -> Response<Body> {
    oauth_error(StatusCode::BAD_REQUEST, code, description)
}

fn string_list(value: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

/// `POST /register`: public clients whose redirect URIs match the allow-list.
pub(super) async fn register(
    State(inner): State<Arc<Inner>>,
    request: http::Request<Body>,
) -> Response<Body> {
    if let Err(wait) = inner.registrations.take(inner.clock.now()) {
        tracing::warn!(
            outcome = "rate_limited",
            retry_after_s = wait.as_secs(),
            "oauth proxy client registration"
        );
        return temporarily_unavailable(
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            "too many client registrations; retry later",
        );
    }
    let body = match read_body(request.into_body()).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    if body.len() > MAX_REGISTRATION_BYTES {
        return invalid(
            "invalid_client_metadata",
            "the client metadata is larger than 4 KiB",
        );
    }
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("invalid_client_metadata", "the body is not a json object");
    };
    let Ok(Some(redirect_uris)) = string_list(doc.get("redirect_uris")) else {
        return invalid("invalid_redirect_uri", "redirect_uris is required");
    };
    if redirect_uris.is_empty() || redirect_uris.len() > MAX_REDIRECT_URIS {
        return invalid(
            "invalid_redirect_uri",
            "redirect_uris must list 1 to 10 uris",
        );
    }
    if redirect_uris
        .iter()
        .any(|u| u.len() > MAX_REDIRECT_URI_BYTES)
    {
        return invalid(
            "invalid_redirect_uri",
            "a redirect uri is longer than 512 bytes",
        );
    }
    if let Some(bad) = redirect_uris
        .iter()
        .find(|u| !redirect::allowed(&inner.patterns, u))
    {
        tracing::info!(
            outcome = "refused",
            redirect_uri = ?bad.chars().take(200).collect::<String>(),
            "oauth proxy client registration"
        );
        return invalid(
            "invalid_redirect_uri",
            "a redirect uri is not allowed by this server",
        );
    }
    let Ok(grant_types) = string_list(doc.get("grant_types")) else {
        return invalid("invalid_client_metadata", "grant_types must be a list");
    };
    let grant_types =
        grant_types.unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if grant_types
        .iter()
        .any(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        || !grant_types.iter().any(|g| g == "authorization_code")
    {
        return invalid(
            "invalid_client_metadata",
            "grant_types must be authorization_code and optionally refresh_token",
        );
    }
    let Ok(response_types) = string_list(doc.get("response_types")) else {
        return invalid("invalid_client_metadata", "response_types must be a list");
    };
    if response_types.is_some_and(|r| r.iter().any(|t| t != "code")) {
        return invalid("invalid_client_metadata", "response_types must be code");
    }
    // Only public clients: any requested method is answered with "none" (RFC 7591
    // section 3.2.1 lets the server replace metadata values).
    let client_name = match doc.get("client_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.chars().count() <= MAX_CLIENT_NAME_CHARS => {
            Some(name.clone())
        }
        Some(_) => {
            return invalid(
                "invalid_client_metadata",
                "client_name must be a string of at most 200 characters",
            );
        }
    };
    let client_id = match crypto::random_token() {
        Ok(id) => id,
        Err(_) => return server_error(),
    };
    let issued_at = model::unix(inner.clock.now());
    let client = Client {
        client_id: client_id.clone(),
        client_name: client_name.clone(),
        redirect_uris: redirect_uris.clone(),
        issued_at,
        refresh: grant_types.iter().any(|g| g == "refresh_token"),
    };
    if let Err(err) = model::put(
        inner.store.as_ref(),
        CLIENTS,
        &client_id,
        &client,
        REGISTRATION_LIFETIME,
    )
    .await
    {
        // A full store (or one that is down) is temporary: clients may retry.
        tracing::warn!(error = %err, "oauth proxy cannot store a client");
        return temporarily_unavailable(
            StatusCode::SERVICE_UNAVAILABLE,
            STORE_FULL_RETRY_AFTER,
            "the server cannot register clients now; retry later",
        );
    }
    tracing::info!(
        client_id = %client_id,
        client_name = ?client_name.as_deref().unwrap_or(""),
        outcome = "registered",
        "oauth proxy client registration"
    );
    json_response(
        StatusCode::CREATED,
        &json!({
            "client_id": client_id,
            "client_id_issued_at": issued_at,
            "client_name": client_name,
            "redirect_uris": redirect_uris,
            "grant_types": grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }),
    )
}

pub(super) fn server_error() -> Response<Body> {
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the server cannot complete the request",
    )
}
