//! The load scenario every proxy's test runs (issue 13): commits pushed back to back while
//! keep-alive clients GET `/` through the proxy and one client GETs `/slow` (1.5 s per answer).
//! It asserts what zero downtime means for an app: no failed request, no answer from a release
//! older than the one live when it was sent, every `/slow` answered, the old instance stopped
//! only after the proxy was pointed away from it, and exactly one instance left at the end.

use std::fs;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::Output;
use super::app::AppSite;
use super::load::{Connection, LoadChecker, LoadOptions, LoadReport, Mode, Response, Versions};

/// What a run of [`push_under_load`] measured, for the test's note.
pub struct PushLoad {
    pub pushes: usize,
    pub took: Duration,
    pub requests: LoadReport,
    pub slow: LoadReport,
}

impl std::fmt::Display for PushLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pushes in {:.1?}\n  keep-alive clients: {}\n  /slow client: {}",
            self.pushes, self.took, self.requests, self.slow
        )
    }
}

/// Starts a transient unit inside `site`'s systemd running `argv` (a proxy), with `setenv`
/// in its environment; it dies with the namespace. Waits until `addr` accepts connections.
#[track_caller]
pub fn start_proxy_unit(
    site: &AppSite,
    unit: &str,
    setenv: &[(&str, &str)],
    argv: &[&str],
    addr: SocketAddr,
) {
    let mut run = site.systemd.run(&site.env, "systemd-run").arg(format!("--unit={unit}"));
    for (key, value) in setenv {
        run = run.arg(format!("--setenv={key}={value}"));
    }
    let started = run.arg("--").args(argv).output();
    assert!(started.status.success(), "systemd-run {unit}\n{started}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{unit} does not listen on {addr}\n{}",
            site.systemd.journal(unit)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pushes `pushes` commits one after the other while the clients load `front` (the proxy);
/// `live` is the commit live before. Asserts after each push that it went live, that the
/// pusher was told of the proxy switch before the old instance's stop, and that exactly one
/// instance runs; at the end, that no request failed or was stale and every `/slow` answered.
#[track_caller]
pub fn push_under_load(site: &AppSite, front: SocketAddr, live: &str, pushes: usize) -> PushLoad {
    let (versions, slow_versions) = (Versions::new(), Versions::new());
    versions.add(0, "/", live.as_bytes());
    slow_versions.add(0, "/slow", live.as_bytes());
    let bounded = |connections| LoadOptions {
        connections,
        max_requests: 400_000,
        max_duration: Duration::from_secs(300),
        timeout: Duration::from_secs(10),
        pause: Duration::from_millis(2),
    };
    let requests =
        LoadChecker::start(front, Mode::Requests { versions: versions.clone() }, bounded(3));
    let slow = LoadChecker::start(
        front,
        Mode::Requests { versions: slow_versions.clone() },
        LoadOptions { pause: Duration::ZERO, ..bounded(1) },
    );
    assert!(requests.wait_for_requests(20, Duration::from_secs(10)), "no load through {front}");
    let started = Instant::now();
    let mut slot = site.env.link_target().display().to_string();
    for number in 1..=pushes as u64 {
        let commit = site.commit("ok", &format!("v{number}"));
        versions.add(number, "/", commit.as_bytes());
        slow_versions.add(number, "/slow", commit.as_bytes());
        let new_slot = if slot == "blue" { "green" } else { "blue" };
        let pushed = site.push();
        pushed.assert_live(&commit, "refs/heads/main", new_slot);
        let lines = pushed.pushdeploy_lines();
        let position = |needle: &str| lines.iter().position(|line| line.contains(needle));
        let pointed = position(&format!("now sends requests to {}", site.unit(new_slot)));
        let stopped =
            position(&format!("stopped the old instance {} (drained in ", site.unit(&slot)));
        assert!(
            matches!((pointed, stopped), (Some(p), Some(s)) if p < s),
            "push {number}: the proxy switch must be told before the old instance stops\n{pushed}"
        );
        versions.set_live(number);
        slow_versions.set_live(number);
        assert_eq!(
            (site.state(new_slot).as_str(), site.state(&slot).as_str()),
            ("active", "inactive"),
            "push {number}: exactly the new instance must run"
        );
        if number == 1 {
            eprintln!("{}", lines.join("\n"));
        }
        slot = new_slot.to_owned();
    }
    let took = started.elapsed();
    // The last /slow in flight finishes (1.5 s) before the clients stop.
    std::thread::sleep(Duration::from_millis(1600));
    let load = PushLoad { pushes, took, requests: requests.stop(), slow: slow.stop() };
    eprintln!("{load}");
    for (what, report) in [("keep-alive", &load.requests), ("/slow", &load.slow)] {
        assert_eq!(
            (report.failed(), report.wrong_bodies, report.stale_bodies, report.torn_bodies),
            (0, 0, 0, 0),
            "{what} clients: failed, wrong, stale, torn\n{load}"
        );
        assert!(report.limit_reached.is_none(), "{what} clients hit a limit\n{load}");
    }
    assert!(load.slow.requests >= 5, "too few /slow requests to tell\n{load}");
    load
}

/// The start every proxy's failures test shares: `a` deployed into blue, `[app.check]` set to
/// `/ready` through `front`, two keep-alive clients started on `front`, then a push whose
/// health answers 500 and one that crashes on boot, each failing at the gate. Returns `a`, the
/// versions the clients accept (the test adds the commits it pushes next) and the clients.
#[track_caller]
pub fn failed_gates_under_load(
    site: &AppSite,
    front: SocketAddr,
) -> (String, Versions, LoadChecker) {
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    site.edit_config(|config| format!("{config}\n[app.check]\nurl = \"http://{front}/ready\"\n"));
    let versions = Versions::new();
    versions.add(0, "/", a.as_bytes());
    let options = LoadOptions {
        connections: 2,
        max_duration: Duration::from_secs(180),
        pause: Duration::from_millis(5),
        ..LoadOptions::default()
    };
    let load = LoadChecker::start(front, Mode::Requests { versions: versions.clone() }, options);
    let _ = site.commit("unhealthy", "unhealthy");
    let unhealthy = site.push();
    let line = unhealthy.final_line();
    assert!(line.starts_with("pushdeploy: failed at activate: health gate: "), "{unhealthy}");
    let _ = site.commit("crash", "crash");
    let crash = site.push();
    assert!(crash.final_line().contains("pushdeploy-www@green.service stopped "), "{crash}");
    (a, versions, load)
}

/// Returns CLOCK_MONOTONIC in microseconds, the clock of systemd's `*TimestampMonotonic` and
/// of the journal's `__MONOTONIC_TIMESTAMP` (the namespace shares the host's clock).
pub fn monotonic_us() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000
}

/// What [`push_with_request_held`] saw.
pub struct HeldPush {
    pub pushed: Output,
    /// The answer to the held request.
    pub answer: Response,
    /// When that answer arrived (see [`monotonic_us`]).
    pub answered_at_us: u64,
}

/// How long the held request stays in flight after the proxy answered from the new commit.
pub const HELD_AFTER_SWITCH: Duration = Duration::from_millis(500);

/// Pushes `commit` (committed already) while a `GET /hold` through `front` is in flight to the
/// live instance (`live_slot`): it is sent, and has reached the app (its journal says so),
/// before the push starts, and it is let go only [`HELD_AFTER_SWITCH`] after the proxy
/// answered from `commit`. So it is in flight at the switch however loaded the machine is
/// (a fixed `/slow` was not, once a push took longer than 1.5 s to reach the switch), and the
/// drain must wait for it.
#[track_caller]
pub fn push_with_request_held(
    site: &AppSite,
    front: SocketAddr,
    live_slot: &str,
    commit: &str,
) -> HeldPush {
    let release = site.env.target.join("release-hold");
    let _ = fs::remove_file(&release);
    let unit = site.unit(live_slot);
    let holding = || site.systemd.journal(&unit).matches("pushdeploy-test: holding").count();
    let before = holding();
    thread::scope(|scope| {
        let held = scope.spawn(move || {
            let answer = Connection::new(front, Duration::from_secs(60)).get("/hold");
            (answer, monotonic_us())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while holding() == before {
            assert!(Instant::now() < deadline, "/hold never reached {unit}");
            thread::sleep(Duration::from_millis(20));
        }
        let push = scope.spawn(|| site.push());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = Connection::new(front, Duration::from_secs(5)).get("/");
            if answer.is_ok_and(|answer| answer.body == commit.as_bytes()) {
                break;
            }
            assert!(!push.is_finished(), "the push ended before the proxy answered from it");
            assert!(Instant::now() < deadline, "the proxy never answered from {commit}");
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(HELD_AFTER_SWITCH);
        fs::write(&release, "").expect("write release-hold");
        let (answer, answered_at_us) = held.join().expect("the /hold thread");
        let answer = answer.unwrap_or_else(|e| panic!("GET /hold through {front}: {e}"));
        let pushed = push.join().expect("the push");
        HeldPush { pushed, answer, answered_at_us }
    })
}
