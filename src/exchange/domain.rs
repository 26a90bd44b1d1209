//! The identity domain's URL: validated once, at configuration time.

use url::{Host, Url};

use crate::error::{Error, ErrorKind, Result};

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidConfig, message)
}

/// Whether `host` is a loopback address or `localhost` (where plain `http` is
/// allowed): the signer's one loopback rule, applied to a parsed URL host.
pub(crate) fn is_loopback(host: Option<Host<&str>>) -> bool {
    host.is_some_and(|h| crate::signing::is_loopback_host(&h.to_string()))
}

/// Validates an identity domain URL and returns its origin (no path, no trailing
/// slash, default port dropped).
///
/// Accepted: `https://<host>[:port]` with an optional trailing `/`; `http` only for
/// loopback hosts. Rejected: a path, query, fragment or user info, which would
/// silently send credentials somewhere unintended.
pub(crate) fn parse_domain_url(input: &str) -> Result<Url> {
    let url = Url::parse(input.trim())
        .map_err(|e| invalid(format!("domain url is not a valid url: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url.host()) => {}
        "http" => {
            return Err(invalid(
                "domain url must use https (plain http is allowed only for loopback hosts)",
            ));
        }
        other => return Err(invalid(format!("domain url scheme '{other}' is not https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("domain url has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("domain url must not contain user info"));
    }
    if url.path() != "/" {
        return Err(invalid(
            "domain url must be the domain's origin, without a path (e.g. https://idcs-....identity.oraclecloud.com)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("domain url must not have a query or fragment"));
    }
    Ok(url)
}

/// The URL of an identity domain in Oracle's commercial realm (OC1,
/// `identity.oraclecloud.com`) from its bare id, such as
/// `idcs-0123456789abcdef0123456789abcdef`.
///
/// Other realms (government, sovereign, Alloy) use other host names: pass their full
/// URL to the builder instead.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] if `domain_id` is not a DNS label.
pub fn commercial_domain_url(domain_id: &str) -> Result<Url> {
    let id = domain_id.trim();
    let label_ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if !label_ok {
        return Err(invalid(
            "domain id must be a single dns label such as 'idcs-0123abcd'",
        ));
    }
    parse_domain_url(&format!("https://{id}.identity.oraclecloud.com"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_origins_and_normalises() {
        for (input, origin) in [
            (
                "https://idcs-abc.identity.oraclecloud.com",
                "https://idcs-abc.identity.oraclecloud.com/",
            ),
            (
                "https://idcs-abc.identity.oraclecloud.com/",
                "https://idcs-abc.identity.oraclecloud.com/",
            ),
            (
                "https://idcs-abc.identity.oraclecloud.com:443",
                "https://idcs-abc.identity.oraclecloud.com/",
            ),
            (
                "https://IDCS-abc.identity.oraclecloud.com:8443/",
                "https://idcs-abc.identity.oraclecloud.com:8443/",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"),
            ("http://127.8.9.10:9000/", "http://127.8.9.10:9000/"),
            ("http://[::1]:9000", "http://[::1]:9000/"),
            ("http://localhost:9000", "http://localhost:9000/"),
        ] {
            let url = parse_domain_url(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.as_str(), origin);
        }
    }

    #[test]
    fn rejects_what_would_misroute_credentials() {
        for input in [
            "",
            "idcs-abc.identity.oraclecloud.com",
            "http://idcs-abc.identity.oraclecloud.com",
            "http://10.0.0.1",
            "ftp://idcs-abc.identity.oraclecloud.com",
            "https://idcs-abc.identity.oraclecloud.com/oauth2/v1/token",
            "https://idcs-abc.identity.oraclecloud.com/?x=1",
            "https://idcs-abc.identity.oraclecloud.com/#f",
            "https://user:pw@idcs-abc.identity.oraclecloud.com",
            "https://user@idcs-abc.identity.oraclecloud.com",
        ] {
            let err = parse_domain_url(input).expect_err(input);
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn commercial_helper() {
        assert_eq!(
            commercial_domain_url("idcs-0123abcd")
                .map(String::from)
                .ok()
                .as_deref(),
            Some("https://idcs-0123abcd.identity.oraclecloud.com/")
        );
        for bad in ["", "a.b", "-x", "https://x", "a/b"] {
            assert!(commercial_domain_url(bad).is_err(), "{bad}");
        }
    }
}
