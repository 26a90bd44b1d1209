//! The allow-list of client redirect URIs: exact URLs, or patterns with `*` for the
//! port and/or a trailing `/*` for the path.

use url::Url;

use crate::error::{Error, ErrorKind, Result};

/// The default patterns: loopback `http` on any port and path (native clients,
/// RFC 8252 section 7.3).
pub(super) const DEFAULT_PATTERNS: [&str; 3] = [
    "http://127.0.0.1:*/*",
    "http://localhost:*/*",
    "http://[::1]:*/*",
];

/// One allowed redirect URI pattern.
#[derive(Clone, Debug)]
pub(super) enum Pattern {
    /// Exactly this URL (as `Url` normalises it).
    Exact(Url),
    /// Scheme and host fixed; port any (`None`) or fixed; path a prefix (`Some`) or
    /// exact.
    Wild {
        scheme: String,
        host: String,
        port: Option<u16>,
        path_prefix: Option<String>,
        path: String,
    },
}

impl Pattern {
    pub(super) fn parse(input: &str) -> Result<Self> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("redirect uri pattern '{input}' is not an http(s) url pattern"),
            )
        };
        if !input.contains('*') {
            let url = Url::parse(input).map_err(|_| invalid())?;
            if !matches!(url.scheme(), "http" | "https")
                || url.fragment().is_some()
                || url.host_str().is_none()
            {
                return Err(invalid());
            }
            return Ok(Self::Exact(url));
        }
        let (scheme, rest) = input.split_once("://").ok_or_else(invalid)?;
        if !matches!(scheme, "http" | "https") {
            return Err(invalid());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        // The host may be an IPv6 literal in brackets.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        let port = match port {
            None => Some(if scheme == "https" { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| invalid())?),
        };
        if host.is_empty() || host.contains('*') || host.contains('@') {
            return Err(invalid());
        }
        // Normalise the host as the URL parser does (case, IPv6 form).
        let host = Url::parse(&format!("{scheme}://{host}/"))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or_else(invalid)?;
        let (path_prefix, path) = match path.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
                (Some(prefix.to_owned()), String::new())
            }
            Some(_) => return Err(invalid()),
            None if path.contains('*') => return Err(invalid()),
            None => (None, path.to_owned()),
        };
        Ok(Self::Wild {
            scheme: scheme.to_owned(),
            host,
            port,
            path_prefix,
            path,
        })
    }

    /// Whether the redirect URI `uri` (parsed) is allowed by this pattern.
    pub(super) fn allows(&self, uri: &Url) -> bool {
        match self {
            Self::Exact(url) => url == uri,
            Self::Wild {
                scheme,
                host,
                port,
                path_prefix,
                path,
            } => {
                uri.scheme() == scheme
                    && uri.host_str() == Some(host.as_str())
                    && port.is_none_or(|p| uri.port_or_known_default() == Some(p))
                    && match path_prefix {
                        Some(prefix) => uri.path().starts_with(prefix.as_str()),
                        None => uri.path() == path && uri.query().is_none(),
                    }
            }
        }
    }

    /// The origin a browser is sent to, as a source of the consent page's
    /// `form-action`. A CSP source cannot name an IPv6 literal (Chromium ignores
    /// `http://[::1]:*`, then blocks the redirect to such a client after approval), so
    /// a pattern for one yields its scheme (`http:`) instead.
    pub(super) fn origin(&self) -> String {
        match self {
            Self::Exact(url) if matches!(url.host(), Some(url::Host::Ipv6(_))) => {
                format!("{}:", url.scheme())
            }
            Self::Exact(url) => url.origin().ascii_serialization(),
            Self::Wild { scheme, host, .. } if host.contains(':') => format!("{scheme}:"),
            Self::Wild {
                scheme, host, port, ..
            } => match port {
                None => format!("{scheme}://{host}:*"),
                Some(p) => format!("{scheme}://{host}:{p}"),
            },
        }
    }
}

/// A redirect URI a client may register: an absolute http(s) URL without fragment or
/// user info, allowed by one of `patterns`.
pub(super) fn allowed(patterns: &[Pattern], uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && uri.len() <= 2048
        && patterns.iter().any(|p| p.allows(&url))
}

/// Whether `requested` names the client's `registered` redirect URI: the same
/// string, or, for a loopback `http` URI (`127.0.0.1`, `[::1]`, `localhost`), the
/// same URI on another port. RFC 8252 section 7.3: a native client listens on
/// whatever port is free when the login starts, so the server must accept any
/// port for a loopback redirect; every other URI matches exactly.
pub(super) fn names_registered(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // Only a URI written as the parser writes it: no control characters it strips,
    // no case, dot segments or encodings it normalises.
    if b.as_str() != requested {
        return false;
    }
    let loopback = |u: &Url| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
                Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            }
    };
    loopback(&a)
        && loopback(&b)
        && a.host() == b.host()
        && a.path() == b.path()
        && a.query() == b.query()
        && a.fragment().is_none()
        && b.fragment().is_none()
        && b.username().is_empty()
        && b.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_redirect_matches_on_any_port_others_exactly() {
        for (registered, requested) in [
            (
                "http://127.0.0.1:33418/callback",
                "http://127.0.0.1:51000/callback",
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:51000/callback",
            ),
            ("http://localhost:6274/cb?x=1", "http://localhost:9/cb?x=1"),
            ("http://[::1]:9000/cb", "http://[::1]:9001/cb"),
            ("https://app.example.com/cb", "https://app.example.com/cb"),
        ] {
            assert!(names_registered(registered, requested), "{requested}");
        }
        for (registered, requested) in [
            // Not loopback: the port is part of the URI.
            (
                "https://app.example.com:8443/cb",
                "https://app.example.com:9443/cb",
            ),
            ("https://127.0.0.1:1/cb", "https://127.0.0.1:2/cb"),
            // Loopback, but another host, path, query, scheme or extra parts.
            ("http://127.0.0.1:1/cb", "http://localhost:1/cb"),
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:2/cb/x"),
            ("http://127.0.0.1:1/cb?a=1", "http://127.0.0.1:2/cb?a=2"),
            ("http://127.0.0.1:1/cb", "http://127.0.0.2:2/cb"),
            ("http://127.0.0.1:1/cb", "http://u:p@127.0.0.1:2/cb"),
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:2/cb#f"),
            ("http://localhost:1/cb", "http://localhost.evil.com:1/cb"),
            ("http://127.0.0.1:1/cb", "not a url"),
            // Not written as the parser writes it.
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:2/cb\u{0}"),
            ("http://127.0.0.1:1/cb", " http://127.0.0.1:2/cb"),
            ("http://127.0.0.1:1/cb", "HTTP://127.0.0.1:2/cb"),
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:2/x/../cb"),
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:02/cb"),
        ] {
            assert!(!names_registered(registered, requested), "{requested}");
        }
    }

    fn defaults() -> Vec<Pattern> {
        DEFAULT_PATTERNS
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn default_allows_loopback_http_only() {
        let p = defaults();
        for ok in [
            "http://127.0.0.1:33418/callback",
            "http://localhost:6274/oauth/callback",
            "http://localhost/callback",
            "http://[::1]:9000/cb?x=1",
        ] {
            assert!(allowed(&p, ok), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:1/cb",
            "http://127.0.0.2:1/cb",
            "http://localhost.evil.com:1/cb",
            "http://evil.com/cb",
            "http://user@127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb#frag",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(!allowed(&p, bad), "{bad}");
        }
    }

    #[test]
    fn exact_and_path_patterns() {
        let p = vec![
            Pattern::parse("https://claude.ai/api/mcp/auth_callback").unwrap(),
            Pattern::parse("https://app.example.com:*/cb/*").unwrap(),
        ];
        assert!(allowed(&p, "https://claude.ai/api/mcp/auth_callback"));
        assert!(!allowed(&p, "https://claude.ai/api/mcp/auth_callback2"));
        assert!(allowed(&p, "https://app.example.com:8443/cb/x"));
        assert!(allowed(&p, "https://APP.example.com/cb/"));
        assert!(!allowed(&p, "https://app.example.com/other"));
        assert_eq!(p[0].origin(), "https://claude.ai");
        assert_eq!(p[1].origin(), "https://app.example.com:*");
        for bad in [
            "ftp://x/*",
            "http://*.x.com/",
            "http://x:*/a*b",
            "http://x/a/*/b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// CSP sources cannot name IPv6 literals: those patterns yield their scheme
    /// (tests/browser.rs shows Chromium blocking an IPv6 loopback client otherwise).
    #[test]
    fn ipv6_patterns_give_a_scheme_source() {
        let p = defaults();
        let origins: Vec<String> = p.iter().map(Pattern::origin).collect();
        assert_eq!(
            origins,
            ["http://127.0.0.1:*", "http://localhost:*", "http:"]
        );
        assert_eq!(
            Pattern::parse("http://[::1]:8080/cb").unwrap().origin(),
            "http:"
        );
        assert_eq!(
            Pattern::parse("https://[2001:db8::1]/cb/*")
                .unwrap()
                .origin(),
            "https:"
        );
        assert!(origins.iter().all(|o| !o.contains('[')));
    }
}
