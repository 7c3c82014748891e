//! A loopback HTTP server that answers with canned bytes, for the tests of the load checker.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the canned server does after writing one answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepOpen,
    Close,
}

/// A loopback server that answers each request by calling `answer(path)` for the raw bytes to
/// write; counts the connections it accepted. Threads end with the test process.
pub struct CannedServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl CannedServer {
    pub fn start(answer: impl Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("local address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        {
            let connections = Arc::clone(&connections);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let answer = Arc::clone(&answer);
                    let requests = Arc::clone(&requests);
                    thread::spawn(move || serve(stream, &*answer, &requests));
                }
            });
        }
        Self { addr, connections, requests }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Returns the raw request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Answers the requests of one connection until it closes or `answer` says to close it.
fn serve(
    stream: TcpStream,
    answer: &(dyn Fn(&str) -> (Vec<u8>, After) + Send + Sync),
    requests: &Mutex<Vec<String>>,
) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut reader) else { return };
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        requests.lock().expect("requests lock").push(head);
        let (bytes, after) = answer(&path);
        if writer.write_all(&bytes).is_err() || after == After::Close {
            return;
        }
    }
}

/// Returns a `200 OK` answer carrying `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Returns an answer with status `code` and a 3-byte body.
pub fn status(code: u16) -> Vec<u8> {
    format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 3\r\n\r\nnah").into_bytes()
}

/// Reads a request's head, up to and with its empty line; `None` when the client closed the
/// connection (or it failed) first.
pub fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}
