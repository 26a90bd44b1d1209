//! Reading JWT claims without verifying the signature.
//!
//! Used for the subject token (to know its issuer, id and expiry before sending it
//! anywhere) and for the UPST (which came over TLS from the identity domain and
//! cannot be verified by the caller). Nothing here decides trust.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// Largest token accepted; real JWTs are a few KiB.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The payload of a JWT, decoded but not verified.
#[derive(Clone, Debug)]
pub(crate) struct Claims(pub(crate) Map<String, Value>);

impl Claims {
    /// Decodes the payload of a compact JWS (`header.payload.signature`).
    ///
    /// `kind` is the error kind to report (the subject token and the UPST differ).
    pub(crate) fn decode(token: &str, kind: ErrorKind, what: &'static str) -> Result<Self> {
        let bad = |m: &str| Error::new(kind, format!("{what} {m}"));
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("is too long to be a jwt"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("is not a jwt (expected three dot-separated parts)"));
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
        let header = decode(header).map_err(|_| bad("has a header that is not base64url"))?;
        if !matches!(
            serde_json::from_slice::<Value>(&header),
            Ok(Value::Object(_))
        ) {
            return Err(bad("has a header that is not a json object"));
        }
        let payload = decode(payload).map_err(|_| bad("has a payload that is not base64url"))?;
        match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            _ => Err(bad("has a payload that is not a json object")),
        }
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (seconds since the epoch; fractions truncated).
    pub(crate) fn time(&self, name: &str) -> Option<SystemTime> {
        let value = self.0.get(name)?;
        let secs = value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"RS256\"}"),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_claims() {
        let c = Claims::decode(
            &jwt(r#"{"exp":1700000000,"iat":1.7e9,"jti":"x"}"#),
            ErrorKind::SubjectTokenMalformed,
            "t",
        )
        .expect("decodes");
        assert_eq!(c.str("jti"), Some("x"));
        assert_eq!(
            c.time("exp"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            c.time("iat"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(c.time("nbf"), None);
    }

    #[test]
    fn rejects_non_jwts_without_echoing_them() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.x",
            &jwt("[1]"),
            &jwt("not json"),
            "e30.!!.x",
        ] {
            let err = Claims::decode(t, ErrorKind::SubjectTokenMalformed, "subject token")
                .expect_err("must fail");
            assert_eq!(err.kind(), ErrorKind::SubjectTokenMalformed);
            assert!(t.len() < 3 || !err.to_string().contains(t), "{err}");
        }
    }
}
