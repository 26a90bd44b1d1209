//! Fernet against the spec's published vectors and Python's `cryptography`, key
//! rotation, and refusals (`fixtures/fernet/`, see its README).
#![cfg(feature = "aws-lc-rs")]
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stderr
)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, mpsc};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use oci_token_exchange::{ErrorKind, Fernet, FernetKey, FixedClock};
use proptest::prelude::*;
use serde::Deserialize;

/// The number of cases in `invalid.json`; the runner fails if it ran fewer.
const INVALID_CASES: usize = 11;
/// The number of cases in `python_tokens.json`.
const PYTHON_CASES: usize = 10;
/// The spec's key.
const SPEC_SECRET: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
/// An arbitrary fixed time for tests that make tokens.
const T: u64 = 1_795_996_800;

fn unix(rfc3339: &str) -> u64 {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    u64::try_from(time.timestamp()).unwrap()
}

fn clock_at(secs: u64) -> Arc<FixedClock> {
    Arc::new(FixedClock::at_unix(secs))
}

fn fernet_at(key: &FernetKey, secs: u64) -> Fernet {
    Fernet::new(key.clone()).with_clock(clock_at(secs))
}

fn key(text: &str) -> FernetKey {
    FernetKey::parse(text).unwrap()
}

#[derive(Deserialize)]
struct Verify {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

#[derive(Deserialize)]
struct Invalid {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

/// `verify.json`: at its `now`, with its ttl, the token decrypts to `src`.
#[test]
fn spec_verify_vectors_decrypt_to_src() {
    let cases: Vec<Verify> =
        serde_json::from_str(include_str!("../fixtures/fernet/verify.json")).unwrap();
    assert!(!cases.is_empty(), "no verify vector ran");
    for case in &cases {
        let fernet = fernet_at(&key(&case.secret), unix(&case.now));
        let plain = fernet
            .decrypt(&case.token, Some(Duration::from_secs(case.ttl_sec)))
            .unwrap();
        assert_eq!(plain, case.src.as_bytes());
    }
}

/// `invalid.json`: every case is refused with `ErrorKind::Decrypt`, and no error
/// shows the token or the key.
#[test]
fn spec_invalid_vectors_are_all_refused() {
    let cases: Vec<Invalid> =
        serde_json::from_str(include_str!("../fixtures/fernet/invalid.json")).unwrap();
    assert_eq!(cases.len(), INVALID_CASES);
    let mut ran = 0;
    for case in &cases {
        let fernet = fernet_at(&key(&case.secret), unix(&case.now));
        let err = fernet
            .decrypt(&case.token, Some(Duration::from_secs(case.ttl_sec)))
            .expect_err(&case.desc);
        assert_eq!(err.kind(), ErrorKind::Decrypt, "{}", case.desc);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&case.token[..20]), "{}: {shown}", case.desc);
        assert!(
            !shown.contains(&case.secret[..20]),
            "{}: {shown}",
            case.desc
        );
        ran += 1;
    }
    assert_eq!(ran, INVALID_CASES);
}

/// The expired and far-future vectors are refused for their time alone: with the
/// same token at a time inside its window, they decrypt.
#[test]
fn spec_time_vectors_fail_only_on_time() {
    let cases: Vec<Invalid> =
        serde_json::from_str(include_str!("../fixtures/fernet/invalid.json")).unwrap();
    let mut ran = 0;
    for case in cases
        .iter()
        .filter(|c| c.desc.contains("TTL") || c.desc.contains("skew"))
    {
        let token_time = {
            let bytes = URL_SAFE.decode(&case.token).unwrap();
            u64::from_be_bytes(bytes[1..9].try_into().unwrap())
        };
        let fernet = fernet_at(&key(&case.secret), token_time);
        let ttl = Some(Duration::from_secs(case.ttl_sec));
        assert!(fernet.decrypt(&case.token, ttl).is_ok(), "{}", case.desc);
        ran += 1;
    }
    assert_eq!(ran, 2);
}

#[derive(Deserialize)]
struct PythonTokens {
    cryptography: String,
    made_at: u64,
    cases: Vec<PythonCase>,
}

#[derive(Deserialize)]
struct PythonCase {
    name: String,
    keys: Vec<String>,
    plaintext_b64: Option<String>,
    pattern_len: Option<usize>,
    token: String,
}

impl PythonCase {
    fn plaintext(&self) -> Vec<u8> {
        match (&self.plaintext_b64, self.pattern_len) {
            (Some(b64), None) => STANDARD.decode(b64).unwrap(),
            // The generator's `bytes(i % 251 for i in range(n))`.
            (None, Some(n)) => (0..n).map(|i| (i % 251) as u8).collect(),
            _ => panic!("{}: plaintext_b64 or pattern_len", self.name),
        }
    }
}

static PYTHON: LazyLock<PythonTokens> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../fixtures/fernet/python_tokens.json")).unwrap()
});

/// Tokens made by Python's `cryptography` (`Fernet`, `MultiFernet`, `rotate`) decrypt
/// to their plaintexts, with the keys in either order, with and without a ttl.
#[test]
fn python_tokens_decrypt() {
    let tokens = &*PYTHON;
    assert!(!tokens.cryptography.is_empty());
    let mut ran = 0;
    for case in &tokens.cases {
        let expected = case.plaintext();
        let mut orders = vec![case.keys.join(",")];
        let reversed: Vec<&str> = case.keys.iter().rev().map(String::as_str).collect();
        orders.push(reversed.join(" , "));
        for keys in &orders {
            let fernet = Fernet::from_env_value(keys)
                .unwrap()
                .with_clock(clock_at(tokens.made_at));
            let ttl = Some(Duration::from_secs(60));
            assert_eq!(
                fernet.decrypt(&case.token, ttl).unwrap(),
                expected,
                "{}",
                case.name
            );
            assert_eq!(
                fernet.decrypt(&case.token, None).unwrap(),
                expected,
                "{}",
                case.name
            );
        }
        ran += 1;
    }
    assert_eq!(ran, PYTHON_CASES);
}

/// Python's tokens obey the same ttl rule: refused 61 s after they were made with a
/// 60 s ttl, and by a key that did not make them.
#[test]
fn python_tokens_expire_and_need_their_key() {
    let tokens = &*PYTHON;
    let case = &tokens.cases[1];
    let fernet = Fernet::from_env_value(&case.keys.join(","))
        .unwrap()
        .with_clock(clock_at(tokens.made_at + 60));
    let ttl = Some(Duration::from_secs(60));
    assert!(fernet.decrypt(&case.token, ttl).is_ok());
    let late = fernet.clone().with_clock(clock_at(tokens.made_at + 61));
    assert_eq!(
        late.decrypt(&case.token, ttl).unwrap_err().kind(),
        ErrorKind::Decrypt
    );
    let other = Fernet::new(FernetKey::generate().unwrap());
    assert_eq!(
        other.decrypt(&case.token, None).unwrap_err().kind(),
        ErrorKind::Decrypt
    );
}

/// Whether `python3` with `cryptography` is here; else the reason to skip.
fn python_with_cryptography() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import cryptography.fernet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err("python3 has no `cryptography` package".into()),
        Err(e) => Err(format!("python3 is not runnable: {e}")),
    }
}

/// Reads `{"cases": [{"keys", "token", "plaintext_b64", "now", "ttl"}]}` on stdin and
/// decrypts each with `MultiFernet(keys).decrypt_at_time`; prints `ok <n>` or the
/// first failure.
const PYTHON_DECRYPT: &str = r#"
import base64, json, sys
from cryptography.fernet import Fernet, MultiFernet, InvalidToken
cases = json.load(sys.stdin)["cases"]
for i, c in enumerate(cases):
    f = MultiFernet([Fernet(k) for k in c["keys"]])
    try:
        plain = f.decrypt_at_time(c["token"], c["ttl"], c["now"])
    except InvalidToken:
        print(f"case {i}: InvalidToken"); sys.exit(1)
    if plain != base64.b64decode(c["plaintext_b64"]):
        print(f"case {i}: wrong plaintext"); sys.exit(1)
print(f"ok {len(cases)}")
"#;

/// Runs `script` with `input` on stdin; its stdout, within 60 s.
fn run_python(script: &str, input: String) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("python3 did not finish within 60 s")
        .unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python3 failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The other direction: Python's `cryptography` decrypts our tokens, made with our
/// generated keys, including a rotated set whose first key encrypts. Runs only when
/// `python3 -c "import cryptography"` works; otherwise says why it skipped.
#[test]
fn python_decrypts_our_tokens() {
    if let Err(reason) = python_with_cryptography() {
        eprintln!("skipping python_decrypts_our_tokens: {reason}");
        return;
    }
    let a = FernetKey::generate().unwrap();
    let b = FernetKey::generate().unwrap();
    let a_text = a.to_base64().expose_secret().to_owned();
    let b_text = b.to_base64().expose_secret().to_owned();
    let only_a = fernet_at(&a, T);
    let rotated = Fernet::with_keys(vec![b.clone(), a.clone()])
        .unwrap()
        .with_clock(clock_at(T));
    let large: Vec<u8> = (0..100_003).map(|i| (i * 7 % 256) as u8).collect();
    let plaintexts: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        vec![0; 15],
        vec![1; 16],
        vec![2; 17],
        (0..=255).collect(),
        large,
    ];
    let mut cases = Vec::new();
    for plain in &plaintexts {
        // Keys in Python: just A; then B alone for the rotated set's tokens.
        for (fernet, keys) in [(&only_a, vec![&a_text]), (&rotated, vec![&b_text])] {
            cases.push(serde_json::json!({
                "keys": keys,
                "token": fernet.encrypt(plain).unwrap(),
                "plaintext_b64": STANDARD.encode(plain),
                "now": T + 30,
                "ttl": 60,
            }));
        }
    }
    let count = cases.len();
    let stdout = run_python(
        PYTHON_DECRYPT,
        serde_json::json!({ "cases": cases }).to_string(),
    );
    assert_eq!(stdout.trim(), format!("ok {count}"));
}

/// Rotation: a token made with A decrypts with `[B, A]`; new tokens from `[B, A]` are
/// made with B (B alone reads them, A alone does not).
#[test]
fn rotation_decrypts_old_tokens_and_encrypts_with_the_first_key() {
    let a = FernetKey::generate().unwrap();
    let b = FernetKey::generate().unwrap();
    let old = fernet_at(&a, T).encrypt(b"made with a").unwrap();
    let rotated = Fernet::with_keys(vec![b.clone(), a.clone()])
        .unwrap()
        .with_clock(clock_at(T));
    assert_eq!(rotated.decrypt(&old, None).unwrap(), b"made with a");

    let new = rotated.encrypt(b"made with b").unwrap();
    assert_eq!(
        fernet_at(&b, T).decrypt(&new, None).unwrap(),
        b"made with b"
    );
    let err = fernet_at(&a, T).decrypt(&new, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decrypt);
    assert_eq!(rotated.decrypt(&new, None).unwrap(), b"made with b");
}

/// A wrong key is refused, and so is the token with any single byte changed (each
/// byte of the decoded token, re-encoded) or any single character replaced.
#[test]
fn wrong_key_and_every_single_change_are_refused() {
    let a = FernetKey::generate().unwrap();
    let fernet = fernet_at(&a, T);
    let token = fernet.encrypt(b"a value worth protecting").unwrap();
    assert!(
        token.ends_with('='),
        "the unpadded case below needs padding"
    );
    let wrong = fernet_at(&FernetKey::generate().unwrap(), T);
    assert_eq!(
        wrong.decrypt(&token, None).unwrap_err().kind(),
        ErrorKind::Decrypt
    );

    let bytes = URL_SAFE.decode(&token).unwrap();
    let mut ran = 0;
    for i in 0..bytes.len() {
        for delta in [0x01u8, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[i] ^= delta;
            let err = fernet
                .decrypt(&URL_SAFE.encode(&changed), None)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decrypt, "byte {i} ^ {delta:#x}");
            ran += 1;
        }
    }
    assert_eq!(ran, bytes.len() * 3);

    for (i, c) in token.char_indices() {
        let replacement = if c == 'A' { 'B' } else { 'A' };
        let mut changed = token.clone();
        changed.replace_range(i..=i, &replacement.to_string());
        let err = fernet.decrypt(&changed, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decrypt, "character {i}");
    }
    // Truncated, extended, unpadded, and with whitespace: all refused.
    for changed in [
        token[..token.len() - 4].to_owned(),
        format!("{token}AAAA"),
        token.trim_end_matches('=').to_owned(),
        format!(" {token}"),
        format!("{token}\n"),
        String::new(),
    ] {
        assert_eq!(
            fernet.decrypt(&changed, None).unwrap_err().kind(),
            ErrorKind::Decrypt
        );
    }
    assert_eq!(
        fernet.decrypt(&token, None).unwrap(),
        b"a value worth protecting"
    );
}

/// With a ttl, a token is good until `made + ttl` inclusive (Python's
/// `timestamp + ttl < now` is expired), then refused.
#[test]
fn ttl_expiry_is_refused() {
    let key = FernetKey::generate().unwrap();
    let clock = clock_at(T);
    let fernet = Fernet::new(key).with_clock(clock.clone());
    let token = fernet.encrypt(b"short-lived").unwrap();
    let ttl = Some(Duration::from_secs(60));
    clock.advance(Duration::from_secs(60));
    assert_eq!(fernet.decrypt(&token, ttl).unwrap(), b"short-lived");
    clock.advance(Duration::from_millis(999));
    assert_eq!(fernet.decrypt(&token, ttl).unwrap(), b"short-lived");
    clock.advance(Duration::from_millis(1));
    let err = fernet.decrypt(&token, ttl).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decrypt);
    assert!(err.to_string().contains("expired"), "{err}");
    // No ttl, no age check.
    assert_eq!(fernet.decrypt(&token, None).unwrap(), b"short-lived");
    // A huge ttl does not overflow.
    assert!(fernet.decrypt(&token, Some(Duration::MAX)).is_ok());
}

/// With a ttl, a token dated more than 60 s in the future is refused (Python's
/// `_MAX_CLOCK_SKEW`); 60 s ahead is accepted; without a ttl, as in Python, the
/// date is not checked.
#[test]
fn future_timestamp_is_refused() {
    let key = FernetKey::generate().unwrap();
    let ttl = Some(Duration::from_secs(3600));
    let reader = fernet_at(&key, T);
    let ahead_60 = fernet_at(&key, T + 60).encrypt(b"skewed").unwrap();
    assert_eq!(reader.decrypt(&ahead_60, ttl).unwrap(), b"skewed");
    let ahead_61 = fernet_at(&key, T + 61).encrypt(b"skewed").unwrap();
    let err = reader.decrypt(&ahead_61, ttl).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decrypt);
    assert!(err.to_string().contains("future"), "{err}");
    assert_eq!(reader.decrypt(&ahead_61, None).unwrap(), b"skewed");
}

/// Keys: Python's format out; padded, unpadded, whitespace and the standard
/// alphabet in; anything but 32 bytes refused without echoing the text.
#[test]
fn keys_parse_and_format_like_python() {
    let spec = key(SPEC_SECRET);
    assert_eq!(spec.to_base64().expose_secret(), SPEC_SECRET);
    let bytes = URL_SAFE.decode(SPEC_SECRET).unwrap();
    for text in [
        format!("  {SPEC_SECRET}\n"),
        URL_SAFE_NO_PAD.encode(&bytes),
        STANDARD.encode(&bytes),
    ] {
        assert_eq!(
            key(&text).to_base64().expose_secret(),
            SPEC_SECRET,
            "{text}"
        );
    }
    // A key's text is the same key: the spec's token decrypts.
    let token = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
    let parsed = key(&URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(Fernet::new(parsed).decrypt(token, None).unwrap(), b"hello");

    let generated = FernetKey::generate().unwrap();
    let text = generated.to_base64();
    assert_eq!(text.expose_secret().len(), 44);
    assert!(text.expose_secret().ends_with('='));
    assert_eq!(key(text.expose_secret()).to_base64(), text);
    assert_ne!(FernetKey::generate().unwrap().to_base64(), text);

    for bad in [
        String::new(),
        "   ".to_owned(),
        URL_SAFE.encode([7u8; 31]),
        URL_SAFE.encode([7u8; 33]),
        URL_SAFE.encode([7u8; 64]),
        format!("{SPEC_SECRET}="),
        format!("%{}", &SPEC_SECRET[1..]),
        // Non-zero trailing bits: not what any encoder writes.
        format!("{}5=", &SPEC_SECRET[..42]),
    ] {
        let err = FernetKey::parse(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
        if !bad.trim().is_empty() {
            assert!(!format!("{err} {err:?}").contains(bad.trim()), "{bad}");
        }
    }
}

/// `STORAGE_ENCRYPTION_KEY`-style values: comma-separated, first encrypts; empty
/// values and entries are refused by position, never by text.
#[test]
fn env_values_hold_one_or_more_keys() {
    let a = FernetKey::generate().unwrap();
    let b = FernetKey::generate().unwrap();
    let a_text = a.to_base64().expose_secret().to_owned();
    let b_text = b.to_base64().expose_secret().to_owned();

    let both = Fernet::from_env_value(&format!(" {b_text} ,\n{a_text} "))
        .unwrap()
        .with_clock(clock_at(T));
    let token = both.encrypt(b"v").unwrap();
    assert!(fernet_at(&b, T).decrypt(&token, None).is_ok());
    assert!(fernet_at(&a, T).decrypt(&token, None).is_err());
    let single = Fernet::from_env_value(&a_text).unwrap();
    assert!(
        single
            .decrypt(&fernet_at(&a, T).encrypt(b"v").unwrap(), None)
            .is_ok()
    );

    for (value, says) in [
        (String::new(), "no fernet key"),
        (" \n".to_owned(), "no fernet key"),
        (format!("{a_text},,{b_text}"), "key 2 of 3"),
        (format!("{a_text},"), "key 2 of 2"),
        (format!("{a_text},{}", &b_text[..40]), "key 2 of 2"),
    ] {
        let err = Fernet::from_env_value(&value).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{value}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(says), "{shown}");
        assert!(
            !shown.contains(&a_text[..20]) && !shown.contains(&b_text[..20]),
            "{shown}"
        );
    }
    let err = Fernet::with_keys(Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

/// Neither `Debug` shows a key.
#[test]
fn debug_never_shows_a_key() {
    let k = key(SPEC_SECRET);
    let fernet = Fernet::with_keys(vec![k.clone(), FernetKey::generate().unwrap()]).unwrap();
    let shown = format!("{k:?} {fernet:?} {:?}", k.to_base64());
    assert!(shown.contains("redacted"), "{shown}");
    let bytes = URL_SAFE.decode(SPEC_SECRET).unwrap();
    for needle in [
        SPEC_SECRET[..16].to_owned(),
        URL_SAFE.encode(&bytes[16..]),
        format!("{:?}", &bytes[..4]),
        format!("{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2]),
    ] {
        assert!(!shown.contains(&needle), "{shown} contains {needle}");
    }
}

/// Tokens have the spec's shape: version 0x80, the clock's time, a fresh IV each
/// time, whole blocks.
#[test]
fn tokens_have_the_spec_layout() {
    let fernet = fernet_at(&FernetKey::generate().unwrap(), T);
    let one = fernet.encrypt(b"same").unwrap();
    let two = fernet.encrypt(b"same").unwrap();
    assert_ne!(one, two, "a fresh IV per token");
    for (token, plain_len) in [(&one, 4), (&fernet.encrypt(&[0; 32]).unwrap(), 32)] {
        assert!(token.starts_with("gAAAAA"), "{token}");
        let bytes = URL_SAFE.decode(token).unwrap();
        assert_eq!(bytes[0], 0x80);
        assert_eq!(u64::from_be_bytes(bytes[1..9].try_into().unwrap()), T);
        assert_eq!(bytes.len(), 1 + 8 + 16 + (plain_len / 16 + 1) * 16 + 32);
    }
    assert_ne!(
        URL_SAFE.decode(&one).unwrap()[9..25],
        URL_SAFE.decode(&two).unwrap()[9..25]
    );
}

static PROP_KEY: LazyLock<FernetKey> = LazyLock::new(|| FernetKey::generate().unwrap());

fn prop_fernet() -> Fernet {
    fernet_at(&PROP_KEY, T)
}

/// How to change a valid token's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Xor { at: usize, delta: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { len: usize },
    Append { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, delta)| Mutation::Xor { at, delta }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        proptest::collection::vec(any::<u8>(), 1..40).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    let n = bytes.len();
    match mutation {
        Mutation::Xor { at, delta } => bytes[at % n] ^= delta,
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), *byte),
        Mutation::Remove { at } => {
            bytes.remove(at % n);
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Append { bytes: extra } => bytes.extend_from_slice(extra),
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any string: no panic, no plaintext.
    #[test]
    fn arbitrary_text_never_decrypts(text in ".{0,300}") {
        let err = prop_fernet().decrypt(&text, Some(Duration::from_secs(60))).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::Decrypt);
    }

    /// Any bytes in valid base64, with or without the version byte: no panic, no
    /// plaintext.
    #[test]
    fn arbitrary_bytes_never_decrypt(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), versioned in any::<bool>()) {
        if versioned && !bytes.is_empty() {
            bytes[0] = 0x80;
        }
        let err = prop_fernet().decrypt(&URL_SAFE.encode(&bytes), None).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::Decrypt);
    }

    /// A valid token changed in any way: no panic, no plaintext.
    #[test]
    fn mutated_tokens_never_decrypt(plain in proptest::collection::vec(any::<u8>(), 0..100), m in mutation()) {
        let fernet = prop_fernet();
        let token = fernet.encrypt(&plain).unwrap();
        let changed = mutate(URL_SAFE.decode(&token).unwrap(), &m);
        let err = fernet.decrypt(&URL_SAFE.encode(&changed), None).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::Decrypt);
    }

    /// encrypt then decrypt gives the plaintext back, for any plaintext.
    #[test]
    fn round_trip(plain in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let fernet = prop_fernet();
        let token = fernet.encrypt(&plain).unwrap();
        prop_assert_eq!(fernet.decrypt(&token, Some(Duration::from_secs(1))).unwrap(), plain);
    }

    /// parse(to_base64(k)) is k, for keys from any 32 bytes.
    #[test]
    fn key_text_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
        let text = URL_SAFE.encode(bytes);
        let k = FernetKey::parse(&text).unwrap();
        let formatted = k.to_base64();
        prop_assert_eq!(formatted.expose_secret(), text.as_str());
        let token = Fernet::new(k.clone()).encrypt(b"k").unwrap();
        let again = FernetKey::parse(k.to_base64().expose_secret()).unwrap();
        prop_assert_eq!(Fernet::new(again).decrypt(&token, None).unwrap(), b"k");
    }

    /// Any text as a key: no panic; refused unless it is 32 bytes of base64.
    #[test]
    fn arbitrary_key_text_never_panics(text in ".{0,80}") {
        if let Ok(k) = FernetKey::parse(&text) {
            prop_assert_eq!(k.to_base64().expose_secret().len(), 44);
        }
        let _ = Fernet::from_env_value(&text);
    }
}
