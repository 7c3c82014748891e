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

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest status line, header line or chunk-size line accepted.
const MAX_LINE: u64 = 16 * 1024;
/// The most headers one response may have.
const MAX_HEADERS: usize = 100;
/// The largest body accepted; a test site has nothing near this.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// How many failures the report keeps, with details, for assertion messages.
const KEPT_FAILURES: usize = 10;

/// One HTTP response, body decoded (chunked or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, values trimmed, in order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

impl Response {
    /// Returns the first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum HttpError {
    /// The connection ended (EOF or reset) before the first byte of the response: on a reused
    /// keep-alive connection, the server closed it while idle and the request may be retried.
    ClosedBeforeResponse(String),
    /// An I/O error after the response began, or while connecting or writing.
    Io(io::Error),
    /// The bytes are not HTTP/1.x as this client understands it.
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::ClosedBeforeResponse(why) => {
                write!(f, "connection closed before the response: {why}")
            }
            HttpError::Io(err) => write!(f, "i/o error: {err}"),
            HttpError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(err: io::Error) -> Self {
        HttpError::Io(err)
    }
}

fn malformed(why: impl Into<String>) -> HttpError {
    HttpError::Malformed(why.into())
}

/// Reads one line ending in `\n` (at most [`MAX_LINE`] bytes) and returns it without `\r\n`.
/// Returns `None` at EOF before any byte.
fn read_line(reader: &mut impl BufRead) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            malformed("line too long")
        } else {
            HttpError::Io(io::ErrorKind::UnexpectedEof.into())
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads one response to a GET from `reader`: status line, headers, and a body delimited by
/// `Content-Length`, chunked transfer coding, or the end of the connection.
pub fn read_response(reader: &mut impl BufRead) -> Result<Response, HttpError> {
    // Whether the server closed an idle connection shows at the first byte: nothing at all.
    let first = match reader.fill_buf() {
        Ok([]) => return Err(HttpError::ClosedBeforeResponse("EOF".into())),
        Ok(_) => read_line(reader)?,
        Err(err) if is_reset(&err) => {
            return Err(HttpError::ClosedBeforeResponse(err.to_string()));
        }
        Err(err) => return Err(err.into()),
    };
    let status_line = first.ok_or_else(|| malformed("no status line"))?;
    let status_line =
        String::from_utf8(status_line).map_err(|_| malformed("status line is not UTF-8"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(malformed(format!("status line {status_line:?}"))),
    };
    let status: u16 = parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| malformed("EOF in headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(malformed("too many headers"));
        }
        let line = String::from_utf8(line).map_err(|_| malformed("header is not UTF-8"))?;
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(key, _)| key == name)
            .flat_map(|(_, value)| value.split(','))
            .map(|token| token.trim().to_ascii_lowercase())
    };
    let chunked = values("transfer-encoding").any(|coding| coding == "chunked");
    let connection: Vec<String> = values("connection").collect();
    let mut keep_alive = if http10 {
        connection.iter().any(|token| token == "keep-alive")
    } else {
        !connection.iter().any(|token| token == "close")
    };

    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        read_chunked(reader)?
    } else if let Some(length) = headers.iter().find(|(key, _)| key == "content-length") {
        let length: u64 =
            length.1.parse().map_err(|_| malformed(format!("Content-Length {:?}", length.1)))?;
        if length > MAX_BODY {
            return Err(malformed(format!("Content-Length {length} too large")));
        }
        let mut body = Vec::with_capacity(length as usize);
        reader.take(length).read_to_end(&mut body)?;
        if body.len() as u64 != length {
            return Err(HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended after {} of {length} bytes", body.len()),
            )));
        }
        body
    } else {
        // Delimited by the end of the connection, which then cannot be reused.
        keep_alive = false;
        let mut body = Vec::new();
        reader.take(MAX_BODY + 1).read_to_end(&mut body)?;
        if body.len() as u64 > MAX_BODY {
            return Err(malformed("body too large"));
        }
        body
    };
    Ok(Response { status, headers, body, keep_alive })
}

/// Reads a chunked body: hex size lines (extensions ignored), data, CRLF, `0`, trailers.
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| malformed("EOF before chunk size"))?;
        let line = String::from_utf8(line).map_err(|_| malformed("chunk size is not UTF-8"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| malformed(format!("chunk size line {line:?}")))?;
        if size == 0 {
            break;
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(malformed("chunked body too large"));
        }
        let before = body.len();
        reader.take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        match read_line(reader)? {
            Some(rest) if rest.is_empty() => {}
            _ => return Err(malformed("chunk data not followed by CRLF")),
        }
    }
    // Trailers, up to the empty line.
    loop {
        match read_line(reader)? {
            Some(line) if line.is_empty() => return Ok(body),
            Some(_) => {}
            None => return Err(malformed("EOF in trailers")),
        }
    }
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Asserts `addr` is 127.0.0.1: the checker must never load anything but a local test server.
#[track_caller]
pub fn assert_loopback(addr: SocketAddr) {
    assert_eq!(
        addr.ip(),
        Ipv4Addr::LOCALHOST,
        "the load checker only talks to 127.0.0.1, not {addr}"
    );
}

/// A keep-alive HTTP/1.1 connection to a loopback server that reconnects when needed.
pub struct Connection {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    /// TCP connections opened so far.
    pub connects: u64,
    /// Requests sent again because the server had closed the idle connection they were sent on.
    pub retries: u64,
}

impl Connection {
    /// Returns a connection to `addr` (which must be 127.0.0.1); it connects on first use.
    /// `timeout` bounds connecting and each read and write.
    #[track_caller]
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        assert_loopback(addr);
        Self { addr, timeout, stream: None, connects: 0, retries: 0 }
    }

    /// Sends `GET path` and reads the response. A request on a reused connection that the
    /// server had already closed is retried once on a new connection, as browsers do.
    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        let reused = self.stream.is_some();
        match self.try_get(path) {
            Err(HttpError::ClosedBeforeResponse(_)) if reused => {
                self.retries += 1;
                self.try_get(path)
            }
            result => result,
        }
    }

    fn try_get(&mut self, path: &str) -> Result<Response, HttpError> {
        let result = self.exchange(path);
        if !matches!(&result, Ok(response) if response.keep_alive) {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, path: &str) -> Result<Response, HttpError> {
        let reader = match &mut self.stream {
            Some(reader) => reader,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                stream.set_nodelay(true)?;
                self.connects += 1;
                self.stream.insert(BufReader::with_capacity(64 * 1024, stream))
            }
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", self.addr.port());
        if let Err(err) = reader.get_mut().write_all(request.as_bytes()) {
            return Err(if is_reset(&err) {
                HttpError::ClosedBeforeResponse(err.to_string())
            } else {
                err.into()
            });
        }
        read_response(reader)
    }
}

/// Returns the absolute paths of the stylesheets (`<link rel="stylesheet" href>`) and scripts
/// (`<script src>`) an HTML page references, in document order. Plain string scanning: enough
/// for pages whose attributes are double-quoted.
pub fn asset_paths(html: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let name_len = tag.find(|c: char| c.is_ascii_whitespace()).unwrap_or(tag.len());
        let attribute = match tag[..name_len].to_ascii_lowercase().as_str() {
            "link" if tag.contains("rel=\"stylesheet\"") => "href",
            "script" => "src",
            _ => continue,
        };
        if let Some(value) = attribute_value(tag, attribute)
            && value.starts_with('/')
            && !value.starts_with("//")
        {
            paths.push(value.to_owned());
        }
        rest = &rest[end..];
    }
    paths
}

/// Returns the double-quoted value of `name` in a tag's text.
fn attribute_value<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("{name}=\"");
    let mut from = 0;
    while let Some(found) = tag[from..].find(&needle) {
        let at = from + found;
        // Only a whole attribute name: `src` must not match inside `data-src`.
        let whole = tag[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let value_start = at + needle.len();
        if whole {
            let value_len = tag[value_start..].find('"')?;
            return Some(&tag[value_start..value_start + value_len]);
        }
        from = value_start;
    }
    None
}

/// Every version of each checked file pushed so far, shared between the test (which adds a
/// version before pushing it) and the checker threads (which accept any version added).
///
/// Versions are numbered by deploy. [`Versions::set_live`] records that a deploy is live: a
/// request sent after that must be answered from that release or a newer one, never an older
/// one (a "stale" body).
#[derive(Clone, Default)]
pub struct Versions {
    inner: Arc<VersionsInner>,
}

/// The versions of one path: deploy number and body.
type PathVersions = Vec<(u64, Vec<u8>)>;

#[derive(Default)]
struct VersionsInner {
    bodies: RwLock<HashMap<String, PathVersions>>,
    live: AtomicU64,
}

/// What a body is, compared with the versions known.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// One complete version, from the live release or a newer one.
    Current,
    /// One complete version, but from a release older than one already live.
    Stale { version: u64, live: u64 },
    /// As long as one version and equal to the start of another: the length from one
    /// release and the bytes from the next, which a server that stats a path and then opens
    /// it again sends when the link switches in between (Apache does).
    TornAtSwitch,
    /// No complete version of the file: truncated, mixed, or never pushed.
    Unknown,
}

impl Versions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `body` as what `path` serves in deploy number `version`.
    pub fn add(&self, version: u64, path: &str, body: impl Into<Vec<u8>>) {
        let mut bodies = self.inner.bodies.write().expect("versions lock");
        bodies.entry(path.to_owned()).or_default().push((version, body.into()));
    }

    /// Records that deploy number `version` is live (its push has finished).
    pub fn set_live(&self, version: u64) {
        self.inner.live.fetch_max(version, Ordering::SeqCst);
    }

    /// Returns the newest deploy number known to be live.
    pub fn live(&self) -> u64 {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Returns the paths that have versions.
    pub fn paths(&self) -> Vec<String> {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let mut paths: Vec<String> = bodies.keys().cloned().collect();
        paths.sort();
        paths
    }

    /// Describes how `body` differs from the version of `path` it shares the longest prefix
    /// with, to tell a truncated body from a mixed one in failure messages.
    pub fn describe_mismatch(&self, path: &str, body: &[u8]) -> String {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let nearest = bodies.get(path).and_then(|versions| {
            versions
                .iter()
                .map(|(version, known)| {
                    let common = known.iter().zip(body).take_while(|(a, b)| a == b).count();
                    (common, *version, known.len())
                })
                .max()
        });
        // A server that takes the length from one release and the bytes from another (a stat
        // and an open on either side of the switch) sends a body as long as another version.
        let same_length: Vec<u64> = bodies
            .get(path)
            .into_iter()
            .flatten()
            .filter(|(_, known)| known.len() == body.len())
            .map(|(version, _)| *version)
            .collect();
        let shown: String = String::from_utf8_lossy(body).chars().take(60).collect();
        match nearest {
            Some((common, version, len)) => format!(
                "{} bytes (the length of versions {same_length:?}), no version pushed; nearest \
                 is version {version} ({len} bytes), same for the first {common} bytes; starts \
                 {shown:?}",
                body.len()
            ),
            None => format!("{} bytes, and no version of this path", body.len()),
        }
    }

    /// Checks `body` of `path` against the versions, for a request sent when `live_then` was
    /// the live deploy.
    pub fn check(&self, path: &str, body: &[u8], live_then: u64) -> BodyCheck {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let newest_match = bodies.get(path).and_then(|versions| {
            versions
                .iter()
                .filter(|(_, known)| known.as_slice() == body)
                .map(|(version, _)| *version)
                .max()
        });
        let torn = || {
            let versions = bodies.get(path).map(Vec::as_slice).unwrap_or_default();
            versions.iter().any(|(_, known)| known.len() == body.len())
                && versions
                    .iter()
                    .any(|(_, known)| known.len() > body.len() && known.starts_with(body))
        };
        match newest_match {
            None if torn() => BodyCheck::TornAtSwitch,
            None => BodyCheck::Unknown,
            Some(version) if version < live_then => BodyCheck::Stale { version, live: live_then },
            Some(_) => BodyCheck::Current,
        }
    }
}

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
        Some(self.connection.get(path))
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
