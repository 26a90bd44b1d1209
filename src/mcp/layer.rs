//! The tower layer of [`BearerAuth`]: the token from the request, the RFC 6750
//! challenges of refused requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::json;

use super::bearer::{BearerAuth, Rejection};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The tower layer of [`BearerAuth`].
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    pub(super) auth: BearerAuth,
}

impl<S> tower::Layer<S> for BearerAuthLayer {
    type Service = BearerAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// The service [`BearerAuthLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct BearerAuthService<S> {
    auth: BearerAuth,
    inner: S,
}

impl<S, ResBody> tower::Service<Request<Body>> for BearerAuthService<S>
where
    S: tower::Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if let Some(response) = auth.metadata_response(&request) {
                return Ok(response);
            }
            let checked = match bearer(&request) {
                Ok(Some(token)) => auth.check(token).await,
                Ok(None) => Err(Rejection::missing()),
                Err(rejection) => Err(rejection),
            };
            match checked {
                Ok(token) => {
                    request.extensions_mut().insert(token);
                    Ok(inner.call(request).await?.map(Body::new))
                }
                Err(rejection) => Ok(reject(&auth, &rejection)),
            }
        })
    }
}

/// The bearer token of a request: `Ok(None)` when it presents none (no
/// Authorization header, or one of another scheme: RFC 6750 section 3.1 then asks
/// for no error code).
fn bearer(request: &Request<Body>) -> std::result::Result<Option<&str>, Rejection> {
    let mut values = request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::invalid("more than one authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| Rejection::invalid("authorization header is not ascii"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    match token.trim() {
        "" => Err(Rejection::invalid("the bearer token is empty")),
        token => Ok(Some(token)),
    }
}

/// The response to a refused request, with its `WWW-Authenticate` challenge.
fn reject(auth: &BearerAuth, rejection: &Rejection) -> Response<Body> {
    let mut challenge = String::from("Bearer ");
    if let Some(error) = rejection.error {
        challenge.push_str(&format!(
            "error=\"{error}\", error_description=\"{}\", ",
            rejection.description
        ));
    }
    if let Some(scope) = &rejection.scope {
        challenge.push_str(&format!("scope=\"{scope}\", "));
    }
    challenge.push_str(&format!(
        "resource_metadata=\"{}\"",
        auth.resource_metadata_url()
    ));
    let body = json!({
        "error": rejection.error.unwrap_or("unauthorized"),
        "error_description": rejection.description,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = rejection.status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if rejection.status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 here is a dependency that is down or not yet asked (the keys,
        // the store, the domain's renewal): worth trying again once an unknown key
        // may be fetched again.
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(super::jwks::SHORT_REFETCH_INTERVAL.as_secs()),
        );
    } else if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}
