//! The real-systemd harness itself (`support::systemd`): a manager boots in its namespace in
//! well under the bound, runs a template unit whose server the test reaches over loopback,
//! keeps its journal, leaves nothing behind when dropped and never touches the host's /tmp.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use crate::support::load::Connection;
use crate::support::systemd::Systemd;

/// A tiny HTTP server per instance: the port comes from `ROOT/<instance>.env`.
const APP_UNIT: &str = "[Unit]
Description=pushdeploy harness test app %i
[Service]
EnvironmentFile=@ROOT@/%i.env
ExecStart=/usr/bin/python3 -u -m http.server --bind 127.0.0.1 --directory @ROOT@/%i ${PORT}
";

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Returns the host pids whose command line contains `needle` (a unique port, here).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

/// GETs `/index.html` from 127.0.0.1:`port` until it answers (5 s at most).
#[track_caller]
fn get_when_up(port: u16) -> Vec<u8> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Connection::new(addr, Duration::from_secs(2)).get("/index.html") {
            Ok(response) => {
                assert_eq!(response.status, 200, "GET /index.html: {response:?}");
                return response.body;
            }
            Err(err) if Instant::now() > deadline => panic!("no answer on {addr}: {err}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn systemd_runs_a_template_unit_and_leaves_nothing_behind() {
    // A file of the host's /tmp: a boot that ran tmpfiles on the shared /tmp would remove it.
    let canary =
        tempfile::Builder::new().prefix("pd-systemd-canary-").tempfile_in("/tmp").expect("canary");
    let env = TestEnv::new();
    let started = Instant::now();
    let Some(systemd) = Systemd::boot(&env) else { return };
    let boot_time = started.elapsed();
    assert!(boot_time < Duration::from_secs(5), "boot took {boot_time:?}\n{}", systemd.logs());
    eprintln!("systemd answered {boot_time:?} after the launch");
    let init = systemd.init_pid();

    let port = free_port();
    fs::create_dir(env.root.join("blue")).expect("create blue/");
    fs::write(env.root.join("blue/index.html"), "blue instance\n").expect("write index.html");
    fs::write(env.root.join("blue.env"), format!("PORT={port}\n")).expect("write blue.env");
    let unit = APP_UNIT.replace("@ROOT@", &env.root.to_string_lossy());
    systemd.write_unit("pdtest-app@.service", &unit);
    let reload = systemd.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "{reload}");
    let start = systemd.systemctl(&["start", "pdtest-app@blue.service"]);
    assert!(start.status.success(), "{start}\n{}", systemd.logs());
    assert_eq!(get_when_up(port), b"blue instance\n");
    let active = systemd.systemctl(&["is-active", "pdtest-app@blue.service"]);
    assert_eq!(active.stdout.trim(), "active", "{active}");

    let journal = systemd.journal("pdtest-app@blue.service");
    assert!(journal.contains(&format!("Serving HTTP on 127.0.0.1 port {port}")), "{journal}");
    assert!(journal.contains("\"GET /index.html HTTP/1.1\" 200"), "{journal}");
    // The unit's files are inside only: the host's /run is not the namespace's.
    assert!(!Path::new("/run/systemd/system/pdtest-app@.service").exists());
    assert!(!Path::new("/run/systemd/system/pdtest.target").exists());

    let stop = systemd.systemctl(&["stop", "pdtest-app@blue.service"]);
    assert!(stop.status.success(), "{stop}");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert!(
        Connection::new(addr, Duration::from_secs(2)).get("/index.html").is_err(),
        "the stopped instance still answers on {addr}"
    );

    // Started again, then left running: dropping the guard must take it down.
    let again = systemd.systemctl(&["start", "pdtest-app@blue.service"]);
    assert!(again.status.success(), "{again}");
    assert_eq!(get_when_up(port), b"blue instance\n");
    let needle = format!("--bind 127.0.0.1 --directory {}/blue {port}", env.root.display());
    assert_eq!(processes_with(&needle).len(), 1, "one server process for the instance");
    drop(systemd);

    assert!(!Path::new(&format!("/proc/{init}")).exists(), "PID 1 {init} outlived the guard");
    assert_eq!(processes_with(&needle), Vec::<u32>::new(), "the app outlived the guard");
    assert!(canary.path().exists(), "the host's /tmp lost {}", canary.path().display());
    assert!(env.root.join("blue/index.html").exists(), "the test's own directory lost files");
}

#[test]
fn commands_run_inside_see_the_test_directory_and_a_private_tmp() {
    let canary =
        tempfile::Builder::new().prefix("pd-systemd-canary-").tempfile_in("/tmp").expect("canary");
    let env = TestEnv::new();
    let Some(systemd) = Systemd::boot(&env) else { return };
    fs::write(env.root.join("note"), "from the host\n").expect("write note");

    let pwd = systemd.run(&env, "pwd").success();
    assert_eq!(pwd.stdout.trim(), env.root.to_string_lossy());
    let note = systemd.run(&env, "cat").arg("note").success();
    assert_eq!(note.stdout, "from the host\n");
    let canary_inside = systemd.run(&env, "test").arg("-e").arg(canary.path()).output();
    assert_eq!(canary_inside.code(), Some(1), "the host's /tmp is visible inside\n{canary_inside}");
    // PID 1 inside is systemd; the command itself is in the namespace's pid numbering.
    let comm = systemd.run(&env, "cat").arg("/proc/1/comm").success();
    assert_eq!(comm.stdout.trim(), "systemd");
    // pushdeploy itself runs inside (pushes and deploys will).
    let _ = systemd.run(&env, crate::support::BIN).arg("--version").success();
    drop(systemd);
    assert!(canary.path().exists(), "the host's /tmp lost {}", canary.path().display());
}

#[test]
fn systemd_analyze_verify_accepts_a_good_unit_and_refuses_a_broken_one() {
    let env = TestEnv::new();
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        crate::support::skip("no systemd-analyze (Debian's systemd package)");
        return;
    }
    let good = env.root.join("good-app.service");
    fs::write(&good, "[Service]\nExecStart=/usr/bin/python3 -m http.server\n").expect("write");
    let _ = env.command("systemd-analyze").arg("verify").arg(&good).success();

    let broken = env.root.join("broken-app.service");
    fs::write(&broken, "[Service]\nExecStart=/nonexistent/app\n").expect("write");
    let output = env.command("systemd-analyze").arg("verify").arg(&broken).failure();
    assert!(
        output.stderr.contains("Command /nonexistent/app is not executable"),
        "verify gave no reason\n{output}"
    );
}
