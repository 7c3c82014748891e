//! The strategies other than blue-green (`[app] strategy`), under the test's real systemd with
//! Debian's gunicorn: `restart` behind Caddy, whose `lb_try_duration` holds requests while the
//! one instance restarts; `socket`, where `pushdeploy-www.socket` owns the port and both
//! slots' instances take it, with no proxy at all; `reload`, where gunicorn's USR2 re-exec
//! loads the new release in place. Each is pushed under load, with no failed request. And
//! `restart` as a non-root git user: its sudo rules, a deploy SIGKILLed mid-swap, `rollback`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::support::app::{APP_PY, AppSite, free_ports};
use crate::support::caddy::CaddySite;
use crate::support::load::{Connection, LoadChecker, LoadOptions, LoadReport, Mode, Versions};

/// gunicorn as the strategies run it: `exec`, so that gunicorn is the unit's main process
/// (systemd passes sockets to, and `$MAINPID` names, that process, not `/bin/sh`).
const EXEC_GUNICORN: &str =
    "exec /usr/bin/gunicorn --threads 8 --graceful-timeout 5 --worker-tmp-dir /dev/shm";

/// The load of these tests: three keep-alive clients on `/` and one on `/slow` (1.5 s each).
struct Load {
    versions: Versions,
    slow_versions: Versions,
    requests: LoadChecker,
    slow: LoadChecker,
}

impl Load {
    #[track_caller]
    fn start(front: SocketAddr, live: &str) -> Load {
        let (versions, slow_versions) = (Versions::new(), Versions::new());
        versions.add(0, "/", live.as_bytes());
        slow_versions.add(0, "/slow", live.as_bytes());
        let bounded = |connections, pause| LoadOptions {
            connections,
            max_requests: 400_000,
            max_duration: Duration::from_secs(300),
            timeout: Duration::from_secs(20),
            pause,
        };
        let requests = LoadChecker::start(
            front,
            Mode::Requests { versions: versions.clone() },
            bounded(3, Duration::from_millis(2)),
        );
        let slow = LoadChecker::start(
            front,
            Mode::Requests { versions: slow_versions.clone() },
            bounded(1, Duration::ZERO),
        );
        assert!(requests.wait_for_requests(20, Duration::from_secs(10)), "no load on {front}");
        Load { versions, slow_versions, requests, slow }
    }

    /// Adds deploy `number`'s commit to what the clients accept (not live yet).
    fn add(&self, number: u64, commit: &str) {
        self.versions.add(number, "/", commit.as_bytes());
        self.slow_versions.add(number, "/slow", commit.as_bytes());
    }

    fn set_live(&self, number: u64) {
        self.versions.set_live(number);
        self.slow_versions.set_live(number);
    }

    /// Stops the clients once the last `/slow` had time to finish; asserts that no request
    /// failed, none was answered by a release older than the live one, and at least
    /// `min_slow` `/slow` requests were made (enough to have had some in flight at a swap).
    #[track_caller]
    fn stop(self, what: &str, min_slow: u64) -> (LoadReport, LoadReport) {
        std::thread::sleep(Duration::from_millis(1600));
        let (requests, slow) = (self.requests.stop(), self.slow.stop());
        eprintln!("{what}:\n  keep-alive clients: {requests}\n  /slow client: {slow}");
        for (clients, report) in [("keep-alive", &requests), ("/slow", &slow)] {
            assert_eq!(
                (report.failed(), report.wrong_bodies, report.stale_bodies),
                (0, 0, 0),
                "{what}: {clients} clients: failed, wrong, stale\n{report}"
            );
            assert!(report.limit_reached.is_none(), "{what}: {clients}: {report}");
        }
        assert!(slow.requests >= min_slow, "{what}: too few /slow requests to tell\n{slow}");
        (requests, slow)
    }
}

/// GETs `/` on `addr`: the status, the body and the `X-Pushdeploy-Commit` header.
fn get(addr: SocketAddr) -> (u16, String, Option<String>) {
    let response = Connection::new(addr, Duration::from_secs(5))
        .get("/")
        .unwrap_or_else(|e| panic!("GET / on {addr}: {e}"));
    let commit = response.header("x-pushdeploy-commit").map(str::to_owned);
    (response.status, String::from_utf8_lossy(&response.body).into_owned(), commit)
}

/// Returns `systemctl is-active` of `unit`.
fn active(site: &AppSite, unit: &str) -> String {
    site.systemd.systemctl(&["is-active", unit]).stdout.trim().to_owned()
}

fn other(slot: &str) -> &'static str {
    if slot == "blue" { "green" } else { "blue" }
}

#[test]
fn restart_behind_caddy_holds_every_request_through_twenty_restarts() {
    let (port, _) = free_ports();
    let command = format!("{EXEC_GUNICORN} -b 127.0.0.1:$PORT app:app");
    let args = ["--strategy", "restart", "--ports", &port.to_string(), "--app-command", &command];
    let Some(caddy) = CaddySite::with_init("pdstrat1-", &args) else { return };
    let site = &caddy.site;
    let snippet = std::fs::read_to_string(site.env.target.join(".pushdeploy/proxy/upstream.caddy"))
        .expect("snippet");
    for line in [
        format!("reverse_proxy 127.0.0.1:{port} {{"),
        "\tlb_try_duration 60s".to_owned(),
        "\thealth_uri /health".to_owned(),
    ] {
        assert!(snippet.lines().any(|l| l == line), "no {line:?} in\n{snippet}");
    }
    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    let (status, body, _) = caddy.get();
    assert_eq!((status, body.as_str()), (200, a.as_str()));
    assert_eq!(active(site, "pushdeploy-www.service"), "active");

    let load = Load::start(caddy.front, &a);
    let started = Instant::now();
    let mut slot = "blue";
    let mut longest_restart = 0f64;
    for number in 1..=20u64 {
        let commit = site.commit("ok", &format!("v{number}"));
        load.add(number, &commit);
        let pushed = site.push();
        slot = other(slot);
        pushed.assert_live(&commit, "refs/heads/main", slot);
        load.set_live(number);
        assert!(pushed.stderr.contains("health gate: pushdeploy-www.service answered HTTP 200"));
        // The gate's time runs from `systemctl restart` (the old instance's stop, then the new
        // one's boot) to its first 2xx: the window Caddy holds requests through.
        let restart = pushed.pushdeploy_lines().iter().find_map(|line| {
            let after = line.split("pushdeploy-www.service answered HTTP 200 after ").nth(1)?;
            after.trim_end_matches(" s").parse::<f64>().ok()
        });
        longest_restart = longest_restart.max(restart.unwrap_or_default());
        assert_eq!(active(site, "pushdeploy-www.service"), "active");
        for instance in ["blue", "green"] {
            assert_eq!(active(site, &site.unit(instance)), "inactive", "push {number}");
        }
        if number == 1 {
            eprintln!("{}", pushed.pushdeploy_lines().join("\n"));
        }
    }
    let took = started.elapsed();
    let (requests, slow) = load.stop("restart behind Caddy, 20 pushes", 5);
    eprintln!(
        "restart behind Caddy: 20 pushes in {took:.1?}; {} + {} requests, 0 failed; max latency \
         {:.3?} (keep-alive clients), {:.3?} (/slow, 1.5 s of which is the app's); longest \
         restart (stop, boot, first 2xx) {longest_restart:.2} s",
        requests.requests, slow.requests, requests.max_latency, slow.max_latency
    );

    // A release whose health answers 500: the gate fails, the previous release is restarted.
    let live = site.env.link_target().display().to_string();
    let (_, before, _) = caddy.get();
    let _ = site.commit("unhealthy", "unhealthy");
    let failed = site.push();
    let line = failed.assert_failed_at("activate");
    assert!(line.contains("health gate: "), "{failed}");
    assert!(line.contains("restarted pushdeploy-www.service on the previous release"), "{line}");
    assert_eq!(site.env.link_target().display().to_string(), live);
    assert_eq!(caddy.get().1, before);

    let status = site.systemd.run(&site.env, crate::support::BIN).args(["status", "--repo"]);
    let status = status.arg(&site.env.bare).success();
    let expected = format!(
        "app:    pushdeploy-www.service on 127.0.0.1:{port} (active/running, restart strategy, release in {live})"
    );
    assert!(status.stdout.lines().any(|l| l == expected), "{expected:?}\n{status}");
}

#[test]
fn socket_activation_needs_no_proxy_and_refuses_no_connection_through_twenty_deploys() {
    let (listen, _) = free_ports();
    let listen_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, listen));
    // No -b: gunicorn serves every socket systemd passes (LISTEN_FDS): the shared one and
    // the slot's own, on which the gate asks /health.
    let command = format!("{EXEC_GUNICORN} app:app");
    let listen_arg = listen_addr.to_string();
    let args = ["--strategy", "socket", "--listen", &listen_arg, "--app-command", &command];
    let Some(site) = AppSite::with_init("pdstrat2-", &args) else { return };
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(get(listen_addr).1, a);
    assert_eq!(active(&site, "pushdeploy-www.socket"), "active");

    let load = Load::start(listen_addr, &a);
    let mut slot = "blue";
    let started = Instant::now();
    for number in 1..=20u64 {
        let commit = site.commit("ok", &format!("v{number}"));
        load.add(number, &commit);
        let pushed = site.push();
        let new = other(slot);
        pushed.assert_live(&commit, "refs/heads/main", new);
        load.set_live(number);
        assert_eq!(
            (site.state(new).as_str(), site.state(slot).as_str()),
            ("active", "inactive"),
            "push {number}: exactly the new instance must run\n{pushed}"
        );
        slot = new;
    }
    let took = started.elapsed();

    // /health answers 500: the gate fails, the new instance stops, the old one still serves.
    // Until then the new instance took connections from the shared socket too (it answers
    // `/` with its commit): a known cost of the socket strategy, counted, not failed.
    let unhealthy = site.commit("unhealthy", "unhealthy");
    load.add(21, &unhealthy);
    let failed = site.push();
    let line = failed.assert_failed_at("activate");
    assert!(line.contains("health gate: "), "{failed}");
    assert_eq!(site.state(other(slot)), "inactive");
    assert_eq!(site.state(slot), "active");
    let (requests, slow) = load.stop("socket activation, 20 pushes and a failed gate", 5);
    eprintln!(
        "socket, no proxy: 20 pushes in {took:.1?}; {} + {} requests, 0 refused or failed; max \
         latency {:.3?} (keep-alive clients), {:.3?} (/slow)",
        requests.requests, slow.requests, requests.max_latency, slow.max_latency
    );
    let live_commit = get(listen_addr).1;
    assert_ne!(live_commit, unhealthy);
    for _ in 0..20 {
        assert_eq!(get(listen_addr).1, live_commit, "the failed release still answers");
    }

    let status = site.systemd.run(&site.env, crate::support::BIN).args(["status", "--repo"]);
    let status = status.arg(&site.env.bare).success();
    let expected = format!(
        "socket: pushdeploy-www.socket on {listen_addr} (active/running), shared by both slots' instances"
    );
    assert!(status.stdout.lines().any(|l| l == expected), "{expected:?}\n{status}");
}

/// gunicorn 20.1's zero-downtime upgrade as `[app] reload` runs it (README, "reload"): USR2
/// starts a new master from the release the link names; with `--preload` it writes
/// `PIDFILE.2` only once it loaded the app. Then systemd is told the new main PID (PIDFile=)
/// and the old master stops gracefully (TERM: QUIT would cut requests in flight); the reload
/// ends once it has exited, so only the new code answers after it. A new master that exits
/// first (the app failed to import) fails the reload.
const RELOAD_SH: &str = r#"set -u
old=$MAINPID
pid=$RUNTIME_DIRECTORY/gunicorn.pid
children() { cat /proc/$old/task/$old/children 2>/dev/null; }
# A master started by the last reload takes USR2 only once its parent has exited and it has
# renamed its PIDFILE.2 to PIDFILE ("promoted"): wait for that first.
i=0
until [ "$(cat "$pid" 2>/dev/null)" = "$old" ]; do
  i=$((i + 1))
  [ $i -lt 600 ] || { echo "reload: $old never became gunicorn's only master" >&2; exit 1; }
  sleep 0.05
done
before=" $(children) "
rm -f "$pid.2"
kill -USR2 "$old" || exit 1
new=
i=0
while [ $i -lt 600 ]; do
  i=$((i + 1))
  if [ -s "$pid.2" ]; then
    cat "$pid.2" >"$RUNTIME_DIRECTORY/main.pid"
    kill -TERM "$old"
    # Return once only the new code answers: the old workers finish what they have in flight.
    while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
    exit 0
  fi
  if [ -z "$new" ]; then
    for child in $(children); do
      case "$before" in *" $child "*) ;; *) new=$child ;; esac
    done
  elif ! kill -0 "$new" 2>/dev/null; then
    echo "reload: the new gunicorn master (pid $new) exited before it loaded the app" >&2
    exit 1
  fi
  sleep 0.05
done
echo "reload: no new gunicorn master after 30 s" >&2
exit 1
"#;

#[test]
fn reload_with_gunicorn_serves_the_new_commit_and_a_failed_reload_or_gate_keeps_the_old_code() {
    let (port, _) = free_ports();
    let command = format!(
        "{EXEC_GUNICORN} --preload --pid $RUNTIME_DIRECTORY/gunicorn.pid --chdir $PUSHDEPLOY_DIR -b 127.0.0.1:$PORT app:app"
    );
    let port_arg = port.to_string();
    let args = [
        "--strategy",
        "reload",
        "--ports",
        &port_arg,
        "--app-command",
        &command,
        "--app-reload",
        "sh reload.sh",
    ];
    let Some(site) = AppSite::with_init("pdstrat3-", &args) else { return };
    // A reloaded gunicorn keeps the environment of its first start: the release names its
    // commit in a file the build writes.
    site.edit_config(|config| {
        format!("{config}\n[build]\ncommand = \"echo $PUSHDEPLOY_COMMIT > COMMIT\"\nallow_no_index = true\n")
    });
    site.env.write(
        "app.py",
        APP_PY.replace(
            "COMMIT = os.environ.get(\"PUSHDEPLOY_COMMIT\", \"\")",
            "COMMIT = open(\"COMMIT\").read().strip()",
        ),
    );
    site.env.write("reload.sh", RELOAD_SH);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let unit = "pushdeploy-www.service";
    let main_pid = || site.systemd.systemctl(&["show", "-p", "MainPID", "--value", unit]).stdout;

    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(get(addr), (200, a.clone(), Some(a.clone())));

    // Two reloads under load: the new commit answers after each, no request fails.
    let load = Load::start(addr, &a);
    let mut slot = "blue";
    let mut last = a.clone();
    for number in 1..=2u64 {
        let pid_before = main_pid();
        let commit = site.commit("ok", &format!("v{number}"));
        load.add(number, &commit);
        let pushed = site.push();
        slot = other(slot);
        pushed.assert_live(&commit, "refs/heads/main", slot);
        load.set_live(number);
        assert!(pushed.stderr.contains(&format!(
            "health gate: {unit} answered HTTP 200 from {} after its reload",
            &commit[..7]
        )));
        assert_eq!(get(addr), (200, commit.clone(), Some(commit.clone())));
        assert_eq!(active(&site, unit), "active");
        assert_ne!(main_pid(), pid_before, "systemd does not follow the new master");
        eprintln!("{}", pushed.pushdeploy_lines().join("\n"));
        last = commit;
    }

    // The release fails to import: the new master exits, the reload fails, the old one (never
    // stopped) serves on.
    let _ = site.commit("crash", "crash");
    let failed = site.push();
    let line = failed.assert_failed_at("activate");
    assert!(line.contains("reload: "), "{failed}");
    assert!(line.contains("kept running the previous release"), "{line}");
    assert!(failed.stderr.contains("this commit crashes on boot"), "{failed}");
    assert_eq!(get(addr), (200, last.clone(), Some(last.clone())));
    assert_eq!(active(&site, unit), "active");
    let (requests, slow) = load.stop("reload, 2 reloads and a failed one", 2);
    eprintln!(
        "reload: {} + {} requests, 0 failed; max latency {:.3?} (keep-alive), {:.3?} (/slow)",
        requests.requests, slow.requests, requests.max_latency, slow.max_latency
    );

    // The release loads but its health answers 500: the reload succeeded, the gate fails at
    // its deadline, and the previous release is reloaded again.
    let _ = site.commit("unhealthy", "unhealthy");
    let failed = site.push();
    let line = failed.assert_failed_at("activate");
    assert!(line.contains("health gate: "), "{failed}");
    assert!(line.contains("reloaded pushdeploy-www.service on the previous release"), "{line}");
    assert_eq!(get(addr), (200, last.clone(), Some(last.clone())));

    // And the next good push reloads again.
    let c = site.commit("ok", "c");
    site.push().assert_live(&c, "refs/heads/main", other(slot));
    assert_eq!(get(addr), (200, c.clone(), Some(c)));

    // A secret cannot reach a reloaded app: `env set` writes it and says to restart.
    let set = site.systemd.run_as_root(&site.env, crate::support::BIN);
    let set = set.args(["env", "set", "TOKEN=x", "--repo"]).arg(&site.env.bare).success();
    let line = "pushdeploy: the reload strategy keeps the environment pushdeploy-www.service started with: `systemctl restart pushdeploy-www.service` applies it (a short outage)";
    assert!(set.pushdeploy_lines().iter().any(|l| l == line), "{set}");
    assert!(!set.stderr.contains("deploying"), "{set}");
}

#[test]
fn restart_as_the_git_user_converges_after_a_deploy_killed_mid_swap_and_rolls_back() {
    let (port, _) = free_ports();
    let command = format!("{EXEC_GUNICORN} -b 127.0.0.1:$PORT app:app");
    let port_arg = port.to_string();
    let args = ["--strategy", "restart", "--ports", &port_arg, "--app-command", &command];
    let Some(site) = AppSite::with_git_user("pdstrat4-", "pdgit4-", &args) else { return };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(get(addr).1, a);

    // SIGKILL the hook's pushdeploy once it moved the one instance's link onto green (its
    // restart under way): the live link still says blue.
    let _ = site.commit("ok", "b");
    let progress = site.env.target.join(".pushdeploy/app/progress.json");
    let current = site.env.target.join(".pushdeploy/current");
    let push =
        site.systemd.run_in(&site.env, &site.env.work, "git").args(["push", "origin", "main"]);
    let mut push = push.spawn();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(30) && !killed {
        if push.try_wait().expect("wait for git push").is_some() {
            break;
        }
        let step = std::fs::read_to_string(&progress).unwrap_or_default();
        let moved =
            std::fs::read_link(&current).is_ok_and(|to| to == std::path::Path::new("../green"));
        let pids = crate::app_crashes::hook_pids(site.systemd.init_pid());
        if step.contains("\"step\":\"swap\"") && moved && !pids.is_empty() {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = push.wait();
    assert!(killed, "the deploy ended before its swap step");
    // The instance's restart goes on without pushdeploy: something answers on the port.
    let deadline = Instant::now() + Duration::from_secs(10);
    let serving = loop {
        let answer = Connection::new(addr, Duration::from_secs(2)).get("/");
        if answer.as_ref().is_ok_and(|r| r.status == 200) || Instant::now() > deadline {
            break answer.map(|r| r.status);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(serving.ok(), Some(200), "nothing serves after the kill");
    assert_eq!(site.env.link_target(), std::path::Path::new("blue"));

    // The next push first puts the one instance back on the live release, then deploys.
    let c = site.commit("ok", "c");
    let next = site.push();
    next.assert_live(&c, "refs/heads/main", "green");
    eprintln!("{}", next.pushdeploy_lines().join("\n"));
    assert!(
        next.stderr
            .contains("was interrupted while moving the app's instance onto the new release"),
        "{next}"
    );
    assert!(
        next.stderr.contains(
            "pushdeploy-www.service was left on another release than the live one (blue): restarting it there"
        ),
        "{next}"
    );
    assert_eq!(get(addr), (200, c.clone(), Some(c.clone())));
    assert_eq!(active(&site, "pushdeploy-www.service"), "active");

    // `rollback` restarts the one instance on the previous release (deployed again).
    let rollback = site.systemd.run(&site.env, crate::support::BIN).args(["rollback", "--repo"]);
    let rollback = rollback.arg(&site.env.bare).success();
    rollback.assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(get(addr), (200, a.clone(), Some(a.clone())));

    // `status` as the git user asks systemd through the same rules.
    let status = site.systemd.run(&site.env, crate::support::BIN).args(["status", "--repo"]);
    let status = status.arg(&site.env.bare).success();
    let expected = format!(
        "app:    pushdeploy-www.service on 127.0.0.1:{port} (active/running, restart strategy, release in blue)"
    );
    assert!(status.stdout.lines().any(|l| l == expected), "{expected:?}\n{status}");

    // `logs` as the git user shows the one unit's lines, marked `app`, through its rules.
    let logs = site.systemd.run(&site.env, crate::support::BIN).args(["logs", "-n", "300"]);
    let logs = logs.arg("--repo").arg(&site.env.bare).success();
    assert!(
        logs.stdout.lines().any(|l| l.starts_with("app   | ") && l.contains("Listening at: ")),
        "{logs}"
    );
}
