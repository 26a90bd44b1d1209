//! RFC 8414 authorization-server metadata and RFC 7591 client registration.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::model::{self, CLIENTS, Client, REGISTRATION_LIFETIME};
use super::pages::{json_response, oauth_error, read_body};
use super::{Inner, crypto, redirect};

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
    let body = match read_body(request.into_body()).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("invalid_client_metadata", "the body is not a json object");
    };
    let Ok(Some(redirect_uris)) = string_list(doc.get("redirect_uris")) else {
        return invalid("invalid_redirect_uri", "redirect_uris is required");
    };
    if redirect_uris.is_empty() || redirect_uris.len() > 10 {
        return invalid(
            "invalid_redirect_uri",
            "redirect_uris must list 1 to 10 uris",
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
        Some(Value::String(name)) if name.chars().count() <= 200 => Some(name.clone()),
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
        tracing::warn!(error = %err, "oauth proxy cannot store a client");
        return server_error();
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
