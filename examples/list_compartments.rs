//! List a tenancy's compartments as the logged-in user, through a
//! `reqwest-middleware` client that signs every request.
//!
//! Offline (default, `--features middleware,emulator`): the emulator stands in for
//! the identity domain and the Identity service. Real: set `OCI_DOMAIN_URL`,
//! `OCI_CLIENT_ID`, `OCI_CLIENT_SECRET`, `OCI_SUBJECT_TOKEN` and `OCI_REGION`.
//!
//! ```text
//! cargo run --example list_compartments --features middleware,emulator
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;

use oci_token_exchange::{
    SecretString, SignWith, SigningMiddleware, TokenExchange, TokenExchangeSigner,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    // (domain, client id, secret, user token, API endpoint)
    #[cfg(feature = "emulator")]
    let emulator;
    let (domain, id, secret, token, api) = if let Ok(domain) = var("OCI_DOMAIN_URL") {
        let api = format!(
            "https://identity.{}.oci.oraclecloud.com",
            var("OCI_REGION")?
        );
        (
            domain,
            var("OCI_CLIENT_ID")?,
            var("OCI_CLIENT_SECRET")?,
            var("OCI_SUBJECT_TOKEN")?,
            api,
        )
    } else {
        #[cfg(feature = "emulator")]
        {
            emulator = oci_token_exchange::Emulator::start().await?;
            let api = emulator.api_url().as_str().trim_end_matches('/').to_owned();
            (
                emulator.domain_url().to_string(),
                emulator.client_id().to_owned(),
                emulator.client_secret().expose_secret().to_owned(),
                emulator.mint_user_token("alice@example.com"),
                api,
            )
        }
        #[cfg(not(feature = "emulator"))]
        return Err("set OCI_DOMAIN_URL and friends, or build with --features emulator".into());
    };

    let exchange = TokenExchange::builder()
        .domain_url(domain)
        .client_credentials(id, secret)
        .build()?;
    let signer = Arc::new(
        TokenExchangeSigner::builder(exchange)
            .subject_token(SecretString::new(token))
            .build()?,
    );
    let tenancy = signer
        .session()
        .await?
        .tenancy_ocid()
        .unwrap_or_default()
        .to_owned();

    // One client for the whole server: each request names the user it is signed
    // as; a 401 renews that user's session and retries once.
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::per_request())
        .build();
    let url =
        format!("{api}/20160918/compartments?compartmentId={tenancy}&compartmentIdInSubtree=true");
    let response = client
        .get(&url)
        .with_extension(SignWith::new(signer))
        .send()
        .await?;
    println!("status: {}", response.status().as_u16());
    println!("{}", response.text().await?);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("list_compartments: {e}");
            ExitCode::from(2)
        }
    }
}
