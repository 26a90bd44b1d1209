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

use oci_token_exchange::{SecretString, TokenExchange, TokenExchangeSigner};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Signs and sends one request as the signer's user; returns (status, body). The
/// first call exchanges the user's token for a session (a fresh RSA key and a
/// UPST); later calls reuse it until it is due for refresh.
async fn call(
    http: &reqwest::Client,
    signer: &TokenExchangeSigner,
    method: &str,
    url: &str,
    body: Option<String>,
) -> Result<(u16, String), BoxError> {
    let mut builder = http.request(method.parse()?, url);
    if let Some(body) = body {
        builder = builder
            .header("content-type", "application/json")
            .body(body);
    }
    let mut request = builder.build()?;
    signer.sign_reqwest(&mut request).await?;
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
    let signer = TokenExchangeSigner::builder(exchange)
        .subject_token(SecretString::new(var("OCI_SUBJECT_TOKEN")?))
        .build()?;
    let method = std::env::var("OCI_API_METHOD").unwrap_or_else(|_| "GET".into());
    let body = std::env::var("OCI_API_BODY").ok();
    let http = reqwest::Client::new();
    let (status, text) = call(&http, &signer, &method, &var("OCI_API_URL")?, body).await?;
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

    let exchange = TokenExchange::builder()
        .domain_url(emulator.domain_url().as_str())
        .client_credentials(emulator.client_id(), emulator.client_secret().clone())
        .build()?;
    let signer = TokenExchangeSigner::builder(exchange)
        .subject_token(subject)
        .build()?;
    // The first use exchanges; done here only to show what it yields.
    #[allow(clippy::disallowed_methods)]
    let t = Instant::now();
    let session = signer.session().await?;
    let lifetime = session
        .expires_at()
        .duration_since(signer.clock().now())
        .map_or(0, |d| d.as_secs());
    println!(
        "exchange: RSA-2048 session key and session token for {} in tenancy {}, valid {lifetime} s ({} ms)",
        session.user_ocid(),
        session.tenancy_ocid().unwrap_or("?"),
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
        let (status, text) = call(&http, &signer, method, &url, body).await?;
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
