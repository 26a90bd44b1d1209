//! The browser's side of an OAuth login, as the proxy tests play it: redirects are
//! answers to read, not to follow.

use std::collections::HashMap;

/// A browser: a cookie jar, no redirects followed.
pub fn browser_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
}

/// [`browser_builder`], built.
pub fn browser() -> reqwest::Client {
    browser_builder().build().unwrap()
}

/// The `Location` of a redirect (asserting it is one).
pub fn location(response: &reqwest::Response) -> String {
    assert!(
        response.status().is_redirection(),
        "expected a redirect, got {}",
        response.status()
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// A URL's query parameters.
pub fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
