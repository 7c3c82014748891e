//! A load checker for the zero-downtime tests: a minimal HTTP/1.1 client with keep-alive over
//! plain `std::net::TcpStream`, driven by a few threads that hammer a loopback server while
//! deploys happen, and count every request that fails or returns the wrong bytes.
//!
//! Two modes:
//! - [`Mode::Requests`]: GET the same few paths over and over; every response must be 200 with a
//!   body that is exactly one complete version of that file ([`Versions`]).
//! - [`Mode::PageLoads`]: GET `/`, then every stylesheet and script it references, as a browser
//!   does; a load is broken if any of those is not 200.
//!
//! The checker is bounded by a request count and a duration, so it stops by itself even if the
//! test forgets it; [`LoadChecker::stop`] ends it early and returns the [`LoadReport`].

mod http;
mod versions;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use http::{Connection, HttpError, Response, assert_loopback, asset_paths};
pub use versions::{BodyCheck, Versions};

/// How many failures the report keeps, with details, for assertion messages.
const KEPT_FAILURES: usize = 10;

/// What the checker does in a loop.
#[derive(Clone)]
pub enum Mode {
    /// GET each path of `versions` in turn; check status 200 and the body.
    Requests { versions: Versions },
    /// GET `/`, wait `think_time` (a browser parsing the page, or a network round trip), then
    /// GET every stylesheet and script it references.
    PageLoads { think_time: Duration },
}

/// Bounds and shape of the load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent keep-alive connections, one thread each.
    pub connections: usize,
    /// The checker stops by itself after this many requests...
    pub max_requests: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Bounds connecting and each read and write.
    pub timeout: Duration,
    /// Each thread sleeps this long after each request (requests mode) or page load, so that
    /// on a small machine the load leaves the deploys some CPU.
    pub pause: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            connections: 4,
            max_requests: 2_000_000,
            max_duration: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            pause: Duration::ZERO,
        }
    }
}

/// The counts of a finished run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub elapsed: Duration,
    /// Requests sent (a retry on a new connection after an idle close counts once).
    pub requests: u64,
    /// Requests that got no response: connection errors, timeouts, malformed responses.
    pub errors: u64,
    /// Requests answered with a status other than 200.
    pub non_200: u64,
    /// 200 responses whose body is no complete version of the file (requests mode), other
    /// than the torn ones below.
    pub wrong_bodies: u64,
    /// 200 responses as long as one version with the bytes of the next (see
    /// [`BodyCheck::TornAtSwitch`]).
    pub torn_bodies: u64,
    /// 200 responses with a complete version older than the release live when sent.
    pub stale_bodies: u64,
    /// Page loads completed (page-loads mode).
    pub page_loads: u64,
    /// Page loads where `/` or a stylesheet or script it references was not 200.
    pub broken_loads: u64,
    /// Stylesheet and script requests made by page loads.
    pub assets: u64,
    pub connects: u64,
    pub retries: u64,
    /// The longest one request took, from sending it to its whole answer (or its error).
    pub max_latency: Duration,
    /// Set when the checker stopped by itself, saying which limit it reached.
    pub limit_reached: Option<String>,
    /// The first few failures, with details.
    pub failures: Vec<String>,
}

impl LoadReport {
    /// Returns requests that failed: no response, or not 200.
    pub fn failed(&self) -> u64 {
        self.errors + self.non_200
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.2?} ({} failed: {} errors, {} not 200; {} wrong bodies, {} torn \
             at a switch, {} stale bodies; {} connections, {} retries after idle close)",
            self.requests,
            self.elapsed,
            self.failed(),
            self.errors,
            self.non_200,
            self.wrong_bodies,
            self.torn_bodies,
            self.stale_bodies,
            self.connects,
            self.retries,
        )?;
        if self.page_loads > 0 || self.broken_loads > 0 {
            write!(
                f,
                "; {} page loads, {} broken, {} assets fetched",
                self.page_loads, self.broken_loads, self.assets
            )?;
        }
        write!(f, "; max latency {:.3?}", self.max_latency)?;
        if let Some(limit) = &self.limit_reached {
            write!(f, "; stopped by its limit: {limit}")?;
        }
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

/// Counters shared by the checker threads.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
    non_200: AtomicU64,
    wrong_bodies: AtomicU64,
    torn_bodies: AtomicU64,
    stale_bodies: AtomicU64,
    page_loads: AtomicU64,
    broken_loads: AtomicU64,
    assets: AtomicU64,
    connects: AtomicU64,
    retries: AtomicU64,
    max_latency_us: AtomicU64,
    limit_reached: Mutex<Option<String>>,
    failures: Mutex<Vec<String>>,
}

impl Shared {
    fn note_failure(&self, failure: String) {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() < KEPT_FAILURES {
            failures.push(failure);
        }
    }

    fn reach_limit(&self, limit: String) {
        self.limit_reached.lock().expect("limit lock").get_or_insert(limit);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Background threads loading a server until [`LoadChecker::stop`] or a limit.
pub struct LoadChecker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl LoadChecker {
    /// Starts `options.connections` threads loading `addr` (which must be 127.0.0.1).
    #[track_caller]
    pub fn start(addr: SocketAddr, mode: Mode, options: LoadOptions) -> Self {
        assert_loopback(addr);
        if let Mode::Requests { versions } = &mode {
            assert!(!versions.paths().is_empty(), "no paths to request");
        }
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let threads = (0..options.connections.max(1))
            .map(|index| {
                let worker = Worker {
                    index,
                    connection: Connection::new(addr, options.timeout),
                    shared: Arc::clone(&shared),
                    deadline: started + options.max_duration,
                    max_requests: options.max_requests,
                    pause: options.pause,
                };
                let mode = mode.clone();
                thread::Builder::new()
                    .name(format!("load-{index}"))
                    .spawn(move || worker.run(&mode))
                    .expect("spawn load thread")
            })
            .collect();
        Self { shared, threads, started }
    }

    /// Returns the requests sent so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` requests were sent (bounded by `within`); returns whether
    /// they were.
    pub fn wait_for_requests(&self, count: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.requests() < count {
            if Instant::now() >= deadline || self.threads.iter().all(|t| t.is_finished()) {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops the threads and returns the counts.
    pub fn stop(mut self) -> LoadReport {
        self.join();
        let shared = &self.shared;
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        LoadReport {
            elapsed: self.started.elapsed(),
            requests: load(&shared.requests),
            errors: load(&shared.errors),
            non_200: load(&shared.non_200),
            wrong_bodies: load(&shared.wrong_bodies),
            torn_bodies: load(&shared.torn_bodies),
            stale_bodies: load(&shared.stale_bodies),
            page_loads: load(&shared.page_loads),
            broken_loads: load(&shared.broken_loads),
            assets: load(&shared.assets),
            connects: load(&shared.connects),
            retries: load(&shared.retries),
            max_latency: Duration::from_micros(load(&shared.max_latency_us)),
            limit_reached: shared.limit_reached.lock().expect("limit lock").clone(),
            failures: shared.failures.lock().expect("failures lock").clone(),
        }
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            // A panicking load thread is a bug in this file; it must not hide the test's result.
            if thread.join().is_err() {
                self.shared.note_failure("a load thread panicked".into());
                self.shared.errors.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for LoadChecker {
    fn drop(&mut self) {
        self.join();
    }
}

/// One checker thread and its connection.
struct Worker {
    index: usize,
    connection: Connection,
    shared: Arc<Shared>,
    deadline: Instant,
    max_requests: u64,
    pause: Duration,
}

impl Worker {
    fn run(mut self, mode: &Mode) {
        let mut round = 0usize;
        while self.may_continue() {
            let done = match mode {
                Mode::Requests { versions } => self.request_round(versions, round),
                Mode::PageLoads { think_time } => self.page_load(*think_time),
            };
            if !done {
                break;
            }
            round += 1;
            if !self.pause.is_zero() {
                thread::sleep(self.pause);
            }
        }
        let shared = &self.shared;
        shared.connects.fetch_add(self.connection.connects, Ordering::SeqCst);
        shared.retries.fetch_add(self.connection.retries, Ordering::SeqCst);
    }

    fn may_continue(&self) -> bool {
        if self.shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        if Instant::now() >= self.deadline {
            self.shared.reach_limit("max_duration".into());
            return false;
        }
        true
    }

    /// Sends one GET, counting it against the limit; `None` when the limit is reached.
    fn get(&mut self, path: &str) -> Option<Result<Response, HttpError>> {
        let sent = self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if sent >= self.max_requests {
            self.shared.requests.fetch_sub(1, Ordering::SeqCst);
            self.shared.reach_limit(format!("max_requests = {}", self.max_requests));
            return None;
        }
        let sent_at = Instant::now();
        let result = self.connection.get(path);
        let took = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.shared.max_latency_us.fetch_max(took, Ordering::SeqCst);
        Some(result)
    }

    /// Counts a request that got no 200; returns a description.
    fn count_failure(&self, path: &str, result: &Result<Response, HttpError>) -> Option<String> {
        match result {
            Ok(response) if response.status == 200 => None,
            Ok(response) => {
                self.shared.non_200.fetch_add(1, Ordering::SeqCst);
                Some(format!("GET {path} -> {}", response.status))
            }
            Err(err) => {
                self.shared.errors.fetch_add(1, Ordering::SeqCst);
                Some(format!("GET {path} -> {err}"))
            }
        }
    }

    /// Requests one path (the threads start at different paths); returns false to stop.
    fn request_round(&mut self, versions: &Versions, round: usize) -> bool {
        let paths = versions.paths();
        let path = &paths[(round + self.index) % paths.len()];
        let live_then = versions.live();
        let Some(result) = self.get(path) else {
            return false;
        };
        if let Some(failure) = self.count_failure(path, &result) {
            self.shared.note_failure(format!("connection {}: {failure}", self.index));
            return true;
        }
        let Ok(response) = result else { return true };
        match versions.check(path, &response.body, live_then) {
            BodyCheck::Current => {}
            BodyCheck::Stale { version, live } => {
                self.shared.stale_bodies.fetch_add(1, Ordering::SeqCst);
                self.shared.note_failure(format!(
                    "connection {}: GET {path}: version {version} served after version {live} \
                     was live",
                    self.index
                ));
            }
            BodyCheck::TornAtSwitch => {
                self.shared.torn_bodies.fetch_add(1, Ordering::SeqCst);
                self.shared.note_failure(format!(
                    "connection {}: GET {path}: torn at a switch: {}",
                    self.index,
                    versions.describe_mismatch(path, &response.body)
                ));
            }
            BodyCheck::Unknown => {
                self.shared.wrong_bodies.fetch_add(1, Ordering::SeqCst);
                self.shared.note_failure(format!(
                    "connection {}: GET {path}: {}",
                    self.index,
                    versions.describe_mismatch(path, &response.body)
                ));
            }
        }
        true
    }

    /// Loads `/` and its stylesheets and scripts; returns false to stop.
    fn page_load(&mut self, think_time: Duration) -> bool {
        let Some(page) = self.get("/") else {
            return false;
        };
        if let Some(failure) = self.count_failure("/", &page) {
            self.shared.page_loads.fetch_add(1, Ordering::SeqCst);
            self.shared.broken_loads.fetch_add(1, Ordering::SeqCst);
            self.shared.note_failure(format!("connection {}: broken load: {failure}", self.index));
            return true;
        }
        let Ok(page) = page else { return true };
        let assets = asset_paths(&String::from_utf8_lossy(&page.body));
        if !think_time.is_zero() {
            thread::sleep(think_time);
        }
        let mut broken = Vec::new();
        for asset in &assets {
            let Some(result) = self.get(asset) else {
                return false;
            };
            self.shared.assets.fetch_add(1, Ordering::SeqCst);
            if let Some(failure) = self.count_failure(asset, &result) {
                broken.push(failure);
            }
        }
        self.shared.page_loads.fetch_add(1, Ordering::SeqCst);
        if !broken.is_empty() {
            self.shared.broken_loads.fetch_add(1, Ordering::SeqCst);
            self.shared.note_failure(format!(
                "connection {}: broken load: / referenced {assets:?}, then {}",
                self.index,
                broken.join(", ")
            ));
        }
        true
    }
}
