//! RFC 9728 protected-resource metadata: the document and where it is served.

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response};
use serde_json::{Map, Value, json};

use super::bearer::BearerAuth;

/// The well-known path of the metadata (RFC 9728 section 3).
pub(super) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The metadata paths of a resource at `path`: the bare one and, for a resource
/// with a path, the path-inserted one (`/.well-known/oauth-protected-resource/mcp`).
pub(super) fn metadata_paths(path: &str) -> Vec<String> {
    let path = path.trim_end_matches('/');
    let mut paths = vec![METADATA_PATH.to_owned()];
    if !path.is_empty() {
        paths.push(format!("{METADATA_PATH}{path}"));
    }
    paths
}

impl BearerAuth {
    /// The RFC 9728 protected-resource metadata document.
    #[must_use]
    pub fn metadata(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("resource".into(), json!(self.inner.resource));
        doc.insert(
            "authorization_servers".into(),
            json!([self.inner.authorization_server]),
        );
        doc.insert("bearer_methods_supported".into(), json!(["header"]));
        if !self.inner.required_scopes.is_empty() {
            doc.insert("scopes_supported".into(), json!(self.inner.required_scopes));
        }
        Value::Object(doc)
    }

    /// The metadata response, if `request` asks for it.
    pub(super) fn metadata_response(&self, request: &Request<Body>) -> Option<Response<Body>> {
        if request.method() != Method::GET
            || !self
                .inner
                .metadata_paths
                .iter()
                .any(|p| p == request.uri().path())
        {
            return None;
        }
        let mut response = Response::new(Body::from(self.metadata().to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Public, fetched by browser-based MCP clients of any origin.
        response.headers_mut().insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Some(response)
    }
}
