//! A loopback identity domain serving only what bearer validation reads (the
//! discovery document and the JWKS), each settable by the test, and a
//! [`BearerAuth`] for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use oci_token_exchange::{BearerAuth, FixedClock};
use serde_json::{Value, json};

/// The validators' fixed time (unix seconds).
pub const START: u64 = 1_800_000_000;
/// The audience the validators require.
pub const AUDIENCE: &str = "https://mcp.example.com/";

#[derive(Default)]
struct Documents {
    discovery: Option<(u16, String)>,
    jwks: Option<(u16, String)>,
}

/// The domain: each document answers 404 until set.
pub struct Domain {
    pub url: String,
    docs: Arc<Mutex<Documents>>,
}

impl Domain {
    pub async fn start() -> Self {
        let docs = Arc::new(Mutex::new(Documents::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serve = |pick: fn(&Documents) -> Option<(u16, String)>| {
            let docs = Arc::clone(&docs);
            axum::routing::get(move || {
                let answer = pick(&docs.lock().unwrap());
                async move {
                    let (status, body) = answer.unwrap_or((404, String::new()));
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body)
                }
            })
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                serve(|d| d.discovery.clone()),
            )
            .route("/jwks", serve(|d| d.jwks.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, docs }
    }

    /// Serves these documents (200) from now on.
    pub fn set(&self, discovery: String, jwks: String) {
        let mut docs = self.docs.lock().unwrap();
        docs.discovery = Some((200, discovery));
        docs.jwks = Some((200, jwks));
    }

    /// This domain's own discovery document (its issuer, its `/jwks`).
    pub fn discovery(&self) -> Value {
        json!({"issuer": self.url, "jwks_uri": format!("{}/jwks", self.url)})
    }
}

/// An HTTP client without redirects or proxies, 10 s timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A validator of `domain_url`'s tokens for [`AUDIENCE`], its clock at [`START`].
pub fn bearer_auth(domain_url: &str, http: &reqwest::Client) -> BearerAuth {
    BearerAuth::builder()
        .domain_url(domain_url)
        .resource("http://127.0.0.1:1/mcp")
        .audience(AUDIENCE)
        .clock(Arc::new(FixedClock::at_unix(START)))
        .http_client(http.clone())
        .build()
        .unwrap()
}
