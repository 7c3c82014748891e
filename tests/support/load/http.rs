//! The load checker's HTTP/1.1 client over a kept-alive `TcpStream`, and the assets of a page.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The longest status line, header line or chunk-size line accepted.
const MAX_LINE: u64 = 16 * 1024;
/// The most headers one response may have.
const MAX_HEADERS: usize = 100;
/// The largest body accepted; a test site has nothing near this.
const MAX_BODY: u64 = 64 * 1024 * 1024;

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
    let (status, http10) = read_status_line(reader)?;
    let headers = read_headers(reader)?;
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
        read_sized_body(reader, &length.1)?
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

/// Reads the status line: returns the status code and whether the response is HTTP/1.0.
fn read_status_line(reader: &mut impl BufRead) -> Result<(u16, bool), HttpError> {
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
    Ok((status, http10))
}

/// Reads the header lines up to the empty one; names are lowercased.
fn read_headers(reader: &mut impl BufRead) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| malformed("EOF in headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(malformed("too many headers"));
        }
        let line = String::from_utf8(line).map_err(|_| malformed("header is not UTF-8"))?;
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed(format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Reads a body of the `Content-Length` given.
fn read_sized_body(reader: &mut impl BufRead, length: &str) -> Result<Vec<u8>, HttpError> {
    let length: u64 =
        length.parse().map_err(|_| malformed(format!("Content-Length {length:?}")))?;
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
    Ok(body)
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
