//! From a user's JWT to signed OCI calls made as that user.
//!
//! With no environment it runs offline against the crate's emulator (build with
//! `--features emulator`): it mints a demo user token, exchanges it for a session
//! token bound to a fresh RSA key, and signs a GET and a POST to the emulated OCI
//! control plane.
//!
//! Against real endpoints, set `OCI_DOMAIN_URL`, `OCI_CLIENT_ID`,
//! `OCI_CLIENT_SECRET`, `OCI_SUBJECT_TOKEN` and `OCI_API_URL` (optionally
//! `OCI_API_METHOD`, `OCI_API_BODY`); it prints `status: <code>` and the body, and
//! exits 0 on a 2xx answer.
//!
//! ```text
//! cargo run --example quickstart --features emulator
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
#[cfg(feature = "emulator")]
use std::time::Instant;

use oci_token_exchange::{
    Clock as _, KeyId, KeySize, SecretString, SigningKey, SigningParams, SystemClock,
    TokenExchange, Upst, sign_reqwest_request,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Generates a session key off the async runtime (key generation takes ~100 ms).
async fn session_key() -> Result<SigningKey, BoxError> {
    Ok(tokio::task::spawn_blocking(|| SigningKey::generate(KeySize::Rsa2048)).await??)
}

/// Signs and sends one request as the session's user; returns (status, body).
async fn call(
    http: &reqwest::Client,
    key: &SigningKey,
    upst: &Upst,
    method: &str,
    url: &str,
    body: Option<String>,
) -> Result<(u16, String), BoxError> {
    let key_id = KeyId::session_token(upst.token().expose_secret())?;
    let mut builder = http.request(method.parse()?, url);
    if let Some(body) = body {
        builder = builder
            .header("content-type", "application/json")
            .body(body);
    }
    let mut request = builder.build()?;
    sign_reqwest_request(
        &mut request,
        &SigningParams::new(key, &key_id, SystemClock.now()),
    )?;
    let response = http.execute(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

async fn real(domain_url: String) -> Result<ExitCode, BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let exchange = TokenExchange::builder()
        .domain_url(domain_url)
        .client_credentials(var("OCI_CLIENT_ID")?, var("OCI_CLIENT_SECRET")?)
        .build()?;
    let subject = SecretString::new(var("OCI_SUBJECT_TOKEN")?);
    let key = session_key().await?;
    let upst = exchange.exchange(&subject, key.public_key()).await?;
    let method = std::env::var("OCI_API_METHOD").unwrap_or_else(|_| "GET".into());
    let body = std::env::var("OCI_API_BODY").ok();
    let http = reqwest::Client::new();
    let (status, text) = call(&http, &key, &upst, &method, &var("OCI_API_URL")?, body).await?;
    println!("status: {status}");
    println!("{text}");
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "emulator")]
async fn offline() -> Result<ExitCode, BoxError> {
    use oci_token_exchange::Emulator;

    let emulator = Emulator::start().await?;
    println!(
        "emulator: identity domain and OCI control plane at {}",
        emulator.domain_url()
    );
    let user = "alice@example.com";
    let subject = SecretString::new(emulator.mint_user_token(user));
    println!("user token: minted for {user} (a JWT the identity domain trusts)");

    #[allow(clippy::disallowed_methods)]
    let t = Instant::now();
    let key = session_key().await?;
    println!(
        "session key: RSA-{} generated in {} ms",
        key.bits(),
        t.elapsed().as_millis()
    );

    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()?;
    #[allow(clippy::disallowed_methods)]
    let t = Instant::now();
    let upst = exchange.exchange(&subject, key.public_key()).await?;
    let lifetime = upst
        .expires_at()
        .duration_since(SystemClock.now())
        .map_or(0, |d| d.as_secs());
    println!(
        "exchange: session token for {} in tenancy {}, valid {lifetime} s ({} ms)",
        upst.user_ocid(),
        upst.tenancy_ocid().unwrap_or("?"),
        t.elapsed().as_millis()
    );

    let http = reqwest::Client::new();
    let base = emulator.api_url().as_str().trim_end_matches('/');
    let calls = [
        (
            "GET",
            format!("{base}/20160918/instances?compartmentId=ocid1.compartment.oc1..demo"),
            None,
        ),
        (
            "POST",
            format!("{base}/20160918/vcns"),
            Some(r#"{"cidrBlock":"10.0.0.0/16"}"#.to_owned()),
        ),
    ];
    let mut all_ok = true;
    for (method, url, body) in calls {
        let (status, text) = call(&http, &key, &upst, method, &url, body).await?;
        println!("{method} {url}\n  status: {status}\n  {text}");
        all_ok &= status == 200;
    }
    let counters = emulator.counters();
    println!(
        "emulator saw {} exchange(s), {} verified and {} rejected signed request(s)",
        counters.exchanges, counters.verified_requests, counters.rejected_requests
    );
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(not(feature = "emulator"))]
async fn offline() -> Result<ExitCode, BoxError> {
    Err("set OCI_DOMAIN_URL and friends, or run with --features emulator".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match std::env::var("OCI_DOMAIN_URL") {
        Ok(domain_url) => real(domain_url).await,
        Err(_) => offline().await,
    };
    result.unwrap_or_else(|err| {
        eprintln!("quickstart: {err}");
        ExitCode::from(2)
    })
}
