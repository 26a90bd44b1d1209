//! The system under load, in this process: the emulator (identity domain and OCI) and
//! the example server, each on its own tokio runtime (named threads, so the report can
//! tell whose CPU time is whose), on free loopback ports.

use std::sync::Arc;
use std::time::Duration;

use oci_token_exchange::{Emulator, KeyPool, MemoryStore, SignerCache, Store};
use tokio::runtime::{Handle, Runtime};

use crate::redis::RedisControl;
use crate::server::{self, BoxError, ProxySettings, Settings};

/// Thread name prefixes, matched in `/proc/self/task/*/comm` (at most 15 bytes).
pub const CLIENT_THREADS: &str = "load-client";
/// The example server's runtime.
pub const SERVER_THREADS: &str = "load-server";
/// The emulator's runtime.
pub const EMULATOR_THREADS: &str = "load-emulator";

/// The runtimes the server and the emulator run on; shut down by the caller outside
/// any async context.
pub struct Runtimes {
    /// The example server's.
    pub server: Runtime,
    /// The emulator's.
    pub emulator: Runtime,
}

/// Builds both runtimes (2 workers each: the machine's cores).
pub fn runtimes() -> std::io::Result<Runtimes> {
    let build = |name: &'static str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
    };
    Ok(Runtimes {
        server: build(SERVER_THREADS)?,
        emulator: build(EMULATOR_THREADS)?,
    })
}

/// How to build the system.
pub struct Options {
    /// OAuth-proxy mode (users log in through the server).
    pub proxy: bool,
    /// rmcp's stateless mode with JSON responses.
    pub stateless: bool,
    /// The driver's own Redis holds the proxy's state and the shared sessions.
    pub redis: Option<RedisControl>,
    /// The lifetime of the emulator's UPSTs and of the access tokens it issues at
    /// login (`None`: its defaults; the soak's short-lived tokens).
    pub token_ttl: Option<Duration>,
}

/// The running system.
pub struct System {
    /// The MCP endpoint.
    pub url: String,
    /// The server's origin (proxy mode).
    pub base: String,
    /// The emulator.
    pub emulator: Arc<Emulator>,
    /// The server's signer cache.
    pub signers: SignerCache,
    /// The signer cache's key pool.
    pub pool: KeyPool,
    /// The proxy's in-memory store (proxy mode without Redis), for its size.
    pub proxy_store: Option<MemoryStore>,
    /// The server's task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The redirect URI the driver's users register with the proxy (never connected to).
pub const CLIENT_REDIRECT: &str = "http://127.0.0.1:9/callback";

/// Starts the emulator and the server.
///
/// # Errors
/// A runtime task failed, a port could not be bound, the settings are invalid.
pub async fn start(runtimes: &Runtimes, options: Options) -> Result<System, BoxError> {
    let server_rt = runtimes.server.handle().clone();
    let listener = spawn_on(&server_rt, async {
        tokio::net::TcpListener::bind("127.0.0.1:0").await
    })
    .await??;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");
    let url = format!("{base}/mcp");

    let mut emulator = Emulator::builder()
        .redirect_uri(format!("{base}/auth/callback"))
        .login_subject("nobody@load.example");
    if let Some(ttl) = options.token_ttl {
        emulator = emulator.upst_ttl(ttl).access_token_ttl(ttl);
    }
    let emulator = Arc::new(spawn_on(runtimes.emulator.handle(), emulator.start()).await??);

    let store: Option<Arc<dyn Store>> = match &options.redis {
        Some(redis) => {
            let url = redis.url();
            let key = oci_token_exchange::FernetKey::generate()?.to_base64();
            let key = key.expose_secret().to_owned();
            Some(
                spawn_on(&server_rt, async move {
                    server::redis_store(&url, Some(&key)).await
                })
                .await??,
            )
        }
        None => None,
    };
    let proxy_store = (options.proxy && store.is_none()).then(MemoryStore::default);
    let proxy = if options.proxy {
        let mut signing_key = vec![0_u8; 32];
        aws_lc_rs::rand::fill(&mut signing_key).map_err(|_| "no random numbers")?;
        Some(ProxySettings {
            base: base.clone(),
            signing_key,
            consent: false,
            redirect_uris: Vec::new(),
            store: match (&store, &proxy_store) {
                (Some(store), _) => Some(Arc::clone(store)),
                (None, Some(memory)) => Some(Arc::new(memory.clone()) as Arc<dyn Store>),
                (None, None) => None,
            },
        })
    } else {
        None
    };
    // The cache's default pool: filled at start-up, grown by bursts.
    let pool = KeyPool::builder().build();
    let settings = Settings {
        resource: url.clone(),
        domain_url: emulator.domain_url().to_string(),
        client_id: emulator.client_id().to_owned(),
        client_secret: emulator.client_secret().expose_secret().to_owned(),
        api_base: emulator.api_url().to_string(),
        audience: url.clone(),
        proxy,
        sessions: store,
        key_pool: pool.clone(),
        stateless: options.stateless,
    };
    // Built on the server's runtime: the key pool refills on the runtime it is used on.
    let built = spawn_on(&server_rt, async move { server::build(settings) }).await??;
    let signers = built.signers.clone();
    let app = built.app;
    let task = server_rt.spawn(async move {
        if let Err(e) = server::serve(listener, app).await {
            tracing::error!(error = %e, "the server stopped");
        }
    });
    Ok(System {
        url,
        base,
        emulator,
        signers,
        pool,
        proxy_store,
        task,
    })
}

/// Runs `future` on `handle`'s runtime and waits for it here.
async fn spawn_on<F>(handle: &Handle, future: F) -> Result<F::Output, BoxError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(handle.spawn(future).await?)
}
