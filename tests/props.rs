//! Properties of sign and verify over generated requests.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use oci_token_exchange::{
    DateHeader, KeyId, SignableBody, SignableRequest, SigningKey, SigningOptions, SigningParams,
    VerifyOptions, sign, verify,
};
use proptest::prelude::*;

static KEY: LazyLock<SigningKey> = LazyLock::new(|| {
    SigningKey::from_pem(include_str!("../fixtures/keys/rsa2048-pkcs8.pem")).expect("key")
});
const NOW: u64 = 1_764_150_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

#[derive(Clone, Debug)]
struct Generated {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    x_date: bool,
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "PATCH",
    ])
}

fn request() -> impl Strategy<Value = Generated> {
    (
        method(),
        "[a-z][a-z0-9-]{0,12}(\\.[a-z0-9-]{1,8}){0,2}\\.[a-z]{2,5}",
        prop::option::of(1u16..=65535),
        prop::collection::vec("([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2}){0,10}", 0..4),
        prop::option::of("([A-Za-z0-9._~!$'()*+,;=:@/?-]|%[0-9A-F]{2}){0,20}(&[a-z]{1,4}=[A-Za-z0-9%+]{0,8}){0,3}"),
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "application/octet-stream",
            "text/plain; charset=utf-8",
        ])),
        prop::option::of("[A-Za-z0-9._-]{1,40}"),
        prop::collection::vec(any::<u8>(), 0..512),
        any::<bool>(),
    )
        .prop_map(|(method, host, port, segments, query, content_type, obo, body, x_date)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            let url = format!("https://{host}{port}/{}{query}", segments.join("/"));
            let mut headers = Vec::new();
            let body_method = matches!(method, "POST" | "PUT" | "PATCH");
            if let Some(ct) = content_type.filter(|_| body_method) {
                headers.push(("content-type".to_owned(), ct.to_owned()));
            }
            if let Some(obo) = obo {
                headers.push(("opc-obo-token".to_owned(), obo));
            }
            headers.push(("opc-request-id".to_owned(), "unsigned-id".to_owned()));
            Generated {
                method,
                url,
                headers,
                body: if body_method { body } else { Vec::new() },
                x_date,
            }
        })
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    map
}

/// Signs `g` and returns what the server receives: (method, host, target, headers).
fn signed(g: &Generated) -> (String, String, String, HeaderMap) {
    let url = url::Url::parse(&g.url).expect("generated urls parse");
    let headers = header_map(&g.headers);
    let request = SignableRequest::new(g.method, &url, &headers, SignableBody::Bytes(&g.body))
        .expect("signable");
    let key_id = KeyId::session_token("a.b.c").expect("id");
    let date = if g.x_date {
        DateHeader::XDate
    } else {
        DateHeader::Date
    };
    let options = SigningOptions::new().date_header(date);
    let out = sign(
        &request,
        &SigningParams::new(&KEY, &key_id, now()).with_options(&options),
    )
    .expect("signs");
    let (host, target) = (request.host().to_owned(), request.target().to_owned());
    let mut received = headers.clone();
    out.apply_to_headers(&mut received);
    (g.method.to_owned(), host, target, received)
}

fn verifies(method: &str, host: &str, target: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let request =
        SignableRequest::from_parts(method, host, target, headers, SignableBody::Bytes(body));
    verify(&request, &VerifyOptions::new(now()), |_| {
        Ok(KEY.public_key().clone())
    })
    .is_ok()
}

/// Replaces byte `at` (modulo length) of `s` by another visible ASCII byte.
fn mutate(s: &str, at: usize, delta: u8) -> String {
    let mut bytes = s.as_bytes().to_vec();
    let i = at % bytes.len();
    let old = bytes[i];
    let mut new = if old.is_ascii_graphic() {
        b'!' + (old - b'!' + 1 + delta % 93) % 94
    } else {
        b'a'
    };
    if new == old {
        new = if old == b'a' { b'b' } else { b'a' };
    }
    bytes[i] = new;
    String::from_utf8(bytes).expect("ascii")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn signed_requests_verify(g in request()) {
        let (method, host, target, headers) = signed(&g);
        prop_assert!(verifies(&method, &host, &target, &headers, &g.body));
    }

    #[test]
    fn any_single_byte_change_of_a_signed_part_is_rejected(
        g in request(),
        part in 0usize..5,
        at in any::<usize>(),
        delta in any::<u8>(),
    ) {
        let (method, host, target, headers) = signed(&g);
        let rejected = match part {
            0 => {
                let other = mutate(&target, at, delta);
                !verifies(&method, &host, &other, &headers, &g.body)
            }
            1 => {
                let other = mutate(&host, at, delta);
                !verifies(&method, &other, &target, &headers, &g.body)
            }
            2 => {
                let other = if method == "PATCH" { "PUT" } else { "PATCH" };
                !verifies(other, &host, &target, &headers, &g.body)
            }
            3 => {
                // One signed header value (date, x-date, content-*, obo token).
                let auth = headers["authorization"].to_str().expect("ascii");
                let list = auth.split("headers=\"").nth(1).and_then(|r| r.split('"').next()).expect("list");
                let names: Vec<&str> = list.split(' ').filter(|n| !n.starts_with('(') && *n != "host").collect();
                let name = names[at % names.len()];
                let value = headers[name].to_str().expect("ascii").to_owned();
                let mut changed = headers.clone();
                changed.insert(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(&mutate(&value, at / 7, delta)).expect("value"),
                );
                !verifies(&method, &host, &target, &changed, &g.body)
            }
            _ => {
                if g.body.is_empty() {
                    // Append a byte instead: an empty body becomes non-empty.
                    !verifies(&method, &host, &target, &headers, b"x") || !g.method.starts_with('P')
                } else {
                    let mut body = g.body.clone();
                    let i = at % body.len();
                    body[i] ^= 1 | delta;
                    !verifies(&method, &host, &target, &headers, &body)
                }
            }
        };
        prop_assert!(rejected);
    }

    #[test]
    fn sign_never_panics(
        method in "\\PC{0,8}",
        host in "\\PC{0,30}",
        target in "\\PC{0,60}",
        values in prop::collection::vec(("[a-z-]{1,16}", prop::collection::vec(any::<u8>(), 0..40)), 0..5),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut headers = HeaderMap::new();
        for (n, v) in &values {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_bytes(v)) {
                headers.append(n, v);
            }
        }
        let key_id = KeyId::api_key("t", "u", "f").expect("id");
        let request = SignableRequest::from_parts(&method, &host, &target, &headers, SignableBody::Bytes(&body));
        let _ = sign(&request, &SigningParams::new(&KEY, &key_id, now()));
        if let Ok(url) = url::Url::parse(&format!("https://{host}{target}"))
            && let Ok(request) = SignableRequest::new(&method, &url, &headers, SignableBody::Bytes(&body))
        {
            let _ = sign(&request, &SigningParams::new(&KEY, &key_id, now()));
        }
    }

    #[test]
    fn verify_never_panics(
        authorization in "Signature ((version|keyId|algorithm|headers|signature|x)=\"[^\"]{0,40}\",?){0,7}|\\PC{0,80}",
        names in prop::collection::vec(prop::sample::select(vec!["date", "x-date", "host", "content-length", "content-type", "x-content-sha256", "(request-target)", "bogus"]), 0..8),
        date in "\\PC{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut headers = HeaderMap::new();
        let list = names.join(" ");
        let auth = if authorization.starts_with("Signature ") {
            format!("Signature keyId=\"a/b/c\",algorithm=\"rsa-sha256\",headers=\"{list}\",signature=\"AAAA\"")
        } else {
            authorization
        };
        if let Ok(v) = HeaderValue::from_str(&auth) {
            headers.insert("authorization", v);
        }
        if let Ok(v) = HeaderValue::from_str(&date) {
            headers.insert("date", v.clone());
            headers.insert("content-length", v.clone());
            headers.insert("x-content-sha256", v);
        }
        let request = SignableRequest::from_parts("POST", "h", "/", &headers, SignableBody::Bytes(&body));
        let _ = verify(&request, &VerifyOptions::new(now()), |_| Ok(KEY.public_key().clone()));
    }
}

/// First second of the year 10000: an HTTP-date has four year digits.
const YEAR_10000: i128 = 253_402_300_800;

/// `UNIX_EPOCH` moved by `secs` seconds and `nanos`, if `SystemTime` can hold it.
fn time_at(secs: i128, nanos: u32) -> Option<SystemTime> {
    let magnitude = Duration::new(u64::try_from(secs.unsigned_abs()).ok()?, nanos);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    }
}

fn any_seconds() -> impl Strategy<Value = i128> {
    prop_oneof![
        // Around today, the epoch and year 10000.
        (-86_400i128..4_000_000_000),
        (-10i128..10),
        (YEAR_10000 - 10..YEAR_10000 + 10),
        // Anywhere, up to what a SystemTime can hold on this platform.
        any::<i64>().prop_map(i128::from),
        Just(i128::from(i64::MAX)),
        Just(i128::from(i64::MIN)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue 9, defect 9: `httpdate` panicked for times before 1970 or from the year
    /// 10000, so a wrong `Clock` crashed the signer. Any time now signs or fails with
    /// `InvalidDate`, and signs exactly when the year has four digits from 1970.
    #[test]
    fn signing_at_any_time_never_panics(secs in any_seconds(), nanos in 0u32..1_000_000_000) {
        let Some(time) = time_at(secs, nanos) else {
            return Ok(());
        };
        let key_id = KeyId::api_key("ocid1.tenancy.oc1..t", "ocid1.user.oc1..u", "aa:bb").unwrap();
        let headers = HeaderMap::new();
        let url = url::Url::parse("https://example.com/x").unwrap();
        let request = SignableRequest::new("GET", &url, &headers, SignableBody::EMPTY).unwrap();
        let result = sign(&request, &SigningParams::new(&KEY, &key_id, time));
        let representable = (0..YEAR_10000).contains(&secs);
        match result {
            Ok(output) => {
                prop_assert!(representable, "signed at {secs}");
                prop_assert_eq!(
                    output.headers()[0].1.to_str().unwrap(),
                    httpdate::fmt_http_date(time)
                );
            }
            Err(err) => {
                prop_assert!(!representable, "{secs}: {err}");
                prop_assert_eq!(err.kind(), oci_token_exchange::ErrorKind::InvalidDate);
                prop_assert!(err.to_string().contains("1970"), "{}", err);
            }
        }
    }
}
