//! App deploys with `[app.proxy] kind = "none"` under real systemd (support::systemd) and
//! Debian's gunicorn: a push starts the idle slot's instance, which must pass the health gate
//! before the link moves, and stops the old instance after; an unhealthy or crashing commit
//! fails at activate with the old instance still serving; the gate waits for a slow boot; a
//! failed check after the switch rolls back.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::load::Connection;
use crate::support::systemd::Systemd;
use crate::support::user::TestUser;
use crate::support::{BIN, Output, TestEnv};

/// The app the test repository holds: `/health` and `/` (the commit its unit was given); the
/// file `mode` chooses a failure (`unhealthy`: `/health` answers 500; `crash`: import fails;
/// `slow-boot`: import takes 1.5 s).
const APP_PY: &str = r#"import os
import time

MODE = open("mode").read().strip() if os.path.exists("mode") else "ok"
if MODE == "crash":
    raise RuntimeError("app.py: this commit crashes on boot")
if MODE == "slow-boot":
    time.sleep(1.5)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        status = "500 Internal Server Error" if MODE == "unhealthy" else "200 OK"
        body = MODE.encode()
    else:
        status, body = "200 OK", os.environ.get("PUSHDEPLOY_COMMIT", "").encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// gunicorn's heartbeat files go to /dev/shm: the unit's `ProtectSystem=strict` leaves no
/// other writable temporary directory for a target under /tmp (no `PrivateTmp=` there).
const COMMAND: &str = "/usr/bin/gunicorn --worker-tmp-dir /dev/shm -b 127.0.0.1:$PORT app:app";

/// A target set up with `init --app` inside a booted systemd, and the app user.
struct AppSite {
    env: TestEnv,
    systemd: Systemd,
    _user: TestUser,
    blue: u16,
    green: u16,
}

/// Returns two different loopback ports that were free a moment ago.
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}

impl AppSite {
    /// Boots systemd, runs `init --app` inside it with a 10 s health deadline, clones the work
    /// tree; `None` (skipped) without root, systemd or gunicorn.
    fn new(user_prefix: &str) -> Option<AppSite> {
        if !Path::new("/usr/bin/gunicorn").exists() {
            crate::support::skip("no /usr/bin/gunicorn (Debian's gunicorn package)");
            return None;
        }
        let env = TestEnv::new();
        // The app user reads its release through the test's directory.
        fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        let systemd = Systemd::boot(&env)?;
        let user = TestUser::create(&env, user_prefix);
        let (blue, green) = free_ports();
        let _ = systemd
            .run(&env, BIN)
            .arg("init")
            .arg(&env.bare)
            .arg("--target")
            .arg(&env.target)
            .args(["--app", "--app-command", COMMAND, "--app-user", &user.name])
            .arg("--ports")
            .arg(format!("{blue},{green}"))
            .arg("--unit-dir")
            .arg(systemd.unit_dir())
            .success();
        let config = fs::read_to_string(env.bare.join("pushdeploy.toml")).expect("read config");
        assert!(config.contains("deadline = \"60s\""), "{config}");
        env.write_config(&config.replace("deadline = \"60s\"", "deadline = \"10s\""));
        let reload = systemd.systemctl(&["daemon-reload"]);
        assert!(reload.status.success(), "{reload}");
        env.clone_work();
        env.write("app.py", APP_PY);
        Some(AppSite { env, systemd, _user: user, blue, green })
    }

    /// Commits the app with `mode` (`ok`, `unhealthy`, `crash`); returns the commit.
    fn commit(&self, mode: &str, message: &str) -> String {
        self.env.write("mode", format!("{mode}\n"));
        self.env.write("version", format!("{message}\n"));
        self.env.commit_all(message)
    }

    /// Pushes `main` from inside the namespace, where the hook's systemctl reaches systemd.
    fn push(&self) -> Output {
        self.systemd
            .run_in(&self.env, &self.env.work, "git")
            .args(["push", "origin", "main"])
            .success()
    }

    fn unit(&self, slot: &str) -> String {
        format!("pushdeploy-www@{slot}.service")
    }

    /// Returns `systemctl is-active` of a slot's instance.
    fn state(&self, slot: &str) -> String {
        self.systemd.systemctl(&["is-active", &self.unit(slot)]).stdout.trim().to_owned()
    }

    /// Asserts `pushdeploy status --json` says `slot` is live with `commit`.
    #[track_caller]
    fn assert_status(&self, slot: &str, commit: &str) {
        let output = self
            .env
            .pushdeploy()
            .args(["status", "--json", "--repo"])
            .arg(&self.env.bare)
            .success();
        let status: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
        assert_eq!(
            (status["slot"].as_str(), status["commit"].as_str()),
            (Some(slot), Some(commit))
        );
    }

    /// Asserts a slot's instance answers `/` with `commit`.
    #[track_caller]
    fn assert_serves(&self, port: u16, commit: &str) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let response = Connection::new(addr, Duration::from_secs(5))
            .get("/")
            .unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8_lossy(&response.body), commit, "port {port}");
    }
}

#[test]
fn an_app_push_gates_its_instance_then_stops_the_old_one_and_failures_keep_it_serving() {
    let Some(site) = AppSite::new("pdappd1-") else { return };
    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    assert!(first.stderr.contains("health gate: pushdeploy-www@blue.service answered HTTP 200"));
    site.assert_serves(site.blue, &a);
    assert_eq!(site.state("blue"), "active");

    let b = site.commit("ok", "b");
    let second = site.push();
    second.assert_live(&b, "refs/heads/main", "green");
    let gate = second.pushdeploy_lines().into_iter().find(|l| l.contains("health gate: "));
    eprintln!("second deploy: {gate:?}; {}", second.final_line());
    assert!(second.stderr.contains("stopped the old instance pushdeploy-www@blue.service"));
    site.assert_serves(site.green, &b);
    assert_eq!(site.state("blue"), "inactive", "{}", site.systemd.journal(&site.unit("blue")));
    assert_eq!(site.env.link_target(), Path::new("green"));
    site.assert_status("green", &b);

    // Green serves b throughout both failed deploys: not one request refused or wrong.
    let watcher = Watcher::start(site.green, b.clone());

    // /health answers 500: the gate fails at the deadline (10 s), blue is stopped again.
    let _ = site.commit("unhealthy", "unhealthy");
    let unhealthy = site.push();
    let line = unhealthy.final_line();
    assert!(line.starts_with("pushdeploy: failed at activate: health gate: "), "{unhealthy}");
    assert!(line.contains("did not answer 2xx within 10s (last answer: HTTP 500)"), "{line}");
    assert_eq!(site.state("blue"), "inactive");
    site.assert_serves(site.green, &b);
    assert_eq!(site.env.link_target(), Path::new("green"));

    // The app crashes on boot: systemd says so long before the deadline.
    let _ = site.commit("crash", "crash");
    let started = Instant::now();
    let crash = site.push();
    let took = started.elapsed();
    eprintln!("a push of a commit that crashes on boot failed after {took:?}\n{crash}");
    assert!(took < Duration::from_secs(3), "took {took:?}\n{crash}");
    let line = crash.final_line();
    assert!(line.starts_with("pushdeploy: failed at activate: health gate: "), "{crash}");
    assert!(line.contains("pushdeploy-www@blue.service stopped "), "{line}");
    assert!(line.contains(" after its start, before http://127.0.0.1:"), "{line}");
    assert!(
        crash.stderr.contains("pushdeploy: pushdeploy-www@blue.service: ")
            && crash.stderr.contains("this commit crashes on boot"),
        "the journal's tail is not shown\n{crash}"
    );
    assert_eq!(site.state("blue"), "inactive");
    site.assert_serves(site.green, &b);
    assert_eq!(site.env.link_target(), Path::new("green"));
    assert!(!site.env.target.join("blue").exists(), "the failed release was not discarded");
    site.assert_status("green", &b);
    let (answered, failures) = watcher.stop();
    eprintln!("green answered {answered} requests during the failed deploys");
    assert!(answered > 50 && failures.is_empty(), "{answered} answered, failures: {failures:?}");
}

/// GETs `/` on one port every 20 ms in a thread, expecting 200 with one body each time.
struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl Watcher {
    fn start(port: u16, body: String) -> Watcher {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let (mut answered, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match Connection::new(addr, Duration::from_secs(5)).get("/") {
                    Ok(r) if r.status == 200 && r.body == body.as_bytes() => answered += 1,
                    Ok(r) => failures.push(format!("{} {:?}", r.status, r.body)),
                    Err(err) => failures.push(err.to_string()),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (answered, failures)
        });
        Watcher { stop, thread }
    }

    /// Stops the thread; returns how many requests were answered right, and what went wrong.
    fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the watcher thread panicked")
    }
}

#[test]
fn the_gate_waits_for_a_slow_boot_and_a_failed_check_rolls_back_to_the_old_instance() {
    let Some(site) = AppSite::new("pdappd2-") else { return };
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");

    // An app that takes 1.5 s to boot: the gate waits for it (each GET cut at 1 s).
    let slow = site.commit("slow-boot", "slow");
    let pushed = site.push();
    pushed.assert_live(&slow, "refs/heads/main", "green");
    let gate = pushed.pushdeploy_lines().into_iter().find(|l| l.contains("health gate: "));
    eprintln!("slow boot: {gate:?}");
    site.assert_serves(site.green, &slow);
    assert_eq!(site.state("blue"), "inactive");
    let a = site.commit("ok", "a again");
    site.push().assert_live(&a, "refs/heads/main", "blue");

    // Nothing listens on the check's port: the check fails after the switch.
    let (dead, _) = free_ports();
    let config = fs::read_to_string(site.env.bare.join("pushdeploy.toml")).expect("config");
    site.env.write_config(&format!("{config}\n[app.check]\nurl = \"http://127.0.0.1:{dead}/\"\n"));
    let b = site.commit("ok", "b");
    let pushed = site.push();
    let line = pushed.final_line();
    assert!(
        line.starts_with("pushdeploy: failed at activate: check through the proxy: "),
        "{pushed}"
    );
    assert!(line.contains("rolled back to blue"), "{line}");
    assert_eq!(site.env.link_target(), Path::new("blue"));
    site.assert_serves(site.blue, &a);
    assert_eq!(site.state("blue"), "active");
    assert_eq!(site.state("green"), "inactive");
    let history = crate::support::history::history(&site.env);
    let last = history.iter().find(|entry| entry["commit"] == b.as_str()).expect("b's entry");
    assert_eq!(last["result"], "failed", "{last}");
    assert_eq!(last["failed_stage"], "activate", "{last}");
    assert!(last["error"].as_str().is_some_and(|e| e.contains("rolled back")), "{last}");
}
