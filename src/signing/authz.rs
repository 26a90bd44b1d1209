//! The `Authorization: Signature ...` header: writing it and reading it back.

use crate::error::{Error, ErrorKind, Result};

/// The only algorithm OCI uses.
pub(crate) const ALGORITHM: &str = "rsa-sha256";

/// Writes `Signature version="1",headers="...",keyId="...",algorithm="rsa-sha256",signature="..."`
/// (the parameter order of Oracle's documentation and the Go SDK).
pub(crate) fn format(headers: &str, key_id: &str, signature_b64: &str) -> String {
    let mut out = String::with_capacity(64 + headers.len() + key_id.len() + signature_b64.len());
    out.push_str("Signature version=\"1\",headers=\"");
    out.push_str(headers);
    out.push_str("\",keyId=\"");
    out.push_str(key_id);
    out.push_str("\",algorithm=\"");
    out.push_str(ALGORITHM);
    out.push_str("\",signature=\"");
    out.push_str(signature_b64);
    out.push('"');
    out
}

/// The parameters of a received `Authorization: Signature` header.
#[derive(Debug)]
pub(crate) struct SignatureParams<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) headers: &'a str,
    pub(crate) signature: &'a str,
}

fn rejected(message: &'static str) -> Error {
    Error::new(ErrorKind::SignatureRejected, message)
}

/// Parses `Signature k="v",k="v",...` with the parameters in any order.
pub(crate) fn parse(value: &str) -> Result<SignatureParams<'_>> {
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| rejected("authorization header is not a signature"))?;
    if !scheme.eq_ignore_ascii_case("Signature") {
        return Err(rejected("authorization scheme is not 'Signature'"));
    }
    let (mut version, mut algorithm, mut key_id, mut headers, mut signature) =
        (None, None, None, None, None);
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| rejected("malformed signature parameter"))?;
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| rejected("signature parameter value is not quoted"))?;
        let (val, after) = after
            .split_once('"')
            .ok_or_else(|| rejected("unterminated signature parameter value"))?;
        let slot = match name.trim() {
            "version" => &mut version,
            "algorithm" => &mut algorithm,
            "keyId" => &mut key_id,
            "headers" => &mut headers,
            "signature" => &mut signature,
            _ => return Err(rejected("unknown signature parameter")),
        };
        if slot.replace(val).is_some() {
            return Err(rejected("duplicate signature parameter"));
        }
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.is_empty() => after,
            None => return Err(rejected("signature parameters are not comma-separated")),
        };
    }
    if version.is_some_and(|v| v != "1") {
        return Err(rejected("unsupported signature version"));
    }
    match algorithm {
        Some(a) if a.eq_ignore_ascii_case(ALGORITHM) => {}
        Some(_) => return Err(rejected("unsupported signature algorithm")),
        None => return Err(rejected("signature has no algorithm")),
    }
    Ok(SignatureParams {
        key_id: key_id.ok_or_else(|| rejected("signature has no keyId"))?,
        headers: headers.ok_or_else(|| rejected("signature has no headers list"))?,
        signature: signature.ok_or_else(|| rejected("signature has no signature value"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_parameter_order() {
        let a = format("date (request-target) host", "a/b/c", "c2ln");
        let b = "Signature algorithm=\"rsa-sha256\",signature=\"c2ln\",keyId=\"a/b/c\",headers=\"date (request-target) host\"";
        for v in [a.as_str(), b] {
            let p = parse(v).ok();
            assert_eq!(p.as_ref().map(|p| p.key_id), Some("a/b/c"));
            assert_eq!(p.as_ref().map(|p| p.signature), Some("c2ln"));
            assert_eq!(
                p.as_ref().map(|p| p.headers),
                Some("date (request-target) host")
            );
        }
    }

    #[test]
    fn rejects_malformed_headers() {
        for v in [
            "",
            "Basic abc",
            "Signature keyId=a",
            "Signature keyId=\"a\",keyId=\"a\",algorithm=\"rsa-sha256\",headers=\"x\",signature=\"s\"",
            "Signature keyId=\"a\",algorithm=\"hmac-sha256\",headers=\"x\",signature=\"s\"",
            "Signature keyId=\"a\",algorithm=\"rsa-sha256\",headers=\"x\"",
            "Signature version=\"2\",keyId=\"a\",algorithm=\"rsa-sha256\",headers=\"x\",signature=\"s\"",
        ] {
            assert!(parse(v).is_err(), "{v}");
        }
    }
}
