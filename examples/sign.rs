//! Sign one OCI request and print the headers to send: for debugging a 401 and for
//! scripts (e.g. feeding `curl -H`).
//!
//! ```text
//! sign --key PATH (--key-id ID | --session-token TOKEN) --url URL [--method M]
//!      [--header 'name: value']... [--body STRING | --body-file PATH]
//!      [--date 'HTTP-date'] [--exclude-body] [--verbose]
//! ```
//!
//! stdout: every header the signer sets, one per line as `name: value`.
//! `--verbose` also writes the signing string to stderr. A `--session-token` of
//! `@PATH` reads the token from a file. Bad input: one line on stderr, exit status 2.
//!
//! ```text
//! cargo run --example sign -- --key fixtures/signing/key.pem \
//!     --key-id 'ocid1.tenancy.oc1..aaa/ocid1.user.oc1..bbb/20:3b:97:13' \
//!     --url 'https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances'
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue};
use oci_token_exchange::{
    Clock as _, DateHeader, KeyId, SignableBody, SignableRequest, SigningKey, SigningOptions,
    SigningParams, SystemClock, sign,
};

const USAGE: &str = "usage: sign --key PATH (--key-id ID | --session-token TOKEN) --url URL \
[--method M] [--header 'name: value']... [--body STRING | --body-file PATH] \
[--date 'HTTP-date'] [--exclude-body] [--verbose]";

#[derive(Default)]
struct Args {
    key: Option<String>,
    key_id: Option<String>,
    session_token: Option<String>,
    url: Option<String>,
    method: Option<String>,
    headers: Vec<String>,
    body: Option<Vec<u8>>,
    date: Option<String>,
    exclude_body: bool,
    verbose: bool,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--key" => args.key = Some(value("--key")?),
            "--key-id" => args.key_id = Some(value("--key-id")?),
            "--session-token" => args.session_token = Some(value("--session-token")?),
            "--url" => args.url = Some(value("--url")?),
            "--method" => args.method = Some(value("--method")?),
            "--header" => args.headers.push(value("--header")?),
            "--body" | "--body-file" if args.body.is_some() => {
                return Err("give one of --body and --body-file".into());
            }
            "--body" => args.body = Some(value("--body")?.into_bytes()),
            "--body-file" => {
                let path = value("--body-file")?;
                args.body =
                    Some(std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?);
            }
            "--date" => args.date = Some(value("--date")?),
            "--exclude-body" => args.exclude_body = true,
            "--verbose" => args.verbose = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'; {USAGE}")),
        }
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), String> {
    let key_path = args.key.ok_or("--key is required")?;
    let pem = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("cannot read key {key_path}: {e}"))?;
    let key = SigningKey::from_pem(&pem).map_err(|e| format!("key {key_path}: {e}"))?;
    let key_id = match (args.key_id, args.session_token) {
        (Some(id), None) => KeyId::parse(&id),
        (None, Some(token)) => match token.strip_prefix('@') {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read session token {path}: {e}"))?;
                KeyId::session_token(&token)
            }
            None => KeyId::session_token(&token),
        },
        _ => return Err("give exactly one of --key-id and --session-token".into()),
    }
    .map_err(|e| e.to_string())?;
    let url = args.url.ok_or("--url is required")?;
    let url = url::Url::parse(&url).map_err(|e| format!("invalid --url: {e}"))?;
    let method = args.method.unwrap_or_else(|| "GET".to_owned());

    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header '{header}' is not 'name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("invalid header name '{}'", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("invalid value for header '{name}'"))?;
        headers.append(name, value);
    }
    if let Some(date) = &args.date {
        let value = HeaderValue::from_str(date).map_err(|_| "invalid --date".to_owned())?;
        headers.insert(http::header::DATE, value);
    }

    let mut options = SigningOptions::new().exclude_body(args.exclude_body);
    if headers.contains_key("x-date") {
        options = options.date_header(DateHeader::XDate);
    }
    let body = args.body.unwrap_or_default();
    let request = SignableRequest::new(&method, &url, &headers, SignableBody::Bytes(&body))
        .map_err(|e| e.to_string())?;
    let params = SigningParams::new(&key, &key_id, SystemClock.now()).with_options(&options);
    let output = sign(&request, &params).map_err(|e| e.to_string())?;

    if args.verbose {
        eprintln!("--- signing string ---");
        eprintln!("{}", output.signing_string());
        eprintln!("--- end ---");
    }
    for (name, value) in output.headers() {
        let value = value
            .to_str()
            .map_err(|_| "non-ascii header value".to_owned())?;
        println!("{name}: {value}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sign: {}", message.lines().next().unwrap_or_default());
            ExitCode::from(2)
        }
    }
}
