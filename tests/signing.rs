//! Keys, the signer's error paths (request left untouched), and redaction.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request};
use oci_token_exchange::{
    ErrorKind, KeyBackend, KeyId, KeySize, PublicKey, SecretString, SignableBody, SignableRequest,
    SigningKey, SigningOptions, SigningParams, VerifyOptions, sign, sign_http_parts,
    sign_http_request, verify,
};

const PKCS1: &str = include_str!("../fixtures/keys/rsa2048-pkcs1.pem");
const PKCS8: &str = include_str!("../fixtures/keys/rsa2048-pkcs8.pem");
const PUBLIC: &str = include_str!("../fixtures/keys/rsa2048-public.pem");
const SPKI_PREFIX: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";
const NOW: u64 = 1_764_150_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).expect("fixture")
}

fn key() -> SigningKey {
    SigningKey::from_pem(PKCS8).expect("fixture key")
}

#[test]
fn pkcs1_and_pkcs8_give_the_same_key_with_every_backend() {
    let public = PublicKey::from_pem(PUBLIC).expect("public");
    for &backend in KeyBackend::ALL {
        for pem in [PKCS1, PKCS8] {
            let key = SigningKey::from_pem_with(pem, backend).expect("parses");
            assert_eq!(key.public_key(), &public);
            assert_eq!(key.backend(), backend);
            let sig = key.sign_pkcs1_sha256(b"message").expect("signs");
            // Every backend verifies every backend's signature.
            for &verifier in KeyBackend::ALL {
                assert!(public.verify_with(verifier, b"message", &sig));
                assert!(!public.verify_with(verifier, b"messagf", &sig));
            }
        }
    }
}

/// OCI requires API keys of at least 2048 bits. The `unsafe` path that signed
/// 1024-bit keys with aws-lc is gone: aws-lc-rs refuses them with an error naming
/// the feature that does sign them, and `from_pem` uses rust-crypto for them when
/// it is compiled in.
#[test]
fn keys_under_2048_bits_sign_only_with_rust_crypto() {
    let pem = fixture("rsa1024-pkcs8.pem");
    #[cfg(feature = "aws-lc-rs")]
    {
        let err = SigningKey::from_pem_with(&pem, KeyBackend::AwsLcRs).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedKey);
        assert!(err.to_string().contains("`rust-crypto`"), "{err}");
        assert!(err.to_string().contains("2048"), "{err}");
    }
    let rust_crypto = cfg!(feature = "rust-crypto");
    match SigningKey::from_pem(&pem) {
        Ok(key) => {
            assert!(rust_crypto);
            assert_eq!(key.bits(), 1024);
            assert_eq!(key.backend(), KeyBackend::ALL[KeyBackend::ALL.len() - 1]);
            let sig = key.sign_pkcs1_sha256(b"m").unwrap();
            for &backend in KeyBackend::ALL {
                assert!(key.public_key().verify_with(backend, b"m", &sig));
            }
        }
        Err(err) => {
            assert!(!rust_crypto, "{err}");
            assert_eq!(err.kind(), ErrorKind::UnsupportedKey);
        }
    }
}

#[test]
fn generated_keys_export_the_token_exchange_public_key_form() {
    for &backend in KeyBackend::ALL {
        let key = SigningKey::generate_with(backend, KeySize::Rsa2048).expect("generates");
        assert_eq!(key.bits(), 2048);
        let b64 = key.public_key().to_spki_base64();
        assert_eq!(b64.len(), 392);
        assert!(b64.starts_with(SPKI_PREFIX), "{b64}");
        assert!(b64.ends_with("IDAQAB"), "{b64}");
        assert_eq!(
            PublicKey::from_spki_base64(&b64).expect("parses"),
            *key.public_key()
        );
        assert_eq!(key.public_key().jwk_e(), "AQAB");
        let jwk: serde_json::Value =
            serde_json::from_str(&key.public_key().to_jwk_json(Some("k1"))).expect("json");
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"], "k1");
        let back = PublicKey::from_jwk_components(
            jwk["n"].as_str().expect("n"),
            jwk["e"].as_str().expect("e"),
        )
        .expect("jwk parses");
        assert_eq!(&back, key.public_key());
        let sig = key.sign_pkcs1_sha256(b"hello").expect("signs");
        assert!(back.verify_pkcs1_sha256(b"hello", &sig));
    }
    let two = (
        SigningKey::generate(KeySize::Rsa2048).expect("a"),
        SigningKey::generate(KeySize::Rsa2048).expect("b"),
    );
    assert_ne!(two.0.public_key(), two.1.public_key(), "fresh keys differ");
    let big = SigningKey::generate(KeySize::Rsa3072).expect("3072");
    assert_eq!(big.bits(), 3072);
}

#[test]
fn bad_keys_get_their_own_error_kinds() {
    let cases = [
        ("not a key".to_owned(), ErrorKind::MalformedKey),
        (PUBLIC.to_owned(), ErrorKind::MalformedKey),
        (PKCS8.replace("MII", "MIJ"), ErrorKind::MalformedKey),
        (
            fixture("rsa2048-encrypted-pkcs8.pem"),
            ErrorKind::EncryptedKey,
        ),
        (
            fixture("rsa2048-encrypted-pkcs1.pem"),
            ErrorKind::EncryptedKey,
        ),
        (fixture("ec-p256-pkcs8.pem"), ErrorKind::UnsupportedKey),
        (fixture("ed25519-pkcs8.pem"), ErrorKind::UnsupportedKey),
        (fixture("rsa512-pkcs8.pem"), ErrorKind::UnsupportedKey),
    ];
    for &backend in KeyBackend::ALL {
        for (pem, kind) in &cases {
            let err = SigningKey::from_pem_with(pem, backend).expect_err("must fail");
            assert_eq!(err.kind(), *kind, "{err}");
            // The message names the problem, not the key.
            assert!(!err.to_string().contains("MII"), "{err}");
        }
    }
}

/// Signs `request`, expecting `kind`, and checks that the request did not change.
fn assert_untouched_failure(mut request: Request<Vec<u8>>, kind: ErrorKind) {
    let key = key();
    let key_id = KeyId::api_key("ocid1.tenancy.oc1..t", "ocid1.user.oc1..u", "aa:bb").expect("id");
    let before = (
        request.headers().clone(),
        request.uri().clone(),
        request.body().clone(),
    );
    let err = sign_http_request(&mut request, &SigningParams::new(&key, &key_id, now()))
        .expect_err("must fail");
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(
        (
            request.headers().clone(),
            request.uri().clone(),
            request.body().clone()
        ),
        before
    );
}

#[test]
fn bad_requests_fail_with_their_own_kind_and_stay_untouched() {
    let build = |method: &str, uri: &str, headers: &[(&str, &[u8])], body: &[u8]| {
        let mut r = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(uri)
            .body(body.to_vec())
            .expect("request");
        for (n, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v).expect("value"),
            );
        }
        r
    };
    let h = "https://iaas.example.com/20160918/x";
    assert_untouched_failure(
        build("GET", "/relative/only", &[], b""),
        ErrorKind::InvalidUrl,
    );
    assert_untouched_failure(
        build(
            "POST",
            h,
            &[("content-type", "caf\u{e9}".as_bytes())],
            b"{}",
        ),
        ErrorKind::InvalidHeader,
    );
    assert_untouched_failure(
        build("POST", h, &[("content-length", b"3")], b"{}"),
        ErrorKind::InvalidHeader,
    );
    assert_untouched_failure(
        build("GET", h, &[("date", b"a"), ("date", b"b")], b""),
        ErrorKind::InvalidHeader,
    );
    assert_untouched_failure(build("FROB", h, &[], b"body"), ErrorKind::UnsupportedMethod);
    assert_untouched_failure(build("GET", h, &[], b"body"), ErrorKind::UnsupportedMethod);
    assert_untouched_failure(
        build("GET", h, &[("date", b"yesterday")], b""),
        ErrorKind::InvalidDate,
    );
    // An unknown method without a body is signed like GET.
    let mut ok = build("FROB", h, &[], b"");
    let key = key();
    let key_id = KeyId::api_key("t", "u", "f").expect("id");
    let out = sign_http_request(&mut ok, &SigningParams::new(&key, &key_id, now())).expect("signs");
    assert!(
        out.signing_string()
            .contains("(request-target): frob /20160918/x")
    );
}

#[test]
fn streamed_bodies_need_a_precomputed_hash() {
    let key = key();
    let key_id = KeyId::api_key("t", "u", "f").expect("id");
    let params = SigningParams::new(&key, &key_id, now());
    let (mut parts, ()) = Request::post("https://objectstorage.example.com/n/ns/b/b/o/x")
        .body(())
        .expect("request")
        .into_parts();
    let before = parts.headers.clone();
    let err = sign_http_parts(&mut parts, SignableBody::Stream, &params).expect_err("stream");
    assert_eq!(err.kind(), ErrorKind::UnsignableBody);
    assert_eq!(parts.headers, before);

    let body = b"streamed content".repeat(1000);
    let precomputed = SignableBody::Precomputed {
        content_length: body.len() as u64,
        sha256: <sha2::Sha256 as sha2::Digest>::digest(&body).into(),
    };
    sign_http_parts(&mut parts, precomputed, &params).expect("precomputed signs");
    assert_eq!(
        parts.headers["content-length"],
        body.len().to_string().as_str()
    );
    // The server, which sees the actual bytes, accepts it.
    let received = SignableRequest::from_parts(
        "POST",
        "objectstorage.example.com",
        "/n/ns/b/b/o/x",
        &parts.headers,
        SignableBody::Bytes(&body),
    );
    let public = key.public_key().clone();
    verify(&received, &VerifyOptions::new(now()), |_| Ok(public)).expect("verifies");

    // Uploads sign without body headers, so a stream needs no hash there.
    let options = SigningOptions::new().exclude_body(true);
    let (mut parts, ()) = Request::put("https://objectstorage.example.com/n/ns/b/b/o/x")
        .body(())
        .expect("request")
        .into_parts();
    let out = sign_http_parts(
        &mut parts,
        SignableBody::Stream,
        &params.with_options(&options),
    )
    .expect("excluded body signs");
    assert!(!out.signing_string().contains("x-content-sha256"));
}

#[cfg(feature = "reqwest")]
#[test]
fn reqwest_requests_are_signed_in_place_and_streams_refused() {
    let key = key();
    let key_id = KeyId::session_token("header.payload.sig\n").expect("id");
    let params = SigningParams::new(&key, &key_id, now());
    let client = reqwest::Client::builder().build().expect("client");
    let mut request = client
        .post("https://identity.example.com:8443/20160918/users?x=a%20b")
        .header("content-type", "application/json")
        .body("{\"name\":\"bob\"}")
        .build()
        .expect("request");
    let out = oci_token_exchange::sign_reqwest_request(&mut request, &params).expect("signs");
    assert!(out.signing_string().contains(
        "(request-target): post /20160918/users?x=a%20b\nhost: identity.example.com:8443"
    ));
    let auth = &request.headers()["authorization"];
    assert!(auth.is_sensitive());
    assert!(
        auth.to_str()
            .expect("ascii")
            .contains("keyId=\"ST$header.payload.sig\"")
    );
    let received = SignableRequest::from_parts(
        "POST",
        "identity.example.com:8443",
        "/20160918/users?x=a%20b",
        request.headers(),
        SignableBody::Bytes(b"{\"name\":\"bob\"}"),
    );
    let public = key.public_key().clone();
    verify(&received, &VerifyOptions::new(now()), |id| {
        assert_eq!(id.token(), Some("header.payload.sig"));
        Ok(public)
    })
    .expect("verifies");

    let stream = http_body_util::Full::new(bytes::Bytes::from_static(b"data"));
    let mut streaming = client
        .put("https://objectstorage.example.com/n/ns/b/b/o/x")
        .body(reqwest::Body::wrap(stream))
        .build()
        .expect("request");
    let before = streaming.headers().clone();
    let err = oci_token_exchange::sign_reqwest_request(&mut streaming, &params)
        .expect_err("stream refused");
    assert_eq!(err.kind(), ErrorKind::UnsignableBody);
    assert_eq!(streaming.headers(), &before);
}

#[test]
fn verify_checks_what_it_must() {
    let key = key();
    let key_id = KeyId::api_key("t", "u", "f").expect("id");
    let public = key.public_key().clone();
    let mut request = Request::post("https://h.example.com/p")
        .body(b"{}".to_vec())
        .expect("request");
    let options = SigningOptions::new().exclude_body(true);
    sign_http_request(
        &mut request,
        &SigningParams::new(&key, &key_id, now()).with_options(&options),
    )
    .expect("signs");
    let received = SignableRequest::from_parts(
        "POST",
        "h.example.com",
        "/p",
        request.headers(),
        SignableBody::Bytes(b"{}"),
    );
    let strict = verify(
        &received,
        &VerifyOptions::new(now()),
        |_| Ok(public.clone()),
    );
    assert_eq!(
        strict.expect_err("body headers required").kind(),
        ErrorKind::SignatureRejected
    );
    let lenient = VerifyOptions::new(now()).allow_unsigned_body(true);
    verify(&received, &lenient, |_| Ok(public.clone())).expect("upload accepted");
    let other = PublicKey::from_pem(include_str!("../fixtures/signing/public.pem")).unwrap();
    let wrong = verify(&received, &lenient, |_| Ok(other.clone()));
    assert!(
        wrong
            .expect_err("wrong key")
            .to_string()
            .contains("does not match")
    );
    let skewed = VerifyOptions::new(now() - Duration::from_secs(301)).allow_unsigned_body(true);
    assert!(verify(&received, &skewed, |_| Ok(public.clone())).is_err());

    let mut no_auth = HeaderMap::new();
    no_auth.insert(
        "date",
        HeaderValue::from_static("Thu, 05 Jan 2014 21:31:40 GMT"),
    );
    let bare = SignableRequest::from_parts("GET", "h", "/", &no_auth, SignableBody::EMPTY);
    assert!(verify(&bare, &lenient, |_| Ok(public.clone())).is_err());
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";
    let key_id = KeyId::session_token(token).expect("id");
    assert!(!format!("{key_id:?}").contains("eyJ"), "{key_id:?}");
    assert_eq!(key_id.token(), Some(token));

    let secret = SecretString::new("client-secret-value");
    assert!(!format!("{secret:?}").contains("client-secret-value"));

    let key = key();
    let debug = format!("{key:?}");
    assert!(debug.contains("[redacted]"));
    for line in PKCS8.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line.get(..16).unwrap_or(line)), "{debug}");
    }

    let mut request = Request::get("https://h.example.com/")
        .body(Vec::new())
        .expect("req");
    let out =
        sign_http_request(&mut request, &SigningParams::new(&key, &key_id, now())).expect("signs");
    let debug = format!("{out:?} {request:?}");
    assert!(!debug.contains("eyJ"), "{debug}");

    // A request to sign shows its header names, never their values.
    let mut headers = HeaderMap::new();
    headers.insert(
        "opc-obo-token",
        HeaderValue::from_static("obo-secret-value"),
    );
    let url = url::Url::parse("https://h.example.com/20160918/vcns").expect("url");
    let signable =
        SignableRequest::new("GET", &url, &headers, SignableBody::EMPTY).expect("signable");
    let debug = format!("{signable:?}");
    assert!(debug.contains("opc-obo-token"), "{debug}");
    assert!(!debug.contains("obo-secret-value"), "{debug}");

    let err = KeyId::session_token("eyJsecret\"quoted").expect_err("quote");
    assert!(!err.to_string().contains("eyJ"));
    assert!(!format!("{err:?}").contains("eyJ"));
}

#[test]
fn review_regressions_stay_fixed() {
    let key = key();
    let key_id = KeyId::api_key("t", "u", "f").expect("id");
    let headers = HeaderMap::new();

    // Plain http only to loopback: a signed request is a replayable credential.
    for (url, ok) in [
        ("http://iaas.example.com/x", false),
        ("http://127.0.0.1:8080/x", true),
        ("http://localhost/x", true),
        ("http://[::1]/x", true),
    ] {
        let url = url::Url::parse(url).expect("url");
        let result = SignableRequest::new("GET", &url, &headers, SignableBody::EMPTY);
        assert_eq!(result.is_ok(), ok, "{url}");
        if !ok {
            assert_eq!(result.expect_err("refused").kind(), ErrorKind::InvalidUrl);
        }
    }

    // Extra headers never drop a standard signed header.
    let options = SigningOptions::new().extra_headers([
        http::header::CONTENT_TYPE,
        http::HeaderName::from_static("opc-obo-token"),
    ]);
    let url = url::Url::parse("https://iaas.example.com/x").expect("url");
    let request =
        SignableRequest::new("POST", &url, &headers, SignableBody::Bytes(b"{}")).expect("signable");
    let out = sign(
        &request,
        &SigningParams::new(&key, &key_id, now()).with_options(&options),
    )
    .expect("signs");
    assert!(
        out.signing_string()
            .contains("content-type: application/json"),
        "{}",
        out.signing_string()
    );

    // A body on a GET that the signature does not cover is refused by verify.
    let mut request = Request::get("https://h.example.com/p")
        .body(Vec::new())
        .expect("request");
    sign_http_request(&mut request, &SigningParams::new(&key, &key_id, now())).expect("signs");
    let received = SignableRequest::from_parts(
        "GET",
        "h.example.com",
        "/p",
        request.headers(),
        SignableBody::Bytes(b"smuggled"),
    );
    let public = key.public_key().clone();
    let err = verify(
        &received,
        &VerifyOptions::new(now()),
        |_| Ok(public.clone()),
    )
    .expect_err("body not covered");
    assert!(err.to_string().contains("body"), "{err}");
}

/// Issue 9, defect 3: the `http` crate path refused nothing, so a request to a
/// non-loopback `http://` host was signed (its key id and signature then travel in
/// clear text).
#[test]
fn plain_http_to_a_remote_host_is_refused_through_the_http_crate_path() {
    let key = key();
    let key_id = KeyId::api_key("ocid1.tenancy.oc1..t", "ocid1.user.oc1..u", "aa:bb").unwrap();
    let params = SigningParams::new(&key, &key_id, now());
    for uri in [
        "http://objectstorage.us-ashburn-1.oraclecloud.com/n",
        "http://10.0.0.1:8080/x",
        "HTTP://example.com/",
    ] {
        let mut request = Request::get(uri).body(Vec::<u8>::new()).unwrap();
        let err = sign_http_request(&mut request, &params).expect_err(uri);
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{uri}");
        assert!(err.to_string().contains("plain-http"), "{err}");
        assert!(request.headers().is_empty(), "{uri}: request modified");
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        let err = sign_http_parts(&mut parts, SignableBody::EMPTY, &params).expect_err(uri);
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{uri}");
        assert!(parts.headers.is_empty());
    }
    // Same for a non-http(s) scheme, as `SignableRequest::new` does.
    let uri: http::Uri = "ftp://example.com/x".parse().unwrap();
    let headers = HeaderMap::new();
    let err = SignableRequest::from_uri("GET", &uri, &headers, SignableBody::EMPTY).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidUrl);
    // Loopback http, https, and an origin-form target (what a server sees, with the
    // host in the Host header) still sign.
    for uri in [
        "http://127.0.0.1:9000/x",
        "http://localhost/x",
        "http://[::1]:1/x",
        "https://example.com/x",
    ] {
        let mut request = Request::get(uri).body(Vec::<u8>::new()).unwrap();
        sign_http_request(&mut request, &params).expect(uri);
    }
    let mut request = Request::get("/x")
        .header("host", "example.com")
        .body(Vec::<u8>::new())
        .unwrap();
    sign_http_request(&mut request, &params).expect("origin-form");
}

/// Issue 9, defect 6: `signing_string()` is documented as secret-free and printed by
/// `sign --verbose`, but held the `opc-obo-token` value.
#[test]
fn signing_string_redacts_the_obo_token_but_the_signature_covers_it() {
    let key = key();
    let key_id = KeyId::api_key("ocid1.tenancy.oc1..t", "ocid1.user.oc1..u", "aa:bb").unwrap();
    let params = SigningParams::new(&key, &key_id, now());
    let obo = "eyJobo.secret-obo-token-value.sig";
    let mut request = Request::get("https://example.com/x")
        .header("opc-obo-token", obo)
        .body(Vec::<u8>::new())
        .unwrap();
    let output = sign_http_request(&mut request, &params).expect("signs");
    let shown = output.signing_string();
    assert!(!shown.contains(obo), "{shown}");
    assert!(shown.contains("opc-obo-token: [redacted]"), "{shown}");
    assert!(!format!("{output:?}").contains(obo));
    // The signature is over the real value: the verifier accepts the request as sent.
    let headers = request.headers().clone();
    let signable =
        SignableRequest::from_parts("GET", "example.com", "/x", &headers, SignableBody::EMPTY);
    let public = key.public_key().clone();
    verify(&signable, &VerifyOptions::new(now()), |_| Ok(public))
        .expect("signature covers the real obo token");
}
