//! The browser's part of the login: `/authorize`, the consent page, and the
//! callback from the identity domain.
//!
//! A transaction (15 min) holds the client's request and the proxy's secrets for
//! it. The browser that opened it gets a cookie, an HMAC of the transaction id and
//! a nonce, that the consent form and the callback require: a flow started in one
//! browser cannot be approved or completed in another (the confused-deputy attack
//! on consent, GHSA-rww4-4w9c-7733).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::model::{
    self, CLIENTS, CODE_LIFETIME, CODES, Client, CodeGrant, SETS, TRANSACTION_LIFETIME,
    TRANSACTIONS, TokenSet, Transaction,
};
use super::pages::{
    Params, client_error, error_page, escape, html, read_form, redirect, with_query,
};
use super::{Inner, crypto, redirect, upstream};

fn query(uri: &http::Uri) -> Option<Params> {
    Params::parse(uri.query().unwrap_or(""))
}

fn bad_request(message: &str) -> Response<Body> {
    error_page(StatusCode::BAD_REQUEST, message)
}

/// Whether `resource` names this server's MCP endpoint (a trailing slash aside).
fn same_resource(resource: &str, ours: &str) -> bool {
    resource.trim_end_matches('/') == ours.trim_end_matches('/')
}

/// The consent cookie's value for a transaction.
fn cookie_value(inner: &Inner, txn_id: &str, nonce: &str) -> String {
    crypto::mac(&inner.cookie_key, &[txn_id, nonce])
}

/// The consent cookie's name for a transaction: the prefix and 16 characters (96
/// bits) of a MAC of the transaction id. One cookie per login in progress, so two
/// logins open in one browser (two applications, or one that opened the login
/// twice) do not replace each other's cookie; the name does not show the id.
fn cookie_name(inner: &Inner, txn_id: &str) -> String {
    // Spaces keep this input apart from a transaction id (base64url).
    let tag = crypto::mac(&inner.cookie_key, &["consent cookie name", txn_id]);
    let tag = tag.get(..16).unwrap_or(&tag);
    format!("{}_{tag}", inner.cookie_prefix())
}

/// How many logins one browser can have open at once. Each has its cookie, sent
/// with every request to this server until the login ends or expires (15 min): a
/// page that sends a user's browser to `/authorize` over and over must not grow that
/// `Cookie` header past what proxies in front of the server accept (often 8 KiB).
/// Eight cookies add about 650 bytes.
pub(super) const OPEN_LOGINS_PER_BROWSER: usize = 8;

/// `Set-Cookie` for the consent cookie `name` (`max_age` 0 clears it).
fn set_cookie_named(inner: &Inner, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if inner.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// `Set-Cookie` for a transaction's consent cookie (`max_age` 0 clears it).
fn set_cookie(inner: &Inner, txn_id: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    set_cookie_named(inner, &cookie_name(inner, txn_id), value, max_age)
}

/// Clears a transaction's consent cookie in `response` (its login is over).
fn clear_cookie(inner: &Inner, txn_id: &str, mut response: Response<Body>) -> Response<Body> {
    if let Some(cookie) = set_cookie(inner, txn_id, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The request's cookies as (name, value) pairs, in the order the browser sent
/// them (oldest first among cookies of one path, RFC 6265 section 5.4).
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Whether the request carries this transaction's consent cookie.
fn bound_to_browser(inner: &Inner, headers: &HeaderMap, txn_id: &str, txn: &Transaction) -> bool {
    let expected = cookie_value(inner, txn_id, &txn.nonce);
    let name = cookie_name(inner, txn_id);
    cookies(headers).any(|(k, v)| k == name && crypto::equal(v, &expected))
}

/// `Set-Cookie`s that clear the oldest consent cookies the request carries, so the
/// browser holds at most [`OPEN_LOGINS_PER_BROWSER`] once it has one more. Only
/// names of the form this proxy writes are echoed.
fn clear_oldest_cookies(inner: &Inner, headers: &HeaderMap) -> Vec<HeaderValue> {
    let prefix = format!("{}_", inner.cookie_prefix());
    let ours: Vec<&str> = cookies(headers)
        .map(|(name, _)| name)
        .filter(|name| {
            name.strip_prefix(&prefix).is_some_and(|tag| {
                tag.len() == 16
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
        .collect();
    let excess = ours
        .len()
        .saturating_sub(OPEN_LOGINS_PER_BROWSER.saturating_sub(1));
    ours.into_iter()
        .take(excess)
        .filter_map(|name| set_cookie_named(inner, name, "", 0))
        .collect()
}

async fn load_txn(inner: &Inner, txn_id: &str) -> Option<Transaction> {
    if txn_id.len() > 64 {
        return None;
    }
    model::get::<Transaction>(inner.store.as_ref(), TRANSACTIONS, txn_id)
        .await
        .ok()
        .flatten()
}

/// `GET /authorize`.
pub(super) async fn authorize(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response<Body> {
    let Some(params) = query(&uri) else {
        return bad_request("A parameter of the authorization request is repeated.");
    };
    let Some(client_id) = params.get("client_id") else {
        return bad_request("The authorization request names no client.");
    };
    let client = if client_id.len() <= 64 {
        model::get::<Client>(inner.store.as_ref(), CLIENTS, client_id)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let Some(client) = client else {
        return bad_request(
            "The application is not registered with this server (or its registration expired). Register it again.",
        );
    };
    // A registered URI (a loopback one on any port), still allowed by the current
    // allow-list.
    let Some(redirect_uri) = params.get("redirect_uri").filter(|r| {
        client
            .redirect_uris
            .iter()
            .any(|u| redirect::names_registered(u, r))
            && redirect::allowed(&inner.patterns, r)
    }) else {
        return bad_request("The redirect URI is missing or not registered for this application.");
    };
    let state = params.get("state");
    let fail = |error: &str| client_error(redirect_uri, error, state, &inner.base);
    if params.get("response_type") != Some("code") {
        return fail("unsupported_response_type");
    }
    let Some(challenge) = params
        .get("code_challenge")
        .filter(|c| c.len() == 43 && crypto::is_pkce_value(c))
    else {
        return fail("invalid_request");
    };
    // `state` is the client's own (OAuth 2.1 leaves it optional with PKCE, which is
    // required here): echoed when sent, left out when not.
    if params.get("code_challenge_method") != Some("S256") {
        return fail("invalid_request");
    }
    if params
        .get("resource")
        .is_some_and(|r| !same_resource(r, &inner.resource))
    {
        return fail("invalid_target");
    }
    let scopes: Vec<String> = match params.get("scope") {
        None => inner.default_scopes.clone(),
        Some(s) => s
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if scopes.is_empty()
        || scopes.len() > 20
        || !scopes.iter().all(|s| super::pages::is_scope_token(s))
    {
        return fail("invalid_scope");
    }
    if state.is_some_and(|s| s.len() > 512) {
        return fail("invalid_request");
    }
    let (Ok(txn_id), Ok(verifier), Ok(csrf), Ok(nonce)) = (
        crypto::random_token(),
        crypto::random_token(),
        crypto::random_token(),
        crypto::random_token(),
    ) else {
        return fail("server_error");
    };
    let txn = Transaction {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        scopes,
        resource: inner.resource.clone(),
        verifier,
        csrf,
        nonce,
        approved: !inner.consent,
        expires_at: model::unix(inner.clock.now()).saturating_add(TRANSACTION_LIFETIME.as_secs()),
    };
    if let Err(err) = model::put(
        inner.store.as_ref(),
        TRANSACTIONS,
        &txn_id,
        &txn,
        TRANSACTION_LIFETIME,
    )
    .await
    {
        tracing::warn!(client_id = %client.client_id, error = %err, "oauth proxy cannot store a login");
        return fail("temporarily_unavailable");
    }
    tracing::info!(
        client_id = %client.client_id,
        consent = inner.consent,
        outcome = "started",
        "oauth proxy login"
    );
    let mut response = if inner.consent {
        redirect(&format!("{}/consent?txn={txn_id}", inner.base))
    } else {
        match upstream_redirect(&inner, &txn_id, &txn).await {
            Ok(r) => r,
            Err(r) => return r,
        }
    };
    for clear in clear_oldest_cookies(&inner, &headers) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    if let Some(cookie) = set_cookie(
        &inner,
        &txn_id,
        &cookie_value(&inner, &txn_id, &txn.nonce),
        TRANSACTION_LIFETIME.as_secs(),
    ) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The redirect to the domain's authorization endpoint; on failure, the error
/// redirect to the client (the transaction is dropped).
async fn upstream_redirect(
    inner: &Inner,
    txn_id: &str,
    txn: &Transaction,
) -> Result<Response<Body>, Response<Body>> {
    match inner.upstream.endpoints().await {
        Ok(endpoints) => {
            let challenge = crypto::sha256_b64(&txn.verifier);
            let scope = txn.scopes.join(" ");
            let callback = inner.callback_url();
            Ok(redirect(&with_query(
                endpoints.authorization.as_str(),
                &[
                    ("response_type", "code"),
                    ("client_id", &inner.upstream.client_id),
                    ("redirect_uri", &callback),
                    ("scope", &scope),
                    ("state", txn_id),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            )))
        }
        Err(err) => {
            tracing::warn!(client_id = %txn.client_id, error = %err, outcome = "discovery_failed", "oauth proxy login");
            let _ = inner.store.delete(TRANSACTIONS, txn_id).await;
            Err(client_error(
                &txn.redirect_uri,
                upstream::callback_error(&err),
                txn.state.as_deref(),
                &inner.base,
            ))
        }
    }
}

/// `GET /consent?txn=..`: the consent page (reloading it keeps the form valid).
pub(super) async fn consent_page(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response<Body> {
    let Some(txn_id) = query(&uri).and_then(|p| p.get("txn").map(str::to_owned)) else {
        return bad_request(
            "This login is unknown or has expired. Start again from your application.",
        );
    };
    let Some(txn) = load_txn(&inner, &txn_id).await else {
        return bad_request(
            "This login is unknown or has expired. Start again from your application.",
        );
    };
    if !bound_to_browser(&inner, &headers, &txn_id, &txn) {
        return bad_request(
            "This login was started in another browser. Start again from your application.",
        );
    }
    let client = model::get::<Client>(inner.store.as_ref(), CLIENTS, &txn.client_id)
        .await
        .ok()
        .flatten();
    let name = client
        .and_then(|c| c.client_name)
        .unwrap_or_else(|| "An unnamed application".to_owned());
    let body = format!(
        "<h1>Allow access?</h1>\
<p><strong>{name}</strong> wants to act as you on this server, with your Oracle Cloud \
Infrastructure identity.</p>\
<p>After you sign in, it will be sent to <code>{redirect}</code>.</p>\
<p>Scopes: <code>{scopes}</code></p>\
<form method=\"post\" action=\"/consent\">\
<input type=\"hidden\" name=\"txn\" value=\"{txn}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\
</form>",
        name = escape(&name),
        redirect = escape(&txn.redirect_uri),
        scopes = escape(&txn.scopes.join(" ")),
        txn = escape(&txn_id),
        csrf = escape(&txn.csrf),
    );
    html(StatusCode::OK, "Allow access?", &body, &inner.form_action)
}

/// `POST /consent`: approve (to the domain) or deny (back to the client).
pub(super) async fn consent_post(
    State(inner): State<Arc<Inner>>,
    request: http::Request<Body>,
) -> Response<Body> {
    let (parts, form) = match read_form(request).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    let stale = "This login is unknown or has expired. Start again from your application.";
    let Some(txn_id) = form.get("txn") else {
        return bad_request(stale);
    };
    let Some(mut txn) = load_txn(&inner, txn_id).await else {
        return bad_request(stale);
    };
    if !bound_to_browser(&inner, &parts.headers, txn_id, &txn) {
        return bad_request(
            "This login was started in another browser. Start again from your application.",
        );
    }
    if !form
        .get("csrf")
        .is_some_and(|c| crypto::equal(c, &txn.csrf))
    {
        tracing::warn!(client_id = %txn.client_id, outcome = "csrf_mismatch", "oauth proxy consent");
        return error_page(
            StatusCode::FORBIDDEN,
            "The consent form is not valid. Reload the page and try again.",
        );
    }
    match form.get("action") {
        Some("deny") => {
            let _ = inner.store.delete(TRANSACTIONS, txn_id).await;
            tracing::info!(client_id = %txn.client_id, outcome = "denied", "oauth proxy consent");
            let response = client_error(
                &txn.redirect_uri,
                "access_denied",
                txn.state.as_deref(),
                &inner.base,
            );
            clear_cookie(&inner, txn_id, response)
        }
        Some("approve") => {
            txn.approved = true;
            let ttl = model::until(inner.clock.now(), txn.expires_at);
            if let Err(err) =
                model::put(inner.store.as_ref(), TRANSACTIONS, txn_id, &txn, ttl).await
            {
                tracing::warn!(client_id = %txn.client_id, error = %err, "oauth proxy cannot store a login");
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server cannot continue the login now. Try again later.",
                );
            }
            tracing::info!(client_id = %txn.client_id, outcome = "approved", "oauth proxy consent");
            match upstream_redirect(&inner, txn_id, &txn).await {
                Ok(response) => response,
                // The login is over (the transaction is dropped): so is its cookie.
                Err(response) => clear_cookie(&inner, txn_id, response),
            }
        }
        _ => bad_request("The consent form has no valid action."),
    }
}

/// `GET /auth/callback`: the domain's answer; the proxy's own code to the client.
pub(super) async fn callback(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response<Body> {
    let stale =
        "This login is unknown, expired or already complete. Start again from your application.";
    let Some(params) = query(&uri) else {
        return bad_request(stale);
    };
    let Some(txn_id) = params.get("state") else {
        return bad_request(stale);
    };
    let Some(txn) = load_txn(&inner, txn_id).await else {
        tracing::info!(outcome = "unknown_state", "oauth proxy callback");
        return bad_request(stale);
    };
    if !bound_to_browser(&inner, &headers, txn_id, &txn) {
        tracing::warn!(client_id = %txn.client_id, outcome = "other_browser", "oauth proxy callback");
        return bad_request(
            "This login was started in another browser. Start again from your application.",
        );
    }
    if !txn.approved {
        return bad_request("This login was not approved.");
    }
    // Consume it: a replayed callback finds nothing.
    if !matches!(inner.store.take(TRANSACTIONS, txn_id).await, Ok(Some(_))) {
        return bad_request(stale);
    }
    let response = complete(&inner, &txn, &params).await;
    clear_cookie(&inner, txn_id, response)
}

async fn complete(inner: &Inner, txn: &Transaction, params: &Params) -> Response<Body> {
    let fail = |error: &str, outcome: &str| {
        tracing::info!(client_id = %txn.client_id, outcome, "oauth proxy callback");
        client_error(&txn.redirect_uri, error, txn.state.as_deref(), &inner.base)
    };
    if let Some(error) = params.get("error") {
        let error = match error {
            "access_denied" | "login_required" | "consent_required" | "interaction_required" => {
                "access_denied"
            }
            "temporarily_unavailable" => "temporarily_unavailable",
            _ => "server_error",
        };
        return fail(error, "upstream_error");
    }
    let Some(code) = params.get("code") else {
        return fail("server_error", "upstream_no_code");
    };
    let tokens = match inner
        .upstream
        .exchange_code(code, &txn.verifier, &inner.callback_url())
        .await
    {
        Ok(t) => t,
        Err(err) => {
            tracing::warn!(client_id = %txn.client_id, error = %err, "oauth proxy code exchange failed");
            return fail(upstream::callback_error(&err), "exchange_failed");
        }
    };
    let access = match inner.upstream.validate(&tokens.access_token).await {
        Ok(a) => a,
        Err(err) => {
            tracing::warn!(client_id = %txn.client_id, error = %err, "oauth proxy got an invalid upstream token");
            return fail(upstream::callback_error(&err), "invalid_upstream_token");
        }
    };
    let now = inner.clock.now();
    let Some(access_exp) = access.expires_at().map(model::unix) else {
        return fail("server_error", "invalid_upstream_token");
    };
    let refresh_expires_at = tokens.refresh_token.as_ref().map(|_| {
        model::unix(now).saturating_add(
            tokens
                .refresh_expires_in
                .unwrap_or(inner.upstream_refresh_lifetime.as_secs()),
        )
    });
    let set = TokenSet {
        access_token: tokens.access_token.clone(),
        access_expires_at: access_exp,
        refresh_token: tokens.refresh_token.clone(),
        refresh_expires_at,
        subject: access.subject().map(str::to_owned),
        client_id: txn.client_id.clone(),
    };
    let (Ok(set_id), Ok(code)) = (crypto::random_token(), crypto::random_token()) else {
        return fail("server_error", "random_failed");
    };
    let grant = CodeGrant {
        client_id: txn.client_id.clone(),
        redirect_uri: txn.redirect_uri.clone(),
        code_challenge: txn.code_challenge.clone(),
        scopes: txn.scopes.clone(),
        resource: txn.resource.clone(),
        set_id: set_id.clone(),
        expires_at: model::unix(now).saturating_add(CODE_LIFETIME.as_secs()),
    };
    let store = inner.store.as_ref();
    let stored = async {
        model::put(
            store,
            SETS,
            &set_id,
            &set,
            model::until(now, set.expires_at()),
        )
        .await?;
        model::put(
            store,
            CODES,
            &crypto::sha256_b64(&code),
            &grant,
            CODE_LIFETIME,
        )
        .await
    }
    .await;
    if let Err(err) = stored {
        tracing::warn!(client_id = %txn.client_id, error = %err, "oauth proxy cannot store a login");
        let _ = store.delete(SETS, &set_id).await;
        return fail("temporarily_unavailable", "store_failed");
    }
    inner
        .parsed
        .insert(set_id, Arc::new((tokens.access_token, access)))
        .await;
    tracing::info!(
        client_id = %txn.client_id,
        refreshable = set.refresh_token.is_some(),
        outcome = "code_issued",
        "oauth proxy callback"
    );
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = txn.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("iss", inner.base.as_str()));
    redirect(&with_query(&txn.redirect_uri, &params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::OAuthProxy;

    fn proxy(base: &str) -> OAuthProxy {
        proxy_with_key(base, [3; 32])
    }

    fn proxy_with_key(base: &str, key: [u8; 32]) -> OAuthProxy {
        OAuthProxy::builder()
            .base_url(base)
            .domain_url("http://127.0.0.1:1")
            .client_credentials("id", "secret")
            .signing_key(key)
            .build()
            .unwrap()
    }

    #[test]
    fn the_cookie_is_host_prefixed_and_secure_under_https_only() {
        let https = proxy("https://mcp.example.com");
        let cookie = set_cookie(&https.inner, "t1", "v", 900).unwrap();
        let name = cookie_name(&https.inner, "t1");
        assert!(name.starts_with("__Host-ocx_consent_"), "{name}");
        assert_eq!(
            cookie.to_str().unwrap(),
            format!("{name}=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=900; Secure")
        );
        let http = proxy("http://127.0.0.1:8000");
        let cookie = set_cookie(&http.inner, "t1", "v", 900).unwrap();
        let name = cookie_name(&http.inner, "t1");
        assert!(name.starts_with("ocx_consent_"), "{name}");
        assert_eq!(
            cookie.to_str().unwrap(),
            format!("{name}=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=900")
        );
    }

    #[test]
    fn each_transaction_has_its_own_cookie_name_that_hides_its_id() {
        let p = proxy("http://127.0.0.1:8000");
        let txn = "Pg9rX0I0uIVyU4Wp28KFsX-qE-cpVYLU3QnEwGroRfI";
        let name = cookie_name(&p.inner, txn);
        assert_eq!(name, cookie_name(&p.inner, txn), "stable");
        assert_ne!(name, cookie_name(&p.inner, "Pg9rX0I0uIVyU4Wp28KFsX"));
        let tag = name.strip_prefix("ocx_consent_").unwrap();
        assert_eq!(tag.len(), 16);
        assert!(!txn.contains(tag));
        // An RFC 6265 cookie-name token: base64url only.
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{tag}"
        );
        // Another key, another name.
        let other = proxy_with_key("http://127.0.0.1:8000", [4; 32]);
        assert_ne!(name, cookie_name(&other.inner, txn));
    }

    #[test]
    fn the_cookie_binds_one_transaction_and_nonce() {
        let p = proxy("http://127.0.0.1:8000");
        let txn = Transaction {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1:1/cb".into(),
            state: None,
            code_challenge: String::new(),
            scopes: Vec::new(),
            resource: String::new(),
            verifier: String::new(),
            csrf: String::new(),
            nonce: "n1".into(),
            approved: false,
            expires_at: 0,
        };
        let mut headers = HeaderMap::new();
        let value = cookie_value(&p.inner, "t1", "n1");
        let name = cookie_name(&p.inner, "t1");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}={value}")).unwrap(),
        );
        assert!(bound_to_browser(&p.inner, &headers, "t1", &txn));
        assert!(!bound_to_browser(&p.inner, &headers, "t2", &txn));
        let other_nonce = Transaction {
            nonce: "n2".into(),
            ..txn.clone()
        };
        assert!(!bound_to_browser(&p.inner, &headers, "t1", &other_nonce));
        let other_key = proxy_with_key("http://127.0.0.1:8000", [4; 32]);
        assert!(!bound_to_browser(&other_key.inner, &headers, "t1", &txn));
    }
}
