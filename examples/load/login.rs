//! A full OAuth-proxy login for one simulated user, over plain HTTP: dynamic client
//! registration, PKCE, `/authorize` (no consent page: the driver's server runs with
//! consent off) through the emulator's login and the proxy's callback, then the code
//! for tokens at `/token`. The emulator logs in one configured subject at a time, so
//! logins are serialised by a lock around the redirect walk.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oci_token_exchange::Emulator;
use serde_json::{Value, json};

use crate::setup::CLIENT_REDIRECT;

/// Serialises the emulator's login subject between concurrent logins.
pub type LoginLock = tokio::sync::Mutex<()>;

fn random_b64(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0_u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| "no random numbers".to_owned())?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// Logs `subject` in through the proxy at `base`; returns the proxy's access token.
///
/// # Errors
/// A short kind of what failed (`register`, `authorize`, `token`, ...).
pub async fn log_in(
    base: &str,
    resource: &str,
    emulator: &Emulator,
    lock: &LoginLock,
    subject: &str,
) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().as_str().starts_with(CLIENT_REDIRECT) {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("more than 10 redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|_| "client".to_owned())?;
    let registered: Value = http
        .post(format!("{base}/register"))
        .json(&json!({
            "client_name": "load driver",
            "redirect_uris": [CLIENT_REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|_| "register".to_owned())?
        .json()
        .await
        .map_err(|_| "register_body".to_owned())?;
    let client_id = registered
        .get("client_id")
        .and_then(Value::as_str)
        .ok_or("register_no_client_id")?
        .to_owned();
    let verifier = random_b64(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_b64(16)?;
    let mut authorize = url::Url::parse(&format!("{base}/authorize")).map_err(|_| "url")?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", CLIENT_REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("resource", resource);
    let redirected = {
        let _guard = lock.lock().await;
        emulator.set_login_subject(subject);
        http.get(authorize)
            .send()
            .await
            .map_err(|_| "authorize".to_owned())?
    };
    let location = redirected
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| format!("authorize_status_{}", redirected.status().as_u16()))?;
    let location = url::Url::parse(location).map_err(|_| "authorize_location")?;
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or("authorize_no_code")?;
    let tokens: Value = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CLIENT_REDIRECT),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", resource),
        ])
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|_| "token".to_owned())?
        .json()
        .await
        .map_err(|_| "token_body".to_owned())?;
    tokens
        .get("access_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "token_no_access_token".to_owned())
}
