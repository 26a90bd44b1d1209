//! The consent page in a real browser: headless Chromium, driven through chromedriver
//! (WebDriver, with `fantoccini`), walks pages served on 127.0.0.1.
//!
//! Chromium and chromedriver come from the system (Debian: `chromium`,
//! `chromium-driver`; `OCX_CHROMIUM` and `OCX_CHROMEDRIVER` override the paths). When
//! they are missing each test prints why to stderr and passes as skipped, unless
//! `OCX_REQUIRE_BROWSER=1` (set by `.ci/run` after installing them): then it fails, so
//! CI can never skip it silently.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stderr
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The whole of one browser test, browser start included.
const TEST_BUDGET: Duration = Duration::from_secs(60);
/// How long chromedriver may take to start listening.
const DRIVER_START: Duration = Duration::from_secs(15);
/// How long a page may take to show an element or reach a URL.
const PAGE_WAIT: Duration = Duration::from_secs(10);

/// The system's chromedriver and Chromium.
#[derive(Debug, Clone)]
struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

/// `path` when it is an existing file.
fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

/// The first of `names` found in `PATH`.
fn in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .find_map(|name| std::env::split_paths(&path).find_map(|dir| existing(dir.join(name))))
}

/// Finds one tool: the environment override `var` (which must exist when set), else
/// the first of `names` in `PATH`.
fn find_tool(var: &str, names: &[&str]) -> Result<PathBuf, String> {
    match std::env::var_os(var) {
        Some(path) => existing(PathBuf::from(&path))
            .ok_or_else(|| format!("{var}={} is not a file", Path::new(&path).display())),
        None => in_path(names).ok_or_else(|| {
            format!(
                "none of {names:?} is in PATH (install the Debian packages `chromium` and \
                 `chromium-driver`, or set {var})"
            )
        }),
    }
}

fn find_tools() -> Result<Tools, String> {
    Ok(Tools {
        chromedriver: find_tool("OCX_CHROMEDRIVER", &["chromedriver"])?,
        chromium: find_tool(
            "OCX_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        )?,
    })
}

/// Whether `OCX_REQUIRE_BROWSER=1` forbids skipping.
fn browser_required() -> bool {
    std::env::var("OCX_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// The browser tools, or `None` after printing why `test` is skipped; panics instead of
/// skipping when `OCX_REQUIRE_BROWSER=1`.
fn tools_or_skip(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(reason) if browser_required() => {
            panic!("{test}: OCX_REQUIRE_BROWSER=1 but the browser is missing: {reason}")
        }
        Err(reason) => {
            // Straight to stderr, not through `eprintln!`, which the test harness
            // captures and shows only for failures: a skip must be visible.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no headless browser: {reason}"
            );
            None
        }
    }
}

/// The build's target directory (where reviewers look for screenshots).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        |dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
    )
}

/// A running chromedriver on a free loopback port, shut down (with its browsers) and
/// killed on drop.
struct Driver {
    child: Child,
    port: u16,
    tools: Tools,
    /// The profile directories of its sessions, removed on drop (after a failed test
    /// too).
    profiles: Mutex<Vec<PathBuf>>,
}

impl Driver {
    /// Starts chromedriver on a port of its choosing (`--port=0`, so no race for a free
    /// port) and waits, bounded, until it answers `/status`.
    fn start(tools: &Tools) -> Driver {
        let mut child = Command::new(&tools.chromedriver)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", tools.chromedriver.display()));
        // It prints "ChromeDriver was started successfully on port N." on stdout; read
        // that on a thread so the wait is bounded even if it never comes.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(port) = port.parse::<u16>() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = match rx.recv_timeout(DRIVER_START) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver did not report its port within {DRIVER_START:?}: {e}");
            }
        };
        let driver = Driver {
            child,
            port,
            tools: tools.clone(),
            profiles: Mutex::default(),
        };
        // Bounded in count: at most DRIVER_START of 50 ms pauses (plus each request's
        // own socket timeouts).
        for _ in 0..DRIVER_START.as_millis() / 50 {
            if let Some(body) = driver.http_get("/status")
                && body.contains("\"ready\":true")
            {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver on port {port} not ready within {DRIVER_START:?}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A blocking GET to chromedriver (usable in `Drop`); the body, or `None` on any
    /// failure. Bounded by socket timeouts.
    fn http_get(&self, path: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        // chromedriver keeps the connection open despite `Connection: close`: read up
        // to the end of the body its `Content-Length` announces.
        let mut response = Vec::new();
        let mut chunk = [0_u8; 4096];
        while response.len() < 1 << 20 {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|length| body.len() >= length) {
                    return Some(body.to_owned());
                }
            }
        }
        let text = String::from_utf8_lossy(&response);
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }

    /// A new browser session: headless Chromium with a fresh profile, its console log
    /// recorded.
    async fn session(&self) -> Browser {
        static PROFILES: AtomicUsize = AtomicUsize::new(0);
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "browser-profile-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile directory");
        self.profiles.lock().unwrap().push(profile.clone());
        let args = [
            "--headless".to_owned(),
            // Running as root (CI) needs it; the pages are our own loopback servers.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // No traffic of its own to the internet (this network refuses it).
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1024,768".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": 20_000, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": self.tools.chromium,
                "args": args,
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
        Browser { client, profile }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `/shutdown` ends every session (quitting its Chromium) and then chromedriver
        // itself; the kill (after at most 5 s) is the fallback.
        let _ = self.http_get("/shutdown");
        let mut exited = false;
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let profiles = self
            .profiles
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for profile in profiles.drain(..) {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// One WebDriver session (one Chromium with its own profile).
struct Browser {
    client: Client,
    profile: PathBuf,
}

/// chromedriver's (non-W3C) log endpoint: `POST /session/{id}/se/log {"type":"browser"}`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

impl Browser {
    /// Waits (bounded) for an element matching the CSS `selector`; on timeout the
    /// panic tells where the browser is and what its console says.
    async fn wait_css(&self, selector: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let url = match self.client.current_url().await {
                    Ok(url) => url.to_string(),
                    Err(e) => format!("unknown ({e})"),
                };
                let log = self.client.issue_cmd(BrowserLog).await.unwrap_or_default();
                panic!("no `{selector}` within {PAGE_WAIT:?} ({e}); at {url}; console: {log}")
            }
        }
    }

    /// The visible text of the page's body.
    async fn body_text(&self) -> String {
        self.wait_css("body").await.text().await.expect("body text")
    }

    /// The browser console's entries since the last call (level and message).
    async fn console_log(&self) -> Vec<(String, String)> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_owned(),
                            e["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot of the page at `path` and returns its size in bytes.
    async fn screenshot(&self, path: &Path) -> usize {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, &png).expect("screenshot written");
        png.len()
    }

    /// Ends the session (Chromium quits) and removes its profile.
    async fn close(self) {
        self.client.close().await.expect("session closes");
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Runs `test` with a started chromedriver, or skips (see [`tools_or_skip`]); the whole
/// test is bounded by [`TEST_BUDGET`].
async fn with_driver<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Arc<Driver>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(tools) = tools_or_skip(name) else {
        return;
    };
    let driver = Arc::new(tokio::task::block_in_place(|| Driver::start(&tools)));
    tokio::time::timeout(TEST_BUDGET, test(Arc::clone(&driver)))
        .await
        .unwrap_or_else(|_| panic!("{name} took longer than {TEST_BUDGET:?}"));
    tokio::task::block_in_place(move || drop(driver));
}

/// A CSP violation or a page error in the console log.
fn console_errors(log: &[(String, String)]) -> Vec<&(String, String)> {
    log.iter()
        .filter(|(level, message)| level == "SEVERE" || message.contains("Content Security Policy"))
        .collect()
}

// ---------------------------------------------------------------------------
// The harness on a trivial page.
// ---------------------------------------------------------------------------

/// A trivial loopback site: `/` sets a cookie and shows a form; `/blocked` shows one
/// its CSP forbids; `POST /submit` records the form body and shows it.
async fn trivial_site(posted: Arc<Mutex<Vec<String>>>) -> String {
    use axum::http::header;
    use axum::response::Html;
    use axum::routing::{get, post};

    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::SET_COOKIE, "harness=1; HttpOnly; SameSite=Lax; Path=/")],
                    Html(
                        "<!doctype html><title>Harness</title><link rel=\"icon\" href=\"data:,\">\
                         <h1 id=\"title\">Hello from the harness</h1>\
                         <form method=\"post\" action=\"/submit\">\
                         <button id=\"go\" name=\"action\" value=\"go\">Go</button></form>",
                    ),
                )
            }),
        )
        .route(
            "/blocked",
            get(|| async {
                (
                    [(header::CONTENT_SECURITY_POLICY, "form-action 'none'")],
                    Html(
                        "<!doctype html><title>Blocked</title><link rel=\"icon\" href=\"data:,\">\
                         <form method=\"post\" action=\"/submit\">\
                         <button id=\"go\" name=\"action\" value=\"blocked\">Go</button></form>",
                    ),
                )
            }),
        )
        .route(
            "/submit",
            post(move |body: String| {
                let posted = Arc::clone(&posted);
                async move {
                    posted.lock().unwrap().push(body.clone());
                    Html(format!(
                        "<!doctype html><title>Done</title><link rel=\"icon\" href=\"data:,\"><p id=\"done\">Submitted {body}</p>"
                    ))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The harness itself: chromedriver starts, Chromium navigates to a loopback page,
/// reads its text and cookies, clicks a form button (the POST arrives), takes a
/// screenshot and reads its console log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_drives_a_loopback_page() {
    with_driver("harness_drives_a_loopback_page", |driver| async move {
        let posted = Arc::new(Mutex::new(Vec::new()));
        let site = trivial_site(Arc::clone(&posted)).await;
        let browser = driver.session().await;

        browser.client.goto(&format!("{site}/")).await.unwrap();
        let title = browser.wait_css("#title").await.text().await.unwrap();
        assert_eq!(title, "Hello from the harness");

        let cookies = browser.client.get_all_cookies().await.unwrap();
        let cookie = cookies
            .iter()
            .find(|c| c.name() == "harness")
            .unwrap_or_else(|| panic!("the harness cookie in {cookies:?}"));
        assert_eq!(cookie.value(), "1");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(
            cookie.same_site().map(|s| s.to_string()).as_deref(),
            Some("Lax")
        );

        let size = browser
            .screenshot(&target_dir().join("browser-harness.png"))
            .await;
        assert!(size > 1000, "a real screenshot, {size} bytes");

        browser.wait_css("#go").await.click().await.unwrap();
        let done = browser.wait_css("#done").await.text().await.unwrap();
        assert_eq!(done, "Submitted action=go");
        assert_eq!(*posted.lock().unwrap(), ["action=go"]);
        assert!(browser.body_text().await.contains("Submitted"));

        let log = browser.console_log().await;
        assert!(console_errors(&log).is_empty(), "console: {log:?}");
        browser.close().await;
    })
    .await;
}

/// A page whose CSP forbids its own form: the console log must show the violation and
/// the POST must not arrive (so the console check of the consent test can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_sees_a_csp_violation_in_the_console() {
    with_driver(
        "harness_sees_a_csp_violation_in_the_console",
        |driver| async move {
            let posted = Arc::new(Mutex::new(Vec::new()));
            let site = trivial_site(Arc::clone(&posted)).await;
            let browser = driver.session().await;

            browser
                .client
                .goto(&format!("{site}/blocked"))
                .await
                .unwrap();
            browser.wait_css("#go").await.click().await.unwrap();
            // The refusal is synchronous with the click; give a late POST a moment anyway.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                posted.lock().unwrap().is_empty(),
                "the CSP blocked the form"
            );
            let log = browser.console_log().await;
            let errors = console_errors(&log);
            assert!(
                errors
                    .iter()
                    .any(|(_, message)| message.contains("form-action")),
                "the violation is in the console: {log:?}"
            );
            browser.close().await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// The whole login through the OAuth proxy, on the emulator.
// ---------------------------------------------------------------------------

#[cfg(all(feature = "oauth-proxy", feature = "emulator"))]
mod login {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use oci_token_exchange::{AccessToken, Emulator, OAuthProxy};
    use serde_json::{Value, json};
    use sha2::Digest as _;

    use super::{Browser, Driver, console_errors, target_dir, with_driver};

    /// The demo user the emulator logs in.
    const USER: &str = "browser-user";
    /// The registered client's name: markup in it must show as text.
    const CLIENT_NAME: &str = "Browser <Test> & Co";

    /// A PKCE verifier (43 to 128 unreserved characters) and its S256 challenge.
    fn pkce(tag: &str) -> (String, String) {
        let verifier = format!("browser-test-verifier-{tag}-0123456789abcdefghijklmnop");
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        (verifier, challenge)
    }

    /// Everything one login runs against: the emulated identity domain, the proxy
    /// (with a bearer-protected `/mcp` echoing the caller's upstream subject) on its own
    /// listener, and the MCP client's redirect URI.
    struct World {
        _emulator: Emulator,
        base: String,
        client: ClientSite,
        client_id: String,
        http: reqwest::Client,
    }

    /// The MCP client's redirect URI: a loopback listener that records every query it
    /// receives and answers a small page.
    struct ClientSite {
        redirect_uri: String,
        queries: Arc<Mutex<Vec<String>>>,
    }

    impl ClientSite {
        /// Listens on `ip` (port chosen by the system).
        async fn start(ip: std::net::IpAddr) -> ClientSite {
            use axum::response::Html;
            use axum::routing::get;

            let queries = Arc::new(Mutex::new(Vec::new()));
            let recorded = Arc::clone(&queries);
            let app = axum::Router::new().route(
                "/callback",
                get(move |uri: axum::http::Uri| {
                    let recorded = Arc::clone(&recorded);
                    async move {
                        recorded
                            .lock()
                            .unwrap()
                            .push(uri.query().unwrap_or_default().to_owned());
                        Html(
                            "<!doctype html><title>Client</title>\
                             <link rel=\"icon\" href=\"data:,\">\
                             <p id=\"client-done\">The client got the answer.</p>",
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            ClientSite {
                redirect_uri: format!("http://{addr}/callback"),
                queries,
            }
        }

        /// The one query the client received, as a map.
        fn only_query(&self) -> HashMap<String, String> {
            let queries = self.queries.lock().unwrap();
            assert_eq!(
                queries.len(),
                1,
                "one answer reached the client: {queries:?}"
            );
            url::form_urlencoded::parse(queries[0].as_bytes())
                .into_owned()
                .collect()
        }

        fn clear(&self) {
            self.queries.lock().unwrap().clear();
        }
    }

    impl World {
        /// Starts everything, with the client's redirect URI on `client_ip`.
        async fn start(client_ip: std::net::IpAddr) -> World {
            // Bind the proxy's listener first: its origin is the base URL, which the
            // emulator's app must list as a redirect URL before it starts.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let emulator = Emulator::builder()
                .redirect_uri(format!("{base}/auth/callback"))
                .login_subject(USER)
                .start()
                .await
                .expect("emulator");
            let proxy = OAuthProxy::builder()
                .base_url(&base)
                .domain_url(emulator.domain_url().as_str())
                .client_credentials(emulator.client_id(), emulator.client_secret().clone())
                .signing_key(b"a browser-test signing key of 32+ bytes".to_vec())
                .build()
                .expect("proxy");
            let mcp = axum::Router::new()
                .route(
                    "/mcp",
                    axum::routing::post(|request: axum::extract::Request| async move {
                        let token = request.extensions().get::<AccessToken>().cloned();
                        token
                            .and_then(|t| t.subject().map(str::to_owned))
                            .unwrap_or_default()
                    }),
                )
                .layer(proxy.bearer_auth().layer());
            let app = proxy.router().merge(mcp);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

            let client = ClientSite::start(client_ip).await;
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let response = http
                .post(format!("{base}/register"))
                .json(&json!({
                    "client_name": CLIENT_NAME,
                    "redirect_uris": [client.redirect_uri],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "registration");
            let registered: Value = response.json().await.unwrap();
            let client_id = registered["client_id"].as_str().unwrap().to_owned();
            World {
                _emulator: emulator,
                base,
                client,
                client_id,
                http,
            }
        }

        /// The `/authorize` URL a client opens in the browser.
        fn authorize_url(&self, state: &str, challenge: &str) -> String {
            let mut url = url::Url::parse(&format!("{}/authorize", self.base)).unwrap();
            url.query_pairs_mut().extend_pairs([
                ("response_type", "code"),
                ("client_id", &self.client_id),
                ("redirect_uri", &self.client.redirect_uri),
                ("state", state),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("resource", &format!("{}/mcp", self.base)),
            ]);
            url.into()
        }

        /// Opens `/authorize` in `browser` and waits for the consent page; checks what
        /// it shows.
        async fn open_consent(&self, browser: &Browser, state: &str, challenge: &str) {
            browser
                .client
                .goto(&self.authorize_url(state, challenge))
                .await
                .unwrap();
            browser.wait_css("button[value=approve]").await;
            let url = browser.client.current_url().await.unwrap();
            assert_eq!(
                url.origin().ascii_serialization(),
                self.base,
                "the consent page is the proxy's"
            );
            let text = browser.body_text().await;
            assert!(
                text.contains(CLIENT_NAME),
                "the client's name, as text: {text}"
            );
            assert!(
                text.contains(&self.client.redirect_uri),
                "the redirect URI: {text}"
            );
            let approve = browser.wait_css("button[value=approve]").await;
            let deny = browser.wait_css("button[value=deny]").await;
            for button in [&approve, &deny] {
                assert!(button.is_displayed().await.unwrap());
                assert_eq!(
                    button.attr("name").await.unwrap().as_deref(),
                    Some("action")
                );
            }
            let form = browser.wait_css("form").await;
            assert_eq!(
                form.attr("method").await.unwrap().map(|m| m.to_lowercase()),
                Some("post".to_owned())
            );
        }

        /// The consent cookie as the browser holds it for 127.0.0.1: present,
        /// `HttpOnly`, `SameSite=Lax`, and on http neither `__Host-` nor `Secure`
        /// (a browser drops those on http, which would break every login).
        async fn check_consent_cookie(&self, browser: &Browser) {
            let cookies = browser.client.get_all_cookies().await.unwrap();
            let names: Vec<&str> = cookies.iter().map(|c| c.name()).collect();
            assert!(
                !names.iter().any(|n| n.starts_with("__Host-")),
                "no __Host- cookie on http: {names:?}"
            );
            let consent = cookies
                .iter()
                .find(|c| c.name().contains("consent"))
                .unwrap_or_else(|| panic!("a consent cookie among {names:?}"));
            assert_eq!(consent.http_only(), Some(true), "HttpOnly");
            assert_eq!(
                consent.same_site().map(|s| s.to_string()).as_deref(),
                Some("Lax"),
                "SameSite=Lax"
            );
            assert_ne!(consent.secure(), Some(true), "not Secure on http");
            assert_eq!(consent.path(), Some("/"));
            assert!(!consent.value().is_empty());
        }

        /// Waits until the browser shows the client's page.
        async fn wait_for_client(&self, browser: &Browser) {
            browser.wait_css("#client-done").await;
            let url = browser.client.current_url().await.unwrap();
            assert!(
                url.as_str().starts_with(&self.client.redirect_uri),
                "the browser ended at the client: {url}"
            );
        }
    }

    /// Redeems `code` at `/token` and returns the answer.
    async fn redeem(world: &World, code: &str, verifier: &str) -> Value {
        let response = world
            .http
            .post(format!("{}/token", world.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("redirect_uri", &world.client.redirect_uri),
                        ("client_id", &world.client_id),
                        ("code_verifier", verifier),
                    ])
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the code is good");
        response.json().await.unwrap()
    }

    /// Approves in a fresh browser (after a reload of the consent page; a screenshot of
    /// it in `target/{screenshot}`), checks what the client got, redeems the code and
    /// calls `/mcp` with the token.
    async fn approve_then_redeem(driver: &Driver, world: &World, screenshot: &str) {
        let browser = driver.session().await;
        let (verifier, challenge) = pkce("approve");
        let state = "state-approve-1";
        world.open_consent(&browser, state, &challenge).await;
        let size = browser.screenshot(&target_dir().join(screenshot)).await;
        assert!(size > 1000, "a real screenshot, {size} bytes");
        world.check_consent_cookie(&browser).await;

        // A reload shows the same login, and its form stays valid.
        browser.client.refresh().await.unwrap();
        browser
            .wait_css("button[value=approve]")
            .await
            .click()
            .await
            .unwrap();
        world.wait_for_client(&browser).await;

        let answer = world.client.only_query();
        assert_eq!(answer.get("state").map(String::as_str), Some(state));
        assert_eq!(answer.get("iss"), Some(&world.base));
        assert!(!answer.contains_key("error"), "no error: {answer:?}");
        let code = answer.get("code").expect("a code");
        let log = browser.console_log().await;
        assert!(console_errors(&log).is_empty(), "console: {log:?}");
        browser.close().await;

        let tokens = redeem(world, code, &verifier).await;
        assert!(
            tokens["token_type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        );
        let access = tokens["access_token"].as_str().expect("an access token");
        let mcp = world
            .http
            .post(format!("{}/mcp", world.base))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert_eq!(mcp.status(), 200, "the proxy's token opens /mcp");
        assert_eq!(mcp.text().await.unwrap(), USER, "as the logged-in user");
    }

    /// Denies in a fresh browser and checks what the client got.
    async fn deny(driver: &Driver, world: &World) {
        world.client.clear();
        let browser = driver.session().await;
        let (_, challenge) = pkce("deny");
        let state = "state-deny-2";
        world.open_consent(&browser, state, &challenge).await;
        world.check_consent_cookie(&browser).await;

        browser
            .wait_css("button[value=deny]")
            .await
            .click()
            .await
            .unwrap();
        world.wait_for_client(&browser).await;

        let answer = world.client.only_query();
        assert_eq!(
            answer.get("error").map(String::as_str),
            Some("access_denied")
        );
        assert_eq!(answer.get("state").map(String::as_str), Some(state));
        assert_eq!(answer.get("iss"), Some(&world.base));
        assert!(!answer.contains_key("code"), "no code: {answer:?}");
        let log = browser.console_log().await;
        assert!(console_errors(&log).is_empty(), "console: {log:?}");
        browser.close().await;
    }

    /// The consent page in headless Chromium, on the emulator: it renders (client name
    /// as text, redirect URI, both buttons; screenshot in `target/consent-page.png`),
    /// its cookie is one a browser keeps on http and survives the round trip through
    /// the identity domain (the callback requires it), its CSP lets the form and the
    /// redirect chain through with a clean console, a reload keeps the form valid,
    /// approve ends at the client with a code that redeems (and opens `/mcp` as the
    /// user), and deny, in a second browser, ends at the client with `access_denied`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consent_in_a_real_browser_approves_and_denies() {
        with_driver(
            "consent_in_a_real_browser_approves_and_denies",
            |driver| async move {
                let world = World::start([127, 0, 0, 1].into()).await;
                approve_then_redeem(&driver, &world, "consent-page.png").await;
                deny(&driver, &world).await;
            },
        )
        .await;
    }

    /// The default redirect URI patterns allow IPv6 loopback clients
    /// (`http://[::1]:*/*`); the consent page's CSP must let the browser reach one
    /// after approval (Chromium checks `form-action` along the redirect chain, and a
    /// CSP source list cannot name an IPv6 literal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consent_in_a_real_browser_reaches_an_ipv6_loopback_client() {
        with_driver(
            "consent_in_a_real_browser_reaches_an_ipv6_loopback_client",
            |driver| async move {
                let world = World::start(std::net::Ipv6Addr::LOCALHOST.into()).await;
                assert!(world.client.redirect_uri.starts_with("http://[::1]:"));
                approve_then_redeem(&driver, &world, "consent-page-ipv6.png").await;
            },
        )
        .await;
    }
}
