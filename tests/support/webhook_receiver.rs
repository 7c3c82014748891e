//! A loopback HTTP server that receives the webhooks of `[notify]`: it keeps each request's
//! head and body, and answers with a fixed status, or never answers (a receiver that hangs).

use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Reads the request, then holds the connection open without a word.
    Hang,
}

/// One request received: its head (request line and headers) and its body.
#[derive(Clone, Debug)]
pub struct Received {
    pub head: String,
    pub body: String,
}

/// The receiver; its threads end with the test process.
pub struct WebhookServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl WebhookServer {
    pub fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("local address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let kept = Arc::clone(&kept);
                thread::spawn(move || serve(stream, answer, &kept));
            }
        });
        WebhookServer { addr, received }
    }

    /// Returns the URL of the path `/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Returns the requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").clone()
    }

    /// Waits up to `timeout` for `count` requests; returns those received.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.received().len() < count && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        self.received()
    }
}

fn serve(stream: TcpStream, answer: Answer, received: &Mutex<Vec<Received>>) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let Some(head) = super::canned_server::read_head(&mut reader) else { return };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0usize);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    received.lock().expect("received lock").push(Received { head, body });
    match answer {
        Answer::Status(status) => {
            let _ = write!(
                writer,
                "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
        Answer::Hang => thread::sleep(Duration::from_secs(600)),
    }
}
