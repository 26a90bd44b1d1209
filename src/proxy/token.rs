//! `POST /token` (authorization_code, refresh_token) and `POST /revoke` (RFC 7009):
//! the proxy's own tokens; the domain's never leave the server.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::model::{
    self, CLIENT_LIFETIME, CLIENTS, CODE_LIFETIME, CODES, Client, CodeGrant, JTIS, JtiRecord,
    REFRESH, RefreshRecord, TokenSet, USED_CODES, USED_REFRESH,
};
use super::pages::{Params, json_response, oauth_error, read_form, temporarily_unavailable};
use super::tokens::OwnClaims;
use super::validate::{FAILED_REFRESH_BACKOFF, SetError, current_set, end_set};
use super::{Inner, crypto};
use crate::store::Store;

fn bad(code: &str, description: &str) -> Response<Body> {
    oauth_error(StatusCode::BAD_REQUEST, code, description)
}

/// 503 `temporarily_unavailable`, with `Retry-After` the back-off of a failed
/// upstream refresh (it is not tried again sooner).
fn unavailable() -> Response<Body> {
    temporarily_unavailable(
        StatusCode::SERVICE_UNAVAILABLE,
        FAILED_REFRESH_BACKOFF,
        "the server cannot complete the request now",
    )
}

fn invalid_client() -> Response<Body> {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "the client is unknown or its authentication failed",
    )
}

/// The public client making the request: `client_id` in the body, or as the user
/// of a Basic header with an empty password (the proxy issues no secrets).
async fn client(
    inner: &Inner,
    headers: &http::HeaderMap,
    form: &Params,
) -> Result<Client, Response<Body>> {
    let from_basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .map(|b| {
            STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| {
                    let (id, secret) = s.split_once(':')?;
                    let id: String = url::form_urlencoded::parse(format!("a={id}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())?;
                    secret.is_empty().then_some(id)
                })
        });
    let id = match (form.get("client_id"), from_basic) {
        (_, Some(None)) => return Err(invalid_client()),
        (Some(form_id), Some(Some(basic_id))) if form_id != basic_id => {
            return Err(invalid_client());
        }
        (Some(id), _) => id.to_owned(),
        (None, Some(Some(id))) => id,
        (None, None) => return Err(invalid_client()),
    };
    if id.len() > 64 {
        return Err(invalid_client());
    }
    match model::get::<Client>(inner.store.as_ref(), CLIENTS, &id).await {
        Ok(Some(client)) => Ok(client),
        Ok(None) => Err(invalid_client()),
        Err(_) => Err(unavailable()),
    }
}

/// `POST /token`.
pub(super) async fn token(
    State(inner): State<Arc<Inner>>,
    request: http::Request<Body>,
) -> Response<Body> {
    let (parts, form) = match read_form(request).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    match form.get("grant_type") {
        Some("authorization_code") => authorization_code(&inner, &parts.headers, &form).await,
        Some("refresh_token") => refresh_token(&inner, &parts.headers, &form).await,
        Some(_) => bad("unsupported_grant_type", "the grant type is not supported"),
        None => bad("invalid_request", "grant_type is required"),
    }
}

async fn authorization_code(
    inner: &Arc<Inner>,
    headers: &http::HeaderMap,
    form: &Params,
) -> Response<Body> {
    let (Some(code), Some(redirect_uri), Some(verifier)) = (
        form.get("code"),
        form.get("redirect_uri"),
        form.get("code_verifier"),
    ) else {
        return bad(
            "invalid_request",
            "code, redirect_uri and code_verifier are required",
        );
    };
    let client = match client(inner, headers, form).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let store = inner.store.as_ref();
    // The code is stored and looked up by its hash, never as itself.
    let code_key = crypto::sha256_b64(code);
    // Atomically single-use: of two concurrent redemptions, one finds nothing.
    let grant = match model::take::<CodeGrant>(store, CODES, &code_key).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            // RFC 6749 section 4.1.2: a code used twice revokes what it gave.
            if let Ok(Some(set_id)) = model::take::<String>(store, USED_CODES, &code_key).await {
                let _ = end_set(inner, &set_id).await;
                tracing::warn!(client_id = %client.client_id, outcome = "code_reused", "oauth proxy token");
            }
            return bad("invalid_grant", "the code is invalid, expired or used");
        }
        Err(_) => return unavailable(),
    };
    let now = inner.clock.now();
    // A record stored before codes carried their expiry gets one now, kept if it
    // is given back (not a fresh lifetime at each failed redemption).
    let expires_at = match grant.expires_at {
        0 => model::unix(now).saturating_add(CODE_LIFETIME.as_secs()),
        at => at,
    };
    let grant = CodeGrant {
        expires_at,
        ..grant
    };
    let refusal = if expires_at <= model::unix(now) {
        Some("the code has expired")
    } else if grant.client_id != client.client_id {
        Some("the code was issued to another client")
    } else if grant.redirect_uri != redirect_uri {
        Some("redirect_uri does not match the authorization request")
    } else if !crypto::pkce_matches(verifier, &grant.code_challenge) {
        Some("the code_verifier does not match the code_challenge")
    } else if form
        .get("resource")
        .is_some_and(|r| r.trim_end_matches('/') != grant.resource.trim_end_matches('/'))
    {
        Some("the resource does not match the authorization request")
    } else {
        None
    };
    if let Some(description) = refusal {
        // The code is spent; nobody can use its token set any more.
        let _ = end_set(inner, &grant.set_id).await;
        tracing::info!(client_id = %client.client_id, grant_type = "authorization_code", outcome = "refused", "oauth proxy token");
        return bad("invalid_grant", description);
    }
    let _ = model::put(store, USED_CODES, &code_key, &grant.set_id, CODE_LIFETIME).await;
    let undo = || async {
        // What is left of the code's own lifetime, not a fresh one.
        let left = model::until(inner.clock.now(), expires_at);
        if left.is_zero() {
            // It expired while being redeemed: there is nothing to give back, and
            // its login, which nobody can have now, ends.
            let _ = end_set(inner, &grant.set_id).await;
            tracing::info!(client_id = %client.client_id, grant_type = "authorization_code", outcome = "expired", "oauth proxy token");
            return bad("invalid_grant", "the code has expired");
        }
        let spent = Spent {
            collection: CODES,
            used: USED_CODES,
            key: &code_key,
        };
        give_back(store, spent, &grant, left, &client.client_id).await
    };
    let set = match current_set(inner, &grant.set_id).await {
        Ok(s) => s,
        Err(SetError::Gone) => return bad("invalid_grant", "the login has ended"),
        Err(SetError::Unavailable) => return undo().await,
    };
    match issue(
        inner,
        &client,
        &grant.set_id,
        &set,
        &grant.scopes,
        "authorization_code",
    )
    .await
    {
        Ok(response) => response,
        Err(NotIssued) => undo().await,
    }
}

async fn refresh_token(
    inner: &Arc<Inner>,
    headers: &http::HeaderMap,
    form: &Params,
) -> Response<Body> {
    let Some(refresh) = form.get("refresh_token") else {
        return bad("invalid_request", "refresh_token is required");
    };
    let client = match client(inner, headers, form).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    if !client.refresh {
        // RFC 6749 section 5.2: the client did not register this grant.
        return bad(
            "unauthorized_client",
            "the client is not registered for the refresh_token grant",
        );
    }
    let store = inner.store.as_ref();
    let key = crypto::sha256_b64(refresh);
    let record = match model::get::<RefreshRecord>(store, REFRESH, &key).await {
        Ok(Some(r)) if r.client_id == client.client_id => r,
        Ok(None) => {
            // OAuth 2.1 section 4.3.1: a rotated-out token that comes back (stolen,
            // or replayed) ends the login it belonged to.
            if let Ok(Some(set_id)) = model::take::<String>(store, USED_REFRESH, &key).await {
                let _ = end_set(inner, &set_id).await;
                tracing::warn!(client_id = %client.client_id, outcome = "refresh_reused", "oauth proxy token");
            }
            return bad(
                "invalid_grant",
                "the refresh token is invalid, expired or used",
            );
        }
        Ok(Some(_)) => {
            return bad(
                "invalid_grant",
                "the refresh token is invalid, expired or used",
            );
        }
        Err(_) => return unavailable(),
    };
    let scopes = match form.get("scope") {
        None => record.scopes.clone(),
        Some(s) => {
            let asked: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if asked.is_empty() || asked.iter().any(|a| !record.scopes.contains(a)) {
                return bad("invalid_scope", "the scope exceeds the one granted");
            }
            asked
        }
    };
    // Rotation: the token is spent now, whatever follows.
    match store.take(REFRESH, &key).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return bad(
                "invalid_grant",
                "the refresh token is invalid, expired or used",
            );
        }
        Err(_) => return unavailable(),
    }
    let now = inner.clock.now();
    let _ = model::put(
        store,
        USED_REFRESH,
        &key,
        &record.set_id,
        model::until(now, record.expires_at),
    )
    .await;
    let undo = || {
        let spent = Spent {
            collection: REFRESH,
            used: USED_REFRESH,
            key: &key,
        };
        let ttl = model::until(now, record.expires_at);
        give_back(store, spent, &record, ttl, &client.client_id)
    };
    let set = match current_set(inner, &record.set_id).await {
        Ok(s) => s,
        Err(SetError::Gone) => return bad("invalid_grant", "the login has ended; log in again"),
        Err(SetError::Unavailable) => return undo().await,
    };
    match issue(
        inner,
        &client,
        &record.set_id,
        &set,
        &scopes,
        "refresh_token",
    )
    .await
    {
        Ok(response) => response,
        Err(NotIssued) => undo().await,
    }
}

/// [`issue`] gave the client nothing: the store or the random number generator
/// failed. The caller gives back what the grant spent and answers 503.
struct NotIssued;

/// What a grant spent: its record's collection, the collection of its "used"
/// markers (which detect a replay), and the key (a hash of the code or token).
struct Spent<'a> {
    collection: &'static str,
    used: &'static str,
    key: &'a str,
}

/// Nothing was issued after all (the store failed): puts back what the grant
/// spent, so the client's retry succeeds instead of being taken for a replay that
/// ends the login, and answers 503. The marker goes first: a retry that spends
/// what was given back writes its own, which must stay.
async fn give_back<T: Serialize>(
    store: &dyn Store,
    spent: Spent<'_>,
    record: &T,
    ttl: Duration,
    client_id: &str,
) -> Response<Body> {
    let unmarked = store.delete(spent.used, spent.key).await;
    if ttl.is_zero() {
        // Expired meanwhile: nothing to give back.
        return unavailable();
    }
    let back = model::put(store, spent.collection, spent.key, record, ttl).await;
    if let Err(err) = unmarked.and(back) {
        tracing::warn!(client_id, collection = spent.collection, error = %err, "oauth proxy cannot give back what a failed grant spent");
    }
    unavailable()
}

/// Issues the proxy's access token (and, when the upstream set can be refreshed,
/// a refresh token) for the token set `set_id`.
async fn issue(
    inner: &Inner,
    client: &Client,
    set_id: &str,
    set: &TokenSet,
    scopes: &[String],
    grant_type: &str,
) -> Result<Response<Body>, NotIssued> {
    let now = inner.clock.now();
    let now_s = model::unix(now);
    let wanted = now_s.saturating_add(inner.access_lifetime.as_secs());
    // With an upstream refresh token the bearer check renews the domain's token, so
    // the proxy's token may outlive it (not the refresh token); without, it ends
    // with the domain's token.
    let exp = match (&set.refresh_token, set.refresh_expires_at) {
        (Some(_), Some(refresh_exp)) => wanted.min(refresh_exp),
        _ => wanted.min(set.access_expires_at),
    };
    if exp <= now_s {
        return Ok(bad("invalid_grant", "the login has ended; log in again"));
    }
    let Ok(jti) = crypto::random_token() else {
        return Err(NotIssued);
    };
    let claims = OwnClaims {
        iss: inner.base.clone(),
        aud: inner.resource.clone(),
        client_id: client.client_id.clone(),
        scope: scopes.join(" "),
        sub: set.subject.clone(),
        jti: jti.clone(),
        iat: now_s,
        exp,
    };
    let Ok(access_token) = inner.tokens.mint(&claims) else {
        return Err(NotIssued);
    };
    let store = inner.store.as_ref();
    let record = JtiRecord {
        set_id: set_id.to_owned(),
        client_id: client.client_id.clone(),
    };
    if model::put(store, JTIS, &jti, &record, model::until(now, exp))
        .await
        .is_err()
    {
        return Err(NotIssued);
    }
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": exp - now_s,
        "scope": claims.scope,
    });
    // Only to a client registered for the refresh_token grant.
    if let (Some(_), Some(refresh_exp), true) =
        (&set.refresh_token, set.refresh_expires_at, client.refresh)
    {
        let refresh_exp = refresh_exp.min(now_s.saturating_add(inner.refresh_lifetime.as_secs()));
        let Ok(refresh) = crypto::random_token() else {
            let _ = store.delete(JTIS, &jti).await;
            return Err(NotIssued);
        };
        let record = RefreshRecord {
            set_id: set_id.to_owned(),
            client_id: client.client_id.clone(),
            scopes: scopes.to_vec(),
            resource: inner.resource.clone(),
            expires_at: refresh_exp,
        };
        if model::put(
            store,
            REFRESH,
            &crypto::sha256_b64(&refresh),
            &record,
            model::until(now, refresh_exp),
        )
        .await
        .is_err()
        {
            // The access token was never handed out: its record goes too.
            let _ = store.delete(JTIS, &jti).await;
            return Err(NotIssued);
        }
        if let Some(map) = body.as_object_mut() {
            map.insert("refresh_token".into(), json!(refresh));
        }
    }
    tracing::info!(
        client_id = %client.client_id,
        grant_type,
        expires_in = exp - now_s,
        refreshable = set.refresh_token.is_some() && client.refresh,
        outcome = "issued",
        "oauth proxy token"
    );
    // A client in use is kept for 30 days from its last grant (registered, it had
    // an hour): its logins outlive that only while it refreshes them.
    if let Err(err) = model::put(store, CLIENTS, &client.client_id, client, CLIENT_LIFETIME).await {
        tracing::warn!(client_id = %client.client_id, error = %err, "oauth proxy cannot extend a client's registration");
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /revoke` (RFC 7009): an access or refresh token of the proxy, and the
/// upstream token set behind it. Unknown tokens get 200 too.
pub(super) async fn revoke(
    State(inner): State<Arc<Inner>>,
    request: http::Request<Body>,
) -> Response<Body> {
    let (parts, form) = match read_form(request).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    let Some(token) = form.get("token") else {
        return bad("invalid_request", "token is required");
    };
    let client = match client(&inner, &parts.headers, &form).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let store = inner.store.as_ref();
    let cannot = |error: crate::error::Error| {
        tracing::warn!(client_id = %client.client_id, error = %error, outcome = "store_unavailable", "oauth proxy revocation");
        unavailable()
    };
    // The token's record: (collection, key, set id). A store that cannot answer is
    // a 503 (RFC 7009 section 2.2.1), never a 200 that revoked nothing.
    let (found, kind) = if let Some(claims) = inner.tokens.verify(token) {
        match model::get::<JtiRecord>(store, JTIS, &claims.jti).await {
            Ok(Some(record)) if record.client_id == client.client_id => {
                (Some((JTIS, claims.jti, record.set_id)), "access_token")
            }
            Ok(_) => (None, "unknown"),
            Err(error) => return cannot(error),
        }
    } else {
        let key = crypto::sha256_b64(token);
        match model::get::<RefreshRecord>(store, REFRESH, &key).await {
            Ok(Some(record)) if record.client_id == client.client_id => {
                (Some((REFRESH, key, record.set_id)), "refresh_token")
            }
            Ok(_) => (None, "unknown"),
            Err(error) => return cannot(error),
        }
    };
    if let Some((collection, key, set_id)) = found {
        // Every token of this login stops working: the set behind them is gone.
        // The token's own record goes last, so a retry after a failure here finds
        // it and ends the login again.
        if let Err(error) = end_set(&inner, &set_id).await {
            return cannot(error);
        }
        let _ = store.delete(collection, &key).await;
    }
    tracing::info!(client_id = %client.client_id, token_type = kind, outcome = "revoked", "oauth proxy revocation");
    json_response(StatusCode::OK, &json!({}))
}
