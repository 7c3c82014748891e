//! The load checker of the zero-downtime tests, checked against a tiny HTTP server on a real
//! loopback socket that answers with canned bytes: Content-Length, chunked and close-delimited
//! bodies, keep-alive and reconnection, and the counting of wrong bodies and broken page loads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::canned_server::{After, CannedServer, ok, status};
use crate::support::load::{
    BodyCheck, Connection, HttpError, LoadChecker, LoadOptions, Mode, Versions, asset_paths,
};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn content_length_bodies_share_one_kept_alive_connection() {
    let server = CannedServer::start(|path| (ok(&format!("body of {path}")), After::KeepOpen));
    let mut connection = Connection::new(server.addr, TIMEOUT);

    for path in ["/a", "/b", "/c"] {
        let response = connection.get(path).expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, format!("body of {path}").as_bytes());
        assert_eq!(response.header("CONTENT-TYPE"), Some("text/plain"));
        assert!(response.keep_alive);
    }

    assert_eq!(server.connections(), 1);
    assert_eq!(connection.connects, 1);
    let port = server.addr.port();
    assert_eq!(server.requests()[0], format!("GET /a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"));
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_decoded() {
    let server = CannedServer::start(|_| {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n\
                   7;name=value\r\n, world\r\n\
                   A\r\n0123456789\r\n\
                   0\r\nX-Trailer: yes\r\n\r\n";
        (raw.as_bytes().to_vec(), After::KeepOpen)
    });
    let mut connection = Connection::new(server.addr, TIMEOUT);

    for _ in 0..2 {
        let response = connection.get("/").expect("response");
        assert_eq!(response.body, b"hello, world0123456789");
        assert!(response.keep_alive);
    }
    assert_eq!(server.connections(), 1);
}

#[test]
fn body_delimited_by_close_is_read_to_the_end_and_not_reused() {
    let server =
        CannedServer::start(|_| (b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(), After::Close));
    let mut connection = Connection::new(server.addr, TIMEOUT);

    for _ in 0..3 {
        let response = connection.get("/").expect("response");
        assert_eq!(response.body, b"until the end");
        assert!(!response.keep_alive);
    }
    assert_eq!(connection.connects, 3);
    assert_eq!(connection.retries, 0);
}

#[test]
fn connection_close_header_makes_the_next_request_reconnect() {
    let server = CannedServer::start(|_| {
        (
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 4\r\n\r\ngone"
                .to_vec(),
            After::Close,
        )
    });
    let mut connection = Connection::new(server.addr, TIMEOUT);

    for _ in 0..2 {
        let response = connection.get("/").expect("response");
        assert_eq!((response.status, response.body.as_slice()), (404, &b"gone"[..]));
        assert!(!response.keep_alive);
    }
    assert_eq!(server.connections(), 2);
    assert_eq!(connection.retries, 0);
}

#[test]
fn idle_connection_closed_by_server_is_retried_once_on_a_new_one() {
    // Says keep-alive, then closes anyway: what a server does when its idle timeout ends.
    let server = CannedServer::start(|_| (ok("fine"), After::Close));
    let mut connection = Connection::new(server.addr, TIMEOUT);

    for _ in 0..3 {
        let response = connection.get("/").expect("retried on a new connection");
        assert_eq!(response.body, b"fine");
        // Let the close arrive before the next request reuses the connection.
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(connection.connects, 3);
    assert_eq!(connection.retries, 2);
}

#[test]
fn truncated_and_malformed_responses_are_errors() {
    type Expected = fn(&HttpError) -> bool;
    let cases: [(&str, Expected); 4] = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", |err| {
            matches!(err, HttpError::Io(_))
        }),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", |err| {
            matches!(err, HttpError::Io(_))
        }),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", |err| {
            matches!(err, HttpError::Malformed(_))
        }),
        ("SMTP ready\r\n\r\n", |err| matches!(err, HttpError::Malformed(_))),
    ];
    for (raw, expected) in cases {
        let server = CannedServer::start(move |_| (raw.as_bytes().to_vec(), After::Close));
        let mut connection = Connection::new(server.addr, TIMEOUT);
        match connection.get("/") {
            Err(err) if expected(&err) => {}
            other => panic!("{raw:?}: unexpected {other:?}"),
        }
    }
}

#[test]
fn fresh_connection_closed_without_response_is_an_error_not_a_retry() {
    let server = CannedServer::start(|_| (Vec::new(), After::Close));
    let mut connection = Connection::new(server.addr, TIMEOUT);

    let result = connection.get("/");

    assert!(matches!(result, Err(HttpError::ClosedBeforeResponse(_))), "{result:?}");
    assert_eq!(connection.retries, 0);
}

#[test]
#[should_panic(expected = "only talks to 127.0.0.1")]
fn checker_refuses_addresses_other_than_loopback() {
    let _ = Connection::new(SocketAddr::from(([10, 0, 0, 1], 80)), TIMEOUT);
}

#[test]
fn asset_paths_finds_absolute_stylesheets_and_scripts_only() {
    let html = r#"<!doctype html><head>
  <link rel="icon" href="/images/logo.svg">
  <link rel="stylesheet" href="/assets/app.1.css">
  <link rel="stylesheet" href="relative.css">
  <link rel="stylesheet" href="//cdn.example.com/x.css">
  <script src="/assets/app.1.js" defer></script>
  <script>inline()</script>
  <script data-src="/lazy.js" src="/assets/vendor.js"></script>
  <a href="/about.html">About</a>
</head>"#;

    assert_eq!(asset_paths(html), ["/assets/app.1.css", "/assets/app.1.js", "/assets/vendor.js"]);
}

#[test]
fn versions_tell_current_stale_and_unknown_bodies_apart() {
    let versions = Versions::new();
    versions.add(0, "/a", "zero");
    versions.add(1, "/a", "one");
    versions.set_live(1);

    assert_eq!(versions.check("/a", b"one", 1), BodyCheck::Current);
    assert_eq!(versions.check("/a", b"zero", 0), BodyCheck::Current);
    assert_eq!(versions.check("/a", b"zero", 1), BodyCheck::Stale { version: 0, live: 1 });
    assert_eq!(versions.check("/a", b"on", 1), BodyCheck::Unknown);
    assert_eq!(versions.check("/b", b"one", 1), BodyCheck::Unknown);
    // The length of "zero" with the bytes of a longer, later version: torn at a switch.
    versions.add(2, "/a", "zero-two");
    assert_eq!(versions.check("/a", b"zero", 2), BodyCheck::Stale { version: 0, live: 2 });
    versions.add(3, "/a", "TWO!-three");
    assert_eq!(versions.check("/a", b"TWO!", 3), BodyCheck::TornAtSwitch);
    assert_eq!(versions.check("/a", b"TW", 3), BodyCheck::Unknown);
    let mismatch = versions.describe_mismatch("/a", b"onx");
    assert!(
        mismatch.contains(
            "3 bytes (the length of versions [1]), no version pushed; nearest is version 1 (3 \
             bytes), same for the first 2 bytes"
        ),
        "{mismatch}"
    );
}

#[test]
fn page_loads_mode_counts_a_load_broken_when_an_asset_is_missing() {
    // Pages alternate between one whose assets exist and one whose stylesheet is gone.
    let count = Arc::new(AtomicUsize::new(0));
    let server = CannedServer::start(move |path| match path {
        "/" => {
            let n = count.fetch_add(1, Ordering::SeqCst) % 2;
            let page = format!(
                "<link rel=\"stylesheet\" href=\"/app.{n}.css\"><script src=\"/app.js\"></script>"
            );
            (ok(&page), After::KeepOpen)
        }
        "/app.0.css" | "/app.js" => (ok("asset"), After::KeepOpen),
        _ => (status(404), After::KeepOpen),
    });
    let options = LoadOptions { connections: 1, max_requests: 30, ..LoadOptions::default() };

    let checker =
        LoadChecker::start(server.addr, Mode::PageLoads { think_time: Duration::ZERO }, options);
    thread::sleep(Duration::from_millis(500));
    let report = checker.stop();

    assert_eq!(report.page_loads, 10, "{report}");
    assert_eq!(report.broken_loads, 5, "{report}");
    assert_eq!(report.assets, 20, "{report}");
    assert_eq!(report.non_200, 5, "{report}");
    assert!(report.failures[0].contains("/app.1.css -> 404"), "{report}");
}

#[test]
fn checker_stops_by_itself_after_its_duration() {
    let server = CannedServer::start(|_| (ok("x"), After::KeepOpen));
    let versions = Versions::new();
    versions.add(0, "/", "x");
    let options = LoadOptions {
        connections: 2,
        max_duration: Duration::from_millis(200),
        ..LoadOptions::default()
    };

    let checker = LoadChecker::start(server.addr, Mode::Requests { versions }, options);
    thread::sleep(Duration::from_millis(400));
    let requests = checker.requests();
    thread::sleep(Duration::from_millis(100));

    assert_eq!(checker.requests(), requests, "still sending after its duration");
    let report = checker.stop();
    assert_eq!(report.limit_reached.as_deref(), Some("max_duration"));
    assert!(report.requests > 0 && report.failed() == 0, "{report}");
}
