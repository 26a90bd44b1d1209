//! Session keys generated ahead of need, so a new user does not wait ~50 ms (and a
//! burst of new users not seconds) for RSA key generation.
//!
//! How it works:
//! - **Target**: the pool keeps `target` keys ready, between a floor and a ceiling.
//!   A take that finds the pool empty raises the target by [`KeyPool::GROWTH_PER_DRY_TAKE`]
//!   (the demand it missed, with as much again in headroom), up to the ceiling.
//! - **Refill**: whenever fewer than `target` keys are ready or being made, up to
//!   `parallelism` (default: the number of cores) workers generate keys on tokio's
//!   blocking threads, never on an async worker. After a take they first let the
//!   burst's requests run: they start 100 ms after the last take, or at once when
//!   takers wait or fewer than a quarter of the target are ready. Workers hold only a weak
//!   reference: once every handle to the pool is dropped, each finishes at most the
//!   key in hand (which is wiped) and stops.
//! - **Takers** never generate on their own while workers can: a take that finds
//!   the pool empty waits in line for the next key a worker delivers (first come,
//!   first served, so the first waiter waits one generation, not a share of all of
//!   them). When a worker's generation fails, one waiter (not all) tries itself, which
//!   reports the error if generation keeps failing. A take generates itself also
//!   when the pool pre-generates nothing (ceiling 0) or when, after waiting
//!   10 s, no worker is running. Generations on the take path are bounded by
//!   `parallelism`, run on blocking threads, and a key whose take was cancelled
//!   meanwhile goes into the pool. A take waits at most 60 s in all, then fails
//!   ([`ErrorKind::Internal`]): a bound for callers without a deadline of their own
//!   (an exchange's own deadline usually ends the wait first).
//! - **Runtime**: workers and the shrink task belong to the tokio runtime of the
//!   fill or take that started them. When that runtime shuts down, workers stop
//!   after the key in hand and the next fill or take (on any runtime) starts them
//!   again.
//! - **Shrink**: after `idle_after` (default 5 minutes) without a single take, the
//!   target drops halfway back to the floor and the keys above it are wiped; again
//!   after each further idle period. Keys are never discarded while takes happen,
//!   and never below the floor, so the next burst finds at least the floor ready
//!   and a burst that recurs within minutes finds what the last one needed.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, oneshot};

use super::{KeyBackend, KeySize, SigningKey};
use crate::error::{Error, ErrorKind, Result};

/// Size of [`KeyPool::default`]: one signer's pool (it needs a key per refresh).
pub(crate) const DEFAULT_POOL_SIZE: usize = 2;
/// How long after the last take background workers wait before generating, unless
/// the pool runs low or takers wait: a burst's requests get the cores first.
const SETTLE: Duration = Duration::from_millis(100);
/// How long a take waits in line before it checks that a worker is running, and
/// generates a key itself if none is (a safety net: workers deliver a key every few
/// tens of milliseconds).
const WAIT_BOUND: Duration = Duration::from_secs(10);
/// The longest a take waits in all (in line, then for its own generation if it
/// makes one): a bound for callers that set no deadline of their own.
const TAKE_BOUND: Duration = Duration::from_secs(60);

/// A pool of pre-generated session keys.
///
/// Keys are generated on tokio's blocking threads, never on an async worker, in
/// parallel up to the number of cores, with the fastest sound generator of the
/// build ([`SigningKey::generate_fastest`]). Each key is handed out once
/// ([`SigningKey`] is not `Clone`; taking a key moves it out of the pool).
///
/// [`KeyPool::new`] keeps a fixed number ready (0 turns pre-generation off: every
/// take generates a key); [`KeyPool::builder`] makes a pool that sizes itself to
/// demand between a floor and a ceiling (what a [`SignerCache`](crate::SignerCache)
/// uses by default), see the module notes: it grows when a take finds it empty and
/// shrinks back towards the floor after idle periods. The pool starts filling at
/// [`KeyPool::fill`] (a `SignerCache` calls it when built) or at the first take.
///
/// Cheap to clone; clones share the keys. When the last clone is dropped the
/// refill stops.
#[derive(Clone)]
pub struct KeyPool {
    inner: Arc<PoolInner>,
}

/// Builds an adaptive [`KeyPool`].
#[derive(Clone, Debug)]
pub struct KeyPoolBuilder {
    config: Config,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    floor: usize,
    ceiling: usize,
    size: KeySize,
    backend: KeyBackend,
    parallelism: usize,
    idle_after: Duration,
}

/// What a [`KeyPool`] holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPoolStats {
    /// Keys ready now.
    pub available: usize,
    /// Keys the pool currently aims to keep ready.
    pub target: usize,
    /// Keys being generated now.
    pub generating: usize,
    /// Keys generated so far (handed out, waiting or discarded).
    pub generated: u64,
    /// Keys handed out.
    pub taken: u64,
    /// Takes that found the pool empty and waited for a generation.
    pub waited: u64,
    /// Keys generated by a take itself (a pool with a ceiling of 0, no tokio
    /// runtime, a worker's failure handed over to one waiter, or no worker running).
    pub generated_on_take: u64,
    /// Keys wiped when the pool shrank.
    pub discarded: u64,
    /// Failed generations.
    pub failures: u64,
}

struct PoolInner {
    config: Config,
    generator: Generator,
    /// Bounds the generations on the take path to `parallelism` at once.
    take_permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// A key was delivered (or a worker failed): a waiting taker looks again.
    ready: Notify,
    /// Ends the shrink task when the pool is dropped.
    stop: Arc<Notify>,
    /// Workers alive (spawned and not yet dropped), shared with them.
    live_workers: Arc<AtomicUsize>,
    generated: AtomicU64,
    taken: AtomicU64,
    waited: AtomicU64,
    generated_on_take: AtomicU64,
    discarded: AtomicU64,
    failures: AtomicU64,
}

/// Generates keys of the pool's size and backend (and, in tests, fails on demand).
#[derive(Clone)]
struct Generator {
    config: Config,
    #[cfg(test)]
    faults: Arc<Faults>,
}

impl Generator {
    fn generate(&self) -> Result<SigningKey> {
        #[cfg(test)]
        self.faults.wait_while_held();
        #[cfg(test)]
        if self.faults.injected() {
            return Err(Error::new(ErrorKind::Crypto, "injected failure"));
        }
        SigningKey::generate_fastest(self.config.backend, self.config.size)
    }
}

/// Makes generations fail or block on demand, and shortens [`WAIT_BOUND`] (tests
/// only).
#[cfg(test)]
#[derive(Default)]
struct Faults {
    fail: AtomicUsize,
    /// Generations block while this holds (at most 30 s).
    hold: Mutex<bool>,
    released: std::sync::Condvar,
    wait_bound: Mutex<Option<Duration>>,
}

#[cfg(test)]
impl Faults {
    fn injected(&self) -> bool {
        self.fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn wait_while_held(&self) {
        let held = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            self.released
                .wait_timeout_while(held, Duration::from_secs(30), |held| *held)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    fn set_hold(&self, hold: bool) {
        *self.hold.lock().unwrap_or_else(PoisonError::into_inner) = hold;
        self.released.notify_all();
    }
}

struct State {
    keys: VecDeque<SigningKey>,
    target: usize,
    /// Workers running (each generates one key at a time).
    workers: usize,
    /// Keys being generated by workers.
    in_flight: usize,
    /// A take happened since the shrink task last looked.
    active: bool,
    /// When the last take happened.
    last_take: Option<tokio::time::Instant>,
    /// Takes waiting in line for a key.
    waiters: usize,
    /// Waiters allowed to generate a key themselves (one per failed worker
    /// generation), at most `waiters`.
    handoffs: usize,
    /// The runtime of the shrink task (and of the workers) is alive; `None` when no
    /// shrink task runs, so that the next fill starts one.
    runtime: Option<Arc<AtomicBool>>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPool")
            .field("floor", &self.inner.config.floor)
            .field("ceiling", &self.inner.config.ceiling)
            .field("size", &self.inner.config.size)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for KeyPool {
    /// A fixed pool of 2 keys: enough for one signer, which needs a key per refresh.
    fn default() -> Self {
        Self::new(DEFAULT_POOL_SIZE)
    }
}

impl Default for KeyPoolBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                floor: KeyPool::DEFAULT_FLOOR,
                ceiling: KeyPool::DEFAULT_CEILING,
                size: KeySize::default(),
                backend: KeyBackend::DEFAULT,
                parallelism: default_parallelism(),
                idle_after: KeyPool::DEFAULT_IDLE_AFTER,
            },
        }
    }
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

impl KeyPoolBuilder {
    /// Keys kept ready even when idle (default [`KeyPool::DEFAULT_FLOOR`]). The ceiling is
    /// raised to it if lower.
    #[must_use]
    pub fn floor(mut self, floor: usize) -> Self {
        self.config.floor = floor;
        self
    }

    /// The most keys the pool ever aims to hold (default [`KeyPool::DEFAULT_CEILING`]).
    /// With a ceiling of 0 nothing is pre-generated: every take generates a key.
    #[must_use]
    pub fn ceiling(mut self, ceiling: usize) -> Self {
        self.config.ceiling = ceiling;
        self
    }

    /// The size of the keys (default RSA-2048).
    #[must_use]
    pub fn key_size(mut self, size: KeySize) -> Self {
        self.config.size = size;
        self
    }

    /// The backend that signs with the keys (default [`KeyBackend::DEFAULT`]).
    #[must_use]
    pub fn backend(mut self, backend: KeyBackend) -> Self {
        self.config.backend = backend;
        self
    }

    /// How many keys are generated at once (default: the number of cores; 0 means
    /// the default): by the background workers, and as many again at most by takes
    /// that generate their own (see the module notes).
    #[must_use]
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.config.parallelism = if parallelism == 0 {
            default_parallelism()
        } else {
            parallelism
        };
        self
    }

    /// How long without a take before the pool shrinks towards its floor (default
    /// [`KeyPool::DEFAULT_IDLE_AFTER`]; zero means the default).
    #[must_use]
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.config.idle_after = if idle.is_zero() {
            KeyPool::DEFAULT_IDLE_AFTER
        } else {
            idle
        };
        self
    }

    /// The pool, empty: it starts filling at [`KeyPool::fill`] or its first take.
    #[must_use]
    pub fn build(self) -> KeyPool {
        let mut config = self.config;
        config.ceiling = config.ceiling.max(config.floor);
        KeyPool::from_config(config)
    }
}

impl KeyPool {
    /// Default floor of [`KeyPool::builder`] (what a [`SignerCache`](crate::SignerCache)
    /// uses): 40 simultaneous new users, plus a fifth for refreshes and stragglers,
    /// find a key ready. A pooled RSA-2048 key costs about 4.5 KiB of memory
    /// (measured, `benches/pool.rs`), so about 220 KiB; filling it takes about 1 s of
    /// both cores of an idle 2-core machine.
    pub const DEFAULT_FLOOR: usize = 48;
    /// Default ceiling of [`KeyPool::builder`]: about 1.1 MiB of keys at most.
    pub const DEFAULT_CEILING: usize = 256;
    /// Default idle period after which an adaptive pool shrinks towards its floor.
    pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(300);
    /// How much a take that finds the pool empty raises its target: the demand it
    /// missed, with as much again in headroom.
    pub const GROWTH_PER_DRY_TAKE: usize = 2;
}

impl KeyPool {
    /// A pool that keeps `target` RSA-2048 keys ready (0 turns pre-generation off).
    /// Its size is fixed; see [`KeyPool::builder`] for one that follows demand.
    /// Nothing is generated until [`KeyPool::fill`] or the first take.
    #[must_use]
    pub fn new(target: usize) -> Self {
        Self::with_key_size(target, KeySize::default(), KeyBackend::DEFAULT)
    }

    /// A fixed pool of keys of another size or backend.
    #[must_use]
    pub fn with_key_size(target: usize, size: KeySize, backend: KeyBackend) -> Self {
        Self::from_config(Config {
            floor: target,
            ceiling: target,
            size,
            backend,
            parallelism: default_parallelism(),
            idle_after: KeyPool::DEFAULT_IDLE_AFTER,
        })
    }

    /// A builder for a pool that sizes itself to demand: by default it keeps
    /// [`KeyPool::DEFAULT_FLOOR`] keys ready, grows up to [`KeyPool::DEFAULT_CEILING`] when takes find
    /// it empty, and shrinks back after [`KeyPool::DEFAULT_IDLE_AFTER`] without takes.
    #[must_use]
    pub fn builder() -> KeyPoolBuilder {
        KeyPoolBuilder::default()
    }

    fn from_config(config: Config) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                config,
                state: Mutex::new(State {
                    keys: VecDeque::with_capacity(config.floor),
                    target: config.floor,
                    workers: 0,
                    in_flight: 0,
                    active: false,
                    last_take: None,
                    waiters: 0,
                    handoffs: 0,
                    runtime: None,
                }),
                generator: Generator {
                    config,
                    #[cfg(test)]
                    faults: Arc::default(),
                },
                take_permits: Arc::new(Semaphore::new(
                    config.parallelism.clamp(1, Semaphore::MAX_PERMITS),
                )),
                ready: Notify::new(),
                stop: Arc::new(Notify::new()),
                live_workers: Arc::new(AtomicUsize::new(0)),
                generated: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                generated_on_take: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Keys ready now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.inner.state().keys.len()
    }

    /// Keys generated so far (handed out, waiting or discarded).
    #[must_use]
    pub fn generated(&self) -> u64 {
        self.inner.generated.load(Ordering::Relaxed)
    }

    /// What the pool holds and has done.
    #[must_use]
    pub fn stats(&self) -> KeyPoolStats {
        let inner = &self.inner;
        let state = inner.state();
        KeyPoolStats {
            available: state.keys.len(),
            target: state.target,
            generating: state.in_flight,
            generated: inner.generated.load(Ordering::Relaxed),
            taken: inner.taken.load(Ordering::Relaxed),
            waited: inner.waited.load(Ordering::Relaxed),
            generated_on_take: inner.generated_on_take.load(Ordering::Relaxed),
            discarded: inner.discarded.load(Ordering::Relaxed),
            failures: inner.failures.load(Ordering::Relaxed),
        }
    }

    /// Starts generating keys in the background up to the target, on up to
    /// `parallelism` blocking threads. Does nothing outside a tokio runtime (the
    /// first take starts it then) or when enough keys are ready or being made.
    pub fn fill(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = &self.inner;
        if inner.config.ceiling == 0 {
            return;
        }
        let (spawn, alive, start) = {
            let mut state = inner.state();
            let missing = state
                .target
                .saturating_sub(state.keys.len() + state.in_flight);
            let wanted = missing.min(inner.config.parallelism);
            let spawn = wanted.saturating_sub(state.workers);
            state.workers += spawn;
            let (alive, start) = match &state.runtime {
                Some(alive) => (Arc::clone(alive), false),
                None => {
                    let alive = Arc::new(AtomicBool::new(true));
                    state.runtime = Some(Arc::clone(&alive));
                    (alive, true)
                }
            };
            (spawn, alive, start)
        };
        if start {
            // Its end (pool dropped, or runtime shutting down) clears `runtime` and
            // stops the workers that count on this runtime.
            let guard = RuntimeGuard {
                pool: Arc::downgrade(inner),
                alive: Arc::clone(&alive),
            };
            let stop = Arc::clone(&inner.stop);
            let idle = inner.config.idle_after;
            drop(runtime.spawn(shrink_when_idle(guard, stop, idle)));
        }
        for _ in 0..spawn {
            inner.live_workers.fetch_add(1, Ordering::Relaxed);
            let worker = Worker {
                live: Arc::clone(&inner.live_workers),
                pool: Arc::downgrade(inner),
                generator: inner.generator.clone(),
                runtime: Arc::clone(&alive),
                counted: true,
                reserved: false,
            };
            drop(runtime.spawn_blocking(move || worker.run()));
        }
    }

    /// Takes a key: a ready one if there is one, else the next one the background
    /// workers make (a take that finds the pool empty raises its target). Either way
    /// the pool refills in the background.
    ///
    /// # Errors
    /// [`ErrorKind::Crypto`] if generation fails, [`ErrorKind::Internal`] if the
    /// blocking task cannot run or no key came within 60 s.
    pub async fn take(&self) -> Result<SigningKey> {
        let inner = &self.inner;
        if let Some(key) = inner.pop(true) {
            self.fill();
            return Ok(key);
        }
        inner.waited.fetch_add(1, Ordering::Relaxed);
        if tokio::runtime::Handle::try_current().is_err() {
            return self.generate_here().await;
        }
        let taken = tokio::time::timeout(TAKE_BOUND, self.wait_in_line())
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Internal,
                    "no session key within 60 s",
                ))
            });
        self.fill();
        taken
    }

    /// Waits for a worker's key; generates one here only when no worker can: a
    /// pool that pre-generates nothing, a worker's failure handed to this take, or
    /// no worker running after [`WAIT_BOUND`].
    async fn wait_in_line(&self) -> Result<SigningKey> {
        let inner = &self.inner;
        if inner.config.ceiling == 0 {
            return self.generate_here().await;
        }
        let waiting = Waiting::new(inner);
        loop {
            let mut notified = std::pin::pin!(inner.ready.notified());
            notified.as_mut().enable();
            match inner.claim() {
                Turn::Key(key) => return Ok(key),
                Turn::Generate => break,
                Turn::Wait => {}
            }
            self.fill();
            if tokio::time::timeout(inner.wait_bound(), notified)
                .await
                .is_err()
                && inner.state().workers == 0
            {
                break;
            }
        }
        drop(waiting);
        self.generate_here().await
    }

    /// Generates a key for a take itself: on a blocking thread, at most
    /// `parallelism` at once, when in a runtime (a key whose take is cancelled
    /// meanwhile goes into the pool); on the caller's thread otherwise.
    async fn generate_here(&self) -> Result<SigningKey> {
        let inner = &self.inner;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let generated = inner.generator.generate();
            inner.count_generated_on_take(generated.is_ok());
            let key = generated?;
            inner.taken.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        };
        let permit = Arc::clone(&inner.take_permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "key generation closed"))?;
        let (sender, receiver) = oneshot::channel();
        let pool = Arc::downgrade(inner);
        let generator = inner.generator.clone();
        drop(runtime.spawn_blocking(move || {
            let generated = generator.generate();
            drop(permit);
            // No pool (dropped meanwhile): the key is wiped.
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.count_generated_on_take(generated.is_ok());
            if let Err(Ok(key)) = sender.send(generated) {
                pool.keep(key);
            }
        }));
        let mut delivery = Delivery {
            receiver,
            pool: inner,
        };
        let key = (&mut delivery.receiver)
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "key generation task failed"))??;
        inner.taken.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }
}

/// What a waiting take does next.
enum Turn {
    Key(SigningKey),
    Generate,
    Wait,
}

/// The receiving end of a take's own generation: if the take is cancelled, a key
/// delivered (or delivered later) goes into the pool.
struct Delivery<'a> {
    receiver: oneshot::Receiver<Result<SigningKey>>,
    pool: &'a PoolInner,
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        // After `close`, the generating thread's send fails and it keeps the key
        // itself; a key sent before is still here.
        self.receiver.close();
        if let Ok(Ok(key)) = self.receiver.try_recv() {
            self.pool.keep(key);
        }
    }
}

/// Ends with the shrink task (pool dropped, or its runtime shutting down): marks the
/// runtime gone for the workers and lets the next fill start a new shrink task.
struct RuntimeGuard {
    pool: Weak<PoolInner>,
    alive: Arc<AtomicBool>,
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        if let Some(pool) = self.pool.upgrade() {
            let mut state = pool.state();
            if state
                .runtime
                .as_ref()
                .is_some_and(|alive| Arc::ptr_eq(alive, &self.alive))
            {
                state.runtime = None;
            }
        }
    }
}

/// Counts a take in `waiters` while it lives (so cancelled takes are uncounted).
struct Waiting<'a>(&'a PoolInner);

impl<'a> Waiting<'a> {
    fn new(pool: &'a PoolInner) -> Self {
        pool.state().waiters += 1;
        Self(pool)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.waiters = state.waiters.saturating_sub(1);
        state.handoffs = state.handoffs.min(state.waiters);
    }
}

impl PoolInner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready key, if any; `grow`: a take that finds none raises the target.
    fn pop(&self, grow: bool) -> Option<SigningKey> {
        let mut state = self.state();
        state.active = true;
        state.last_take = Some(tokio::time::Instant::now());
        let key = state.keys.pop_front();
        if key.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        } else if grow {
            state.target = (state.target + KeyPool::GROWTH_PER_DRY_TAKE).min(self.config.ceiling);
        }
        key
    }

    fn wait_bound(&self) -> Duration {
        #[cfg(test)]
        if let Some(bound) = *self
            .generator
            .faults
            .wait_bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return bound;
        }
        WAIT_BOUND
    }

    /// A waiting take's turn: a ready key, else a handed-over generation, else wait.
    fn claim(&self) -> Turn {
        if let Some(key) = self.pop(false) {
            return Turn::Key(key);
        }
        let mut state = self.state();
        if state.handoffs > 0 {
            state.handoffs -= 1;
            return Turn::Generate;
        }
        Turn::Wait
    }

    /// Adds a key made for a take that is gone, for the next take.
    fn keep(&self, key: SigningKey) {
        self.state().keys.push_back(key);
        self.ready.notify_one();
    }

    fn count_generated_on_take(&self, ok: bool) {
        self.generated_on_take.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.generated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Stores a permit if the shrink task is not waiting right now.
        self.stop.notify_one();
    }
}

/// A background generator. Its `Drop` releases its slot in the pool's counts, even
/// if generation panics or the task is dropped unrun (runtime shutting down).
struct Worker {
    pool: Weak<PoolInner>,
    live: Arc<AtomicUsize>,
    generator: Generator,
    /// The runtime that runs this worker is alive (cleared when it shuts down).
    runtime: Arc<AtomicBool>,
    /// This worker counts in `workers` (from its spawn until it decides to stop).
    counted: bool,
    /// This worker counts in `in_flight`.
    reserved: bool,
}

impl Worker {
    fn run(mut self) {
        loop {
            self.settle();
            // A runtime shutting down waits for its blocking threads: stop now.
            if !self.runtime.load(Ordering::Acquire) {
                return;
            }
            {
                let Some(pool) = self.pool.upgrade() else {
                    return;
                };
                let mut state = pool.state();
                if state.keys.len() + state.in_flight >= state.target {
                    // Under the lock, so that a `fill` racing with this exit
                    // starts a worker instead of counting on this one.
                    state.workers = state.workers.saturating_sub(1);
                    self.counted = false;
                    return;
                }
                state.in_flight += 1;
                self.reserved = true;
            }
            let generated = self.generator.generate();
            // A dropped pool: the key is wiped and the worker stops.
            let Some(pool) = self.pool.upgrade() else {
                return;
            };
            let mut state = pool.state();
            state.in_flight -= 1;
            self.reserved = false;
            match generated {
                Ok(key) => {
                    pool.generated.fetch_add(1, Ordering::Relaxed);
                    state.keys.push_back(key);
                    drop(state);
                    pool.ready.notify_one();
                }
                Err(error) => {
                    // One waiter (not all) tries itself: it gets the key or the
                    // error, and its take restarts the workers.
                    if state.handoffs < state.waiters {
                        state.handoffs += 1;
                    }
                    drop(state);
                    pool.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %error, "key pool: key generation failed");
                    pool.ready.notify_one();
                    return;
                }
            }
        }
    }
}

impl Worker {
    /// Before a key, waits (once, at most [`SETTLE`]) until takes have paused for
    /// [`SETTLE`], unless takers wait or fewer than a quarter of the target are
    /// ready: the requests of a burst get the cores before the refill does.
    fn settle(&self) {
        let wait = {
            let Some(pool) = self.pool.upgrade() else {
                return;
            };
            let state = pool.state();
            let low = state.keys.len() < (state.target / 4).max(1);
            match state.last_take {
                Some(at) if !low && state.waiters == 0 => {
                    SETTLE.saturating_sub(tokio::time::Instant::now().saturating_duration_since(at))
                }
                _ => Duration::ZERO,
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        if let Some(pool) = self.pool.upgrade() {
            let mut state = pool.state();
            if self.counted {
                state.workers = state.workers.saturating_sub(1);
            }
            if self.reserved {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

/// Every `idle` without a take, lowers the target halfway to the floor and wipes
/// the keys above it (nothing for a fixed pool). Ends when the pool is dropped or
/// its runtime shuts down (then `guard` lets the next fill start another).
async fn shrink_when_idle(guard: RuntimeGuard, stop: Arc<Notify>, idle: Duration) {
    let weak = &guard.pool;
    loop {
        if tokio::time::timeout(idle, stop.notified()).await.is_ok() {
            return;
        }
        let Some(pool) = weak.upgrade() else {
            return;
        };
        let discarded = {
            let mut state = pool.state();
            if std::mem::take(&mut state.active) || state.target <= pool.config.floor {
                continue;
            }
            let floor = pool.config.floor;
            state.target = floor + (state.target - floor) / 2;
            let excess = state.keys.len().saturating_sub(state.target);
            // Oldest first; dropping a key wipes it.
            drop(state.keys.drain(..excess));
            excess
        };
        pool.discarded
            .fetch_add(discarded as u64, Ordering::Relaxed);
        tracing::debug!(discarded, "key pool shrank after an idle period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (bounded) until `done` holds.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_pool_stops_refilling() {
        // A floor that takes minutes to fill: the workers would run on for minutes.
        let pool = KeyPool::builder()
            .floor(10_000)
            .ceiling(20_000)
            .parallelism(2)
            .build();
        pool.fill();
        eventually("a first key", || pool.generated() >= 1).await;
        let live = Arc::clone(&pool.inner.live_workers);
        assert!(live.load(Ordering::Relaxed) >= 1);
        let tasks = tokio::runtime::Handle::current().metrics();
        assert_eq!(tasks.num_alive_tasks(), 1, "the shrink task");
        drop(pool);
        // Each worker finishes at most the key in hand (tens of milliseconds).
        eventually("the workers stopping", || live.load(Ordering::Relaxed) == 0).await;
        eventually("the shrink task ending", || tasks.num_alive_tasks() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refills_use_at_most_parallelism_workers() {
        let pool = KeyPool::builder().floor(6).parallelism(2).build();
        pool.fill();
        pool.fill();
        assert_eq!(pool.inner.state().workers, 2);
        assert!(pool.inner.live_workers.load(Ordering::Relaxed) <= 2);
        eventually("the fill", || pool.available() == 6).await;
        eventually("the workers stopping", || {
            pool.inner.live_workers.load(Ordering::Relaxed) == 0
        })
        .await;
        assert_eq!(pool.generated(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_failed_generation_lets_one_waiter_generate_not_all() {
        let pool = KeyPool::builder()
            .floor(1)
            .ceiling(4)
            .parallelism(1)
            .build();
        pool.inner.generator.faults.fail.store(1, Ordering::Relaxed);
        let mut takes = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let pool = pool.clone();
            takes.spawn(async move { pool.take().await });
        }
        let keys = tokio::time::timeout(Duration::from_secs(120), takes.join_all())
            .await
            .expect("every take completes");
        assert_eq!(keys.iter().filter(|key| key.is_ok()).count(), 50);
        let stats = pool.stats();
        assert_eq!(stats.failures, 1, "{stats:?}");
        assert!(stats.generated_on_take <= 1, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn takes_keep_waiting_in_line_for_a_stuck_worker() {
        let pool = KeyPool::builder()
            .floor(1)
            .ceiling(4)
            .parallelism(1)
            .build();
        let faults = Arc::clone(&pool.inner.generator.faults);
        *faults.wait_bound.lock().unwrap() = Some(Duration::from_millis(50));
        faults.set_hold(true);
        let mut takes = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let pool = pool.clone();
            takes.spawn(async move { pool.take().await });
        }
        // Many times the wait bound: the takes still wait for the one stuck worker.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = pool.stats();
        assert_eq!((stats.generated_on_take, stats.taken), (0, 0), "{stats:?}");
        assert_eq!(pool.inner.state().waiters, 20);
        faults.set_hold(false);
        let keys = tokio::time::timeout(Duration::from_secs(60), takes.join_all())
            .await
            .expect("every take completes");
        assert_eq!(keys.iter().filter(|key| key.is_ok()).count(), 20);
        assert_eq!(pool.stats().generated_on_take, 0, "{:?}", pool.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_key_of_a_cancelled_take_goes_into_the_pool() {
        // Every take generates: a take given 1 ms gives up before its key is made.
        let pool = KeyPool::new(0);
        let cancelled = tokio::time::timeout(Duration::from_millis(1), pool.take()).await;
        assert!(cancelled.is_err());
        eventually("the key reaching the pool", || pool.available() == 1).await;
        assert_eq!(pool.generated(), 1);
        pool.take().await.expect("the pooled key");
        assert_eq!(pool.generated(), 1, "the next take got that key");
    }

    #[test]
    fn dropping_the_runtime_stops_the_workers_between_keys() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        // Kept alive: only the runtime's end can stop the workers (~15 s to fill).
        let pool = KeyPool::builder().floor(300).parallelism(1).build();
        runtime.block_on(async {
            pool.fill();
            eventually("a first key", || pool.generated() >= 1).await;
        });
        // The drop waits for the blocking threads, so for the workers to stop.
        drop(runtime);
        let stats = pool.stats();
        assert!(stats.generated < 10, "{stats:?}");
        assert_eq!(pool.inner.live_workers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn outside_a_runtime_fill_waits_for_the_first_take() {
        let pool = KeyPool::builder().floor(2).build();
        pool.fill();
        assert_eq!(pool.inner.state().workers, 0);
        assert_eq!(pool.generated(), 0);
    }
}
