//! An app deploy's fixture: a target set up by `pushdeploy init --app` inside a real systemd
//! (support::systemd), the WSGI app the test repository holds (run by Debian's gunicorn), and a
//! watcher that GETs one instance while failed deploys run.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::load::Connection;
use super::systemd::Systemd;
use super::user::TestUser;
use super::{BIN, Output, TestEnv};

/// The app the test repository holds: `/health`, `/` (the commit its unit was given), `/slow`
/// (the same after 1.5 s), `/hold` (the same once the file `release-hold` is in the target,
/// after it printed `pushdeploy-test: holding` to the journal; at most 30 s: see
/// support::app_load::push_with_request_held); every answer names the commit in
/// `X-Pushdeploy-Commit`; `/env/NAME` answers the value of the environment variable NAME. The file
/// `mode` chooses a failure (`unhealthy`: `/health` answers 500; `crash`: import fails;
/// `slow-boot`: import takes 1.5 s; `not-ready`: `/ready` answers 503, the rest is healthy).
pub const APP_PY: &str = r#"import os
import sys
import time

MODE = open("mode").read().strip() if os.path.exists("mode") else "ok"
COMMIT = os.environ.get("PUSHDEPLOY_COMMIT", "")
if MODE == "crash":
    raise RuntimeError("app.py: this commit crashes on boot")
if MODE == "slow-boot":
    time.sleep(1.5)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/health":
        status = "500 Internal Server Error" if MODE == "unhealthy" else "200 OK"
        body = MODE.encode()
    elif path == "/ready":
        status = "503 Service Unavailable" if MODE == "not-ready" else "200 OK"
        body = MODE.encode()
    elif path.startswith("/env/"):
        status, body = "200 OK", os.environ.get(path[len("/env/"):], "").encode()
    else:
        if path == "/slow":
            time.sleep(1.5)
        if path == "/hold":
            print("pushdeploy-test: holding", file=sys.stderr, flush=True)
            deadline = time.time() + 30
            while not os.path.exists("../release-hold") and time.time() < deadline:
                time.sleep(0.02)
        status, body = "200 OK", COMMIT.encode()
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Pushdeploy-Commit", COMMIT),
    ]
    start_response(status, headers)
    return [body]
"#;

/// Threads, so that a `/slow` request holds one thread and not the instance. A graceful
/// timeout well below `stop_timeout` (30 s): gunicorn's threaded worker waits out a connection
/// a proxy opened and never used before it exits, and systemd would SIGKILL it first. gunicorn's
/// heartbeat files go to /dev/shm: the unit's `ProtectSystem=strict` leaves no other writable
/// temporary directory for a target under /tmp (no `PrivateTmp=` there).
pub const COMMAND: &str = "/usr/bin/gunicorn --threads 8 --graceful-timeout 5 --worker-tmp-dir /dev/shm -b 127.0.0.1:$PORT app:app";

/// The app's environment directory (`--env-dir`), on the namespace's private /run: root's, and
/// never the machine's /etc/pushdeploy.
pub const ENV_DIR: &str = "/run/pushdeploy/www";

/// The namespace's private sudoers include directory (support::systemd), where `init --app`
/// writes the git user's rules.
pub const SUDOERS_DIR: &str = "/etc/sudoers.d";

/// A target set up with `init --app` inside a booted systemd, and the app user.
pub struct AppSite {
    pub env: TestEnv,
    pub systemd: Systemd,
    #[allow(dead_code, reason = "the app user lives as long as the site; some tests name it")]
    pub user: TestUser,
    pub blue: u16,
    pub green: u16,
    /// The git user who owns the repository, the target and the work clone, when not root
    /// (see [`AppSite::with_git_user`]).
    #[allow(dead_code, reason = "only the permission tests have a git user")]
    pub git_user: Option<TestUser>,
}

/// Returns two different loopback ports that were free a moment ago.
pub fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}

impl AppSite {
    /// Boots systemd, runs `init --app` inside it with a 10 s health deadline, clones the work
    /// tree; `None` (skipped) without root, systemd or gunicorn.
    pub fn new(user_prefix: &str) -> Option<AppSite> {
        AppSite::with_init(user_prefix, &[])
    }

    /// [`AppSite::new`] with more options for `init` (`--proxy caddy`).
    pub fn with_init(user_prefix: &str, init_args: &[&str]) -> Option<AppSite> {
        let init_args: Vec<String> = init_args.iter().map(|arg| (*arg).to_owned()).collect();
        AppSite::with_init_by(user_prefix, |_| init_args)
    }

    /// [`AppSite::with_init`] with options made from the test's environment before init runs
    /// (paths in its directory, which they may create).
    pub fn with_init_by(
        user_prefix: &str,
        init_args: impl FnOnce(&TestEnv) -> Vec<String>,
    ) -> Option<AppSite> {
        AppSite::boot(user_prefix, None, init_args)
    }

    /// As [`AppSite::new`], but the repository, the target and the work clone belong to a git
    /// user of their own (`git_prefix` names it), who pushes and so runs the deploys, as in
    /// production: root runs `init --app`, which writes the git user's sudoers rules into the
    /// namespace's private `/etc/sudoers.d`; `init_args` as for [`AppSite::with_init`].
    /// `None` (skipped) without sudo too.
    #[allow(dead_code, reason = "only the permission tests have a git user")]
    pub fn with_git_user(
        user_prefix: &str,
        git_prefix: &str,
        init_args: &[&str],
    ) -> Option<AppSite> {
        if !Path::new("/usr/bin/sudo").exists() {
            crate::support::skip("no /usr/bin/sudo (Debian's sudo package)");
            return None;
        }
        let init_args: Vec<String> = init_args.iter().map(|arg| (*arg).to_owned()).collect();
        AppSite::boot(user_prefix, Some(git_prefix), |_| init_args)
    }

    fn boot(
        user_prefix: &str,
        git_prefix: Option<&str>,
        init_args: impl FnOnce(&TestEnv) -> Vec<String>,
    ) -> Option<AppSite> {
        if !Path::new("/usr/bin/gunicorn").exists() {
            crate::support::skip("no /usr/bin/gunicorn (Debian's gunicorn package)");
            return None;
        }
        let env = TestEnv::new();
        // The app user reads its release through the test's directory.
        fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        let user = TestUser::create(&env, user_prefix);
        let git_user = git_prefix.map(|prefix| TestUser::create(&env, prefix));
        let env = match &git_user {
            Some(git) => env.owned_by(git.uid, git.gid),
            None => env,
        };
        if git_user.is_some() {
            // What the operator makes as the git user before root runs init.
            let _ = env.command("git").args(["init", "--quiet", "--bare"]).arg(&env.bare).success();
            let _ = env.command("mkdir").arg(&env.target).success();
        }
        let systemd = Systemd::boot(&env)?;
        let (blue, green) = free_ports();
        let init_args = init_args(&env);
        let init = systemd
            .run_as_root(&env, BIN)
            .arg("init")
            .arg(&env.bare)
            .arg("--target")
            .arg(&env.target)
            .args(["--app", "--app-user", &user.name])
            .args(default_arg(&init_args, "--app-command", COMMAND.to_owned()))
            .args(default_arg(&init_args, "--ports", format!("{blue},{green}")))
            .arg("--unit-dir")
            .arg(systemd.unit_dir())
            .arg("--env-dir")
            .arg(ENV_DIR)
            .args(&init_args);
        let init =
            if git_user.is_some() { init.args(["--sudoers-dir", SUDOERS_DIR]) } else { init };
        let _ = init.success();
        let config = fs::read_to_string(env.bare.join("pushdeploy.toml")).expect("read config");
        assert!(config.contains("deadline = \"60s\""), "{config}");
        env.write_config(&config.replace("deadline = \"60s\"", "deadline = \"10s\""));
        let reload = systemd.systemctl(&["daemon-reload"]);
        assert!(reload.status.success(), "{reload}");
        env.clone_work();
        env.write("app.py", APP_PY);
        Some(AppSite { env, systemd, user, blue, green, git_user })
    }

    /// Rewrites the repository's `pushdeploy.toml` with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = fs::read_to_string(self.env.bare.join("pushdeploy.toml")).expect("config");
        self.env.write_config(&edit(config));
    }

    /// Commits the app with `mode` (`ok`, `unhealthy`, `crash`); returns the commit.
    pub fn commit(&self, mode: &str, message: &str) -> String {
        self.env.write("mode", format!("{mode}\n"));
        self.env.write("version", format!("{message}\n"));
        self.env.commit_all(message)
    }

    /// Pushes `main` from inside the namespace, where the hook's systemctl reaches systemd.
    pub fn push(&self) -> Output {
        self.systemd
            .run_in(&self.env, &self.env.work, "git")
            .args(["push", "origin", "main"])
            .success()
    }

    /// Returns where the test reaches the file `name` of the app's environment directory.
    pub fn env_file(&self, name: &str) -> std::path::PathBuf {
        self.systemd.host_path(Path::new(ENV_DIR).join(name))
    }

    pub fn unit(&self, slot: &str) -> String {
        format!("pushdeploy-www@{slot}.service")
    }

    /// Returns `systemctl is-active` of a slot's instance.
    pub fn state(&self, slot: &str) -> String {
        self.systemd.systemctl(&["is-active", &self.unit(slot)]).stdout.trim().to_owned()
    }

    /// Asserts `pushdeploy status --json` says `slot` is live with `commit`.
    #[track_caller]
    pub fn assert_status(&self, slot: &str, commit: &str) {
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
    pub fn assert_serves(&self, port: u16, commit: &str) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let response = Connection::new(addr, Duration::from_secs(5))
            .get("/")
            .unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8_lossy(&response.body), commit, "port {port}");
    }
}

/// Returns `[option, value]` unless the test's own options for init give `option`.
fn default_arg(init_args: &[String], option: &str, value: String) -> Vec<String> {
    if init_args.iter().any(|arg| arg == option) {
        Vec::new()
    } else {
        vec![option.to_owned(), value]
    }
}

/// GETs `/` on one port every 20 ms in a thread, expecting 200 with one body each time.
pub struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl Watcher {
    pub fn start(port: u16, body: String) -> Watcher {
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
    pub fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the watcher thread panicked")
    }
}
