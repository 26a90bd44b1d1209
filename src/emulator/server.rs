//! The emulator's HTTP server: routing, the identity domain and the control plane.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::faults::count_fault;
use super::login;
use super::{
    EMULATOR_TENANCY_OCID, Emulator, Fault, FaultEndpoint, RecordedExchange, State, UPST_KID,
    random_id, unix_secs,
};
use crate::error::{Error, ErrorKind, Result};
use crate::jwt;
use crate::key::{PublicKey, SigningKey};
use crate::protocol::{GRANT_TYPE, RPST_TYPE, SUBJECT_TOKEN_TYPE, UPST_TYPE};
use crate::signing::{KeyId, SignableBody, SignableRequest, VerifyOptions, verify};

/// The token endpoint as routed (`protocol::TOKEN_PATH` below the domain's root).
const TOKEN_PATH: &str = "/oauth2/v1/token";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
const JWKS_PATH: &str = "/admin/v1/SigningCert/jwk";
const MAX_BODY: usize = 1024 * 1024;
/// The `iss` of OCI session tokens.
const UPST_ISSUER: &str = "authService.oracle.com";

/// Returned by a handler to close the connection without an answer: with a TCP
/// reset when `reset`, else an orderly close.
#[derive(Debug)]
pub(super) struct DropConnection {
    reset: bool,
}

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

type Reply = std::result::Result<Response<Full<Bytes>>, DropConnection>;

/// A connection that, once a handler asked for a reset, is closed with a TCP RST
/// (`SO_LINGER` 0) when hyper drops it.
struct Connection {
    stream: tokio::net::TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // A zero linger never blocks: close discards what is unsent and sends
            // RST. (`set_zero_linger` needs tokio 1.50; this crate asks for 1.40.)
            #[allow(deprecated)]
            let _ = self.stream.set_linger(Some(Duration::ZERO));
        }
    }
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pub(super) async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let asked = Arc::clone(&reset);
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                let asked = Arc::clone(&asked);
                async move {
                    let reply = handle(state, req).await;
                    if matches!(reply, Err(DropConnection { reset: true })) {
                        asked.store(true, Ordering::Relaxed);
                    }
                    reply
                }
            });
            let connection = Connection { stream, reset };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(connection), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Reply {
    let request_id = state.request_id();
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"code": "PayloadTooLarge"}),
            ));
        }
    };
    let path = parts.uri.path();
    let mut response = if path == TOKEN_PATH {
        token_endpoint(&state, &parts, &body).await?
    } else if path == login::AUTHORIZE_PATH {
        login::authorize(&state, &parts)
    } else if path == DISCOVERY_PATH && parts.method == Method::GET {
        if let Some(reply) = document_fault(&state, FaultEndpoint::Discovery).await {
            return reply;
        }
        state.counters().discovery_requests += 1;
        let base = &state.issuer;
        let mut grants = vec![login::AUTHORIZATION_CODE];
        if state.refresh_tokens {
            grants.push(login::REFRESH_TOKEN);
        }
        grants.extend(["client_credentials", GRANT_TYPE]);
        json_response(
            StatusCode::OK,
            &json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}{}", login::AUTHORIZE_PATH),
                "token_endpoint": format!("{base}{TOKEN_PATH}"),
                "jwks_uri": format!("{base}{JWKS_PATH}"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": grants,
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "scopes_supported": login::SCOPES_SUPPORTED,
            }),
        )
    } else if path == JWKS_PATH && parts.method == Method::GET {
        if let Some(reply) = document_fault(&state, FaultEndpoint::Jwks).await {
            return reply;
        }
        state.counters().jwks_requests += 1;
        let keys: Vec<Value> = state
            .published_user_keys()
            .iter()
            .map(|(kid, key)| {
                let key = key.public_key();
                json!({
                    "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": key.jwk_n(), "e": key.jwk_e(),
                })
            })
            .collect();
        json_response(StatusCode::OK, &json!({ "keys": keys }))
    } else {
        control_plane(&state, &parts, &body)
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("opc-request-id", value);
    }
    Ok(response)
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn oauth_error(
    status: StatusCode,
    code: &str,
    description: &str,
) -> Response<Full<Bytes>> {
    let mut response = json_response(
        status,
        &json!({"error": code, "error_description": description}),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"identity\""),
        );
    }
    response
}

async fn token_endpoint(state: &State, parts: &http::request::Parts, body: &[u8]) -> Reply {
    state.counters().exchange_requests += 1;
    let fault = if let Some(fault) = state.next_fault() {
        count_fault(&state.counters, FaultEndpoint::Token, fault.name());
        count_subject_fault(state, body);
        Some(fault)
    } else {
        let decision = state.standing_fault(FaultEndpoint::Token, None);
        if decision.fault.is_some() || !decision.delay.is_zero() {
            count_subject_fault(state, body);
        }
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        decision.fault
    };
    match fault {
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::MismatchedKey) => return Ok(grant(state, parts, body, true)),
        Some(fault) => {
            if let Some(reply) = fault_reply(fault) {
                return reply;
            }
        }
        None => {}
    }
    Ok(grant(state, parts, body, false))
}

/// Counts a token-endpoint fault against the subject of the token exchange it met
/// (the `sub` of its `subject_token`, read without verification; nothing for other
/// grants or unreadable tokens).
fn count_subject_fault(state: &State, body: &[u8]) {
    let Some(token) = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "subject_token")
        .map(|(_, v)| v)
    else {
        return;
    };
    let Ok(claims) = jwt::Claims::decode(&token, ErrorKind::SubjectTokenMalformed, "token") else {
        return;
    };
    if let Some(sub) = claims.str("sub") {
        *state
            .counters()
            .token_faults_by_subject
            .entry(sub.to_owned())
            .or_insert(0) += 1;
    }
}

/// Runs the standing faults of the JWKS or discovery endpoint: `Some` answer instead
/// of the document, after any delay.
async fn document_fault(state: &State, endpoint: FaultEndpoint) -> Option<Reply> {
    let decision = state.standing_fault(endpoint, None);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    decision.fault.and_then(fault_reply)
}

/// The answer a fault gives instead of the endpoint's own (`None` for the faults
/// that change nothing by themselves: `Delay`, `MismatchedKey`).
fn fault_reply(fault: Fault) -> Option<Reply> {
    let response = match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request"
            };
            oauth_error(status, error, "injected fault")
        }
        Fault::TooManyRequests { retry_after_secs } => {
            let mut response = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "slow down",
            );
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            response
        }
        Fault::GarbageBody => {
            let mut response =
                Response::new(Full::new(Bytes::from_static(b"<html>not json</html>")));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html"),
            );
            response
        }
        Fault::DropConnection => return Some(Err(DropConnection { reset: false })),
        Fault::ResetConnection => return Some(Err(DropConnection { reset: true })),
        Fault::Respond { status, body } => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Fault::Redirect => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(
                http::header::LOCATION,
                HeaderValue::from_static("http://127.0.0.1:9/elsewhere"),
            );
            response
        }
        Fault::Delay(_) | Fault::MismatchedKey => return None,
    };
    Some(Ok(response))
}

/// Answers one token-endpoint request, routed by `grant_type`.
fn grant(
    state: &State,
    parts: &http::request::Parts,
    body: &[u8],
    bind_other_key: bool,
) -> Response<Full<Bytes>> {
    let fields = match token_request(state, parts, body) {
        Ok(fields) => fields,
        Err(response) => return *response,
    };
    let mut response = match fields.get("grant_type").map(String::as_str) {
        Some(GRANT_TYPE) => match exchange(state, &fields, bind_other_key) {
            Ok(token) => json_response(StatusCode::OK, &json!({"token": token})),
            Err(response) => *response,
        },
        Some(login::AUTHORIZATION_CODE) => login::code_grant(state, &fields),
        Some(login::REFRESH_TOKEN) => login::refresh_grant(state, &fields),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be token-exchange, authorization_code or refresh_token",
        ),
    };
    // Token responses and their errors are never cached (RFC 6749 section 5.1).
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
        .headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

type Refusal = Box<Response<Full<Bytes>>>;

fn refuse(status: StatusCode, code: &str, description: &str) -> Refusal {
    Box::new(oauth_error(status, code, description))
}

/// Form fields whose values are secrets, never recorded.
const SECRET_FIELDS: [&str; 5] = [
    "subject_token",
    "code",
    "code_verifier",
    "refresh_token",
    "client_secret",
];

/// Records a token-endpoint request and checks what every grant needs: POST, a form
/// body, the client's Basic credentials and no repeated field. Returns the fields.
fn token_request(
    state: &State,
    parts: &http::request::Parts,
    body: &[u8],
) -> std::result::Result<HashMap<String, String>, Refusal> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let content_type = header(http::header::CONTENT_TYPE).map(str::to_owned);
    let authorization = header(http::header::AUTHORIZATION);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    *state
        .last_exchange
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(RecordedExchange {
        content_type: content_type.clone(),
        basic_auth: authorization.is_some_and(|a| a.starts_with("Basic ")),
        form: form
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if SECRET_FIELDS.contains(&k.as_str()) {
                        "[redacted]".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect(),
    });

    if parts.method != Method::POST {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint takes POST",
        ));
    }
    if content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        != Some("application/x-www-form-urlencoded")
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let credentials = authorization
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!(
        "{}:{}",
        state.client_id,
        state.client_secret.expose_secret()
    );
    if credentials.as_deref().map(str::as_bytes) != Some(expected.as_bytes()) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ));
    }
    let mut fields = HashMap::new();
    for (k, v) in form {
        if fields.insert(k, v).is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "repeated form field",
            ));
        }
    }
    Ok(fields)
}

/// Validates a token-exchange request as the identity domain does and issues a UPST.
fn exchange(
    state: &State,
    fields: &HashMap<String, String>,
    bind_other_key: bool,
) -> std::result::Result<String, Refusal> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    let requested = field("requested_token_type");
    if requested == Some(RPST_TYPE) {
        if field("res_type").is_none_or(str::is_empty) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "res_type is required for an rpst",
            ));
        }
    } else if requested != Some(UPST_TYPE) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unsupported requested_token_type",
        ));
    }
    if field("subject_token_type") != Some(SUBJECT_TOKEN_TYPE) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token_type must be 'jwt'",
        ));
    }
    let subject_token = field("subject_token").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token is required",
        )
    })?;
    let subject = state
        .published_user_keys()
        .iter()
        .find_map(|(kid, key)| jwt::verify_issued(subject_token, key.public_key(), kid, None))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "subject token signature is not valid",
            )
        })?;
    if subject.get("iss").and_then(Value::as_str) != Some(state.issuer.as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject token issuer is not trusted",
        ));
    }
    let now = state.now_secs();
    let subject_expiry = subject.get("exp").and_then(jwt::numeric_date);
    let subject_exp = subject_expiry.map_or(0, unix_secs);
    if subject_expiry.is_none_or(|exp| exp <= state.clock.now()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject token has expired",
        ));
    }
    let sub = subject
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if sub.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject token has no subject",
        ));
    }
    let public_key_b64 = field("public_key").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "public_key is required",
        )
    })?;
    if public_key_b64.contains(['-', '_', '\n', ' ']) || public_key_b64.len() % 4 != 0 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "public_key must be standard base64 of a der spki",
        ));
    }
    let public_key = PublicKey::from_spki_base64(public_key_b64).map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "public_key is not an rsa spki",
        )
    })?;
    if public_key.bits() < 2048 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "public_key must be at least 2048 bits",
        ));
    }

    let exp = subject_exp.min(now + state.upst_ttl.as_secs());
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(Emulator::user_ocid(&sub)));
    claims.insert("tenant".into(), json!(EMULATOR_TENANCY_OCID));
    claims.insert("iss".into(), json!(UPST_ISSUER));
    claims.insert("ptype".into(), json!("user"));
    claims.insert("ttype".into(), json!("upst"));
    claims.insert("sess_exp".into(), json!(subject_exp));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(exp));
    claims.insert("jti".into(), json!(random_id()));
    let other_key = bind_other_key.then(|| state.user_key().1);
    let bound = other_key
        .as_deref()
        .map_or(&public_key, SigningKey::public_key);
    claims.insert("jwk".into(), json!(bound.to_jwk_json(Some("session"))));
    let upst = jwt::encode(&state.upst_key, UPST_KID, &claims).map_err(|_| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign the session token",
        )
    })?;
    let mut counters = state.counters();
    counters.exchanges += 1;
    *counters.exchanges_by_subject.entry(sub).or_insert(0) += 1;
    Ok(upst)
}

/// Verifies the OCI signature of an API call and echoes who made it.
fn control_plane(
    state: &State,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    match authenticate(state, parts, body) {
        Ok(principal) => {
            state.counters().verified_requests += 1;
            if parts.method == Method::GET && parts.uri.path() == "/20160918/compartments" {
                // The Identity service's ListCompartments shape, for the examples.
                let compartment = |name: &str| {
                    json!({
                        "id": format!("ocid1.compartment.oc1..aaaaaaaa{name}"),
                        "name": name,
                        "compartmentId": EMULATOR_TENANCY_OCID,
                        "lifecycleState": "ACTIVE",
                    })
                };
                return json_response(
                    StatusCode::OK,
                    &json!([compartment("sandbox"), compartment("shared")]),
                );
            }
            let echo = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
            json_response(
                StatusCode::OK,
                &json!({
                    "principal": principal,
                    "method": parts.method.as_str(),
                    "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                    "bodyLength": body.len(),
                    "body": echo,
                }),
            )
        }
        Err(err) => {
            state.counters().rejected_requests += 1;
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"code": "NotAuthenticated", "message": err.to_string()}),
            )
        }
    }
}

fn authenticate(state: &State, parts: &http::request::Parts, body: &Bytes) -> Result<Value> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| Error::new(ErrorKind::SignatureRejected, "request has no host header"))?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let request = SignableRequest::from_parts(
        parts.method.as_str(),
        host,
        target,
        &parts.headers,
        SignableBody::Bytes(body),
    );
    // OCI signs uploads (Object Storage PutObject) without body headers.
    let upload = parts.method == Method::PUT && target.starts_with("/n/") && target.contains("/o/");
    let options = VerifyOptions::new(state.clock.now()).allow_unsigned_body(upload);
    let mut principal = Value::Null;
    let mut session_subject = None;
    verify(&request, &options, |key_id: &KeyId| {
        let token = key_id.token().ok_or_else(|| {
            Error::new(
                ErrorKind::SignatureRejected,
                "only session-token (ST$) key ids are accepted",
            )
        })?;
        let claims = jwt::verify_issued(
            token,
            state.upst_key.public_key(),
            UPST_KID,
            Some(UPST_ISSUER),
        )
        .ok_or_else(|| Error::new(ErrorKind::SignatureRejected, "session token is not valid"))?;
        let expiry = claims.get("exp").and_then(jwt::numeric_date);
        if expiry.is_none_or(|exp| exp <= state.clock.now()) {
            return Err(Error::new(
                ErrorKind::SignatureRejected,
                "session token has expired",
            ));
        }
        let key = jwt::bound_key(&claims).map_err(|_| {
            Error::new(
                ErrorKind::SignatureRejected,
                "session token has no usable jwk",
            )
        })?;
        session_subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        principal = json!({"userId": claims.get("sub"), "tenantId": claims.get("tenant")});
        Ok(key)
    })?;
    let rejections = &state.reject_next_upsts;
    let rejected = if rejections
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        count_fault(
            &state.counters,
            FaultEndpoint::ControlPlane,
            "session_rejected",
        );
        true
    } else {
        state
            .standing_fault(FaultEndpoint::ControlPlane, session_subject.as_deref())
            .fault
            .is_some()
    };
    if rejected {
        return Err(Error::new(
            ErrorKind::SignatureRejected,
            "session token is no longer accepted",
        ));
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_path_agrees_with_the_client() {
        assert_eq!(
            super::TOKEN_PATH.strip_prefix('/'),
            Some(crate::protocol::TOKEN_PATH)
        );
    }
}
