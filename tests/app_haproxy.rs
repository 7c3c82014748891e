//! App deploys behind Debian's HAProxy (`[app.proxy] kind = "haproxy"`), run inside the test's
//! systemd with the operator config of site-templates/apps/haproxy.standalone.cfg: the runtime
//! API switches the servers (new one ready, old one drained, then in maintenance), the drain
//! waits for a request in flight, HAProxy's own reload keeps the live server (the state file),
//! 20 pushes under load fail no request; a failed gate, a crash and a failed check each leave
//! the old instance serving through HAProxy (the check's failure sets it back: `rolled-back`);
//! a socket that refuses the switch, or cannot be reached, fails the deploy with the old
//! instance serving. And what `init --proxy haproxy` writes and prints, and the operator
//! config, pass `haproxy -c`.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::TestEnv;
use crate::support::app_load::{failed_gates_under_load, push_under_load, push_with_request_held};
use crate::support::haproxy::HaproxySite;
use crate::support::history;
use crate::support::templates::template_dir;
use crate::support::user::TestUser;

/// Returns the seconds a deploy's line says after `label` (`drained in 1.23 s`).
fn seconds_after(lines: &[String], label: &str) -> Option<f64> {
    lines.iter().find_map(|line| line.split(label).nth(1)?.split(' ').next()?.parse().ok())
}

#[test]
fn haproxy_switches_servers_waits_for_a_request_in_flight_and_its_reload_keeps_the_live_one() {
    let Some(hap) = HaproxySite::new("pdhap1-") else { return };
    let site = &hap.site;
    // init wrote both servers in maintenance: nothing is served before the first deploy.
    assert_eq!(hap.states().iter().map(|s| s.2).collect::<Vec<_>>(), [1, 1]);
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    hap.assert_points_at("blue");
    assert_eq!(hap.get(), (200, a.clone(), Some("blue".to_owned())));

    // A request in flight to blue when green takes over: the drain waits for it (blue
    // answers it), and only then is blue set to maintenance and stopped.
    let b = site.commit("ok", "b");
    let started = Instant::now();
    let held = push_with_request_held(site, hap.front, "blue", &b);
    let took = started.elapsed();
    let pushed = &held.pushed;
    pushed.assert_live(&b, "refs/heads/main", "green");
    let answer = &held.answer;
    assert_eq!((answer.status, String::from_utf8_lossy(&answer.body)), (200, a.as_str().into()));
    let lines = pushed.pushdeploy_lines();
    let drained = seconds_after(&lines, "drained in ").unwrap_or_else(|| panic!("{pushed}"));
    eprintln!("haproxy: the push with /hold in flight took {took:?}, the drain {drained} s");
    assert!(drained >= 0.3, "blue was stopped with /hold still in flight\n{pushed}");
    hap.assert_points_at("green");
    assert_eq!(site.state("blue"), "inactive");
    assert_eq!(hap.get(), (200, b.clone(), Some("green".to_owned())));
    let saved = fs::read_to_string(&hap.state_file).expect("state file");
    assert!(saved.starts_with("1\n# be_id be_name srv_id srv_name "), "{saved}");
    assert_eq!(saved.lines().count(), 4, "{saved}");

    // HAProxy reloads (SIGUSR2 to its master, as `systemctl reload haproxy` does): from its
    // config alone both servers would be ready, blue (stopped) would fail every other request.
    hap.reload();
    hap.assert_points_at("green");
    for _ in 0..10 {
        assert_eq!(hap.get(), (200, b.clone(), Some("green".to_owned())));
    }

    // And back to blue: the next deploy goes through the reloaded HAProxy.
    let c = site.commit("ok", "c");
    let pushed = site.push();
    pushed.assert_live(&c, "refs/heads/main", "blue");
    hap.assert_points_at("blue");
    eprintln!("haproxy: third deploy\n{}", pushed.pushdeploy_lines().join("\n"));

    let load = push_under_load(site, hap.front, &c, 20);
    let live = site.env.link_target().display().to_string();
    hap.assert_points_at(&live);
    eprintln!(
        "haproxy: {} pushes in {:.1?}, {} + {} requests",
        load.pushes, load.took, load.requests.requests, load.slow.requests
    );
}

#[test]
fn failures_behind_haproxy_leave_the_old_instance_serving_and_a_failed_check_sets_it_back() {
    let Some(hap) = HaproxySite::new("pdhap2-") else { return };
    let site = &hap.site;
    let (a, versions, load) = failed_gates_under_load(site, hap.front);
    hap.assert_points_at("blue");

    // Green passes its gate and HAProxy sends it requests, but /ready answers 503 through
    // HAProxy: blue (never stopped) is set ready again, green back to maintenance.
    let not_ready = site.commit("not-ready", "not ready");
    versions.add(1, "/", not_ready.as_bytes());
    let pushed = site.push();
    let line = pushed.final_line();
    assert!(
        line.starts_with("pushdeploy: failed at activate: check through the proxy: "),
        "{pushed}"
    );
    assert!(line.contains("answered HTTP 503; the proxy went back to blue"), "{line}");
    hap.assert_points_at("blue");
    assert_eq!(hap.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "inactive"));
    let entries = history::history(&site.env);
    let last = entries.iter().find(|e| e["commit"] == not_ready.as_str()).expect("entry");
    assert_eq!(last["result"], "rolled-back", "{last}");

    // A socket at level operator shows the states but refuses to change them: the switch
    // fails at once, green was never set ready.
    let operator = hap.operator_socket.display().to_string();
    let admin = hap.socket.display().to_string();
    site.edit_config(|config| config.replace(&admin, &operator));
    let _ = site.commit("ok", "b");
    let refused = site.push();
    let line = refused.final_line();
    assert!(line.starts_with("pushdeploy: failed at activate: proxy switch: "), "{refused}");
    // The output shows the test's directory as $TMP.
    let shown = "$TMP/haproxy-run/operator.sock";
    assert!(
        line.contains(&format!(
            "HAProxy's runtime API at {shown} answered `set server www/green state ready` with \"Permission denied\"; the socket must be at level admin: `stats socket {shown} mode 660 group "
        )),
        "{line}"
    );
    hap.assert_points_at("blue");
    assert_eq!(site.state("green"), "inactive");

    // No socket at all: the deploy cannot tell where HAProxy points, and stops before it
    // starts anything.
    let gone = format!("{admin}.gone");
    site.edit_config(|config| config.replace(&operator, &gone));
    let _ = site.commit("ok", "b again");
    let unreachable = site.push();
    let lines = unreachable.pushdeploy_lines();
    let line = lines.iter().find(|line| line.starts_with("pushdeploy: error: ")).expect("error");
    eprintln!("haproxy unreachable: {line}");
    let shown = "$TMP/haproxy-run/admin.sock.gone";
    assert!(
        line.contains(&format!(
            "error: cannot tell where the proxy points: cannot send `show servers state www` to HAProxy's runtime API at {shown}: No such file or directory (os error 2); is HAProxy running, with `stats socket {shown} mode 660 group "
        )),
        "{unreachable}"
    );
    hap.assert_points_at("blue");
    assert_eq!(site.state("green"), "inactive");
    assert_eq!(hap.get(), (200, a.clone(), Some("blue".to_owned())));

    let report = load.stop();
    eprintln!("during the five failed pushes through haproxy: {report}");
    assert_eq!((report.failed(), report.wrong_bodies, report.stale_bodies), (0, 0, 0), "{report}");
    assert!(report.requests > 100, "{report}");
}

/// Runs `haproxy -c` on `files`; returns what it said when it refused them.
fn haproxy_check(files: &[&Path]) -> Result<String, String> {
    let mut command = Command::new("/usr/sbin/haproxy");
    command.arg("-c");
    for file in files {
        command.arg("-f").arg(file);
    }
    let output = command.output().expect("run haproxy -c");
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if output.status.success() { Ok(said) } else { Err(said) }
}

#[test]
fn init_with_haproxy_writes_the_first_states_and_prints_a_backend_haproxy_accepts() {
    if !Path::new("/usr/sbin/haproxy").exists() {
        crate::support::skip("no /usr/sbin/haproxy (Debian's haproxy package)");
        return;
    }
    let env = TestEnv::new();
    let user = TestUser::create(&env, "pdhap3-");
    let init = || {
        env.init_cmd(&["--app", "--app-command", "gunicorn app:app", "--ports", "8001,8002"])
            .args(["--app-user", &user.name, "--proxy", "haproxy", "--unit-dir"])
            .arg(env.root.join("units"))
            .success()
    };
    let output = init();
    let state_file = env.target.join(".pushdeploy/proxy/haproxy.state");
    let shown = state_file.display().to_string();
    assert!(output.stderr.contains(&format!("pushdeploy: wrote {shown}\n")), "{output}");
    let states = fs::read_to_string(&state_file).expect("state file");
    let lines: Vec<&str> = states.lines().collect();
    assert_eq!(lines.len(), 4, "{states}");
    assert_eq!(lines[2], "0 www 1 blue - 0 1 1 1 0 0 0 0 0 0 0 0 - 8001 - 0 0 - - 0");
    assert_eq!(lines[3], "0 www 2 green - 0 1 1 1 0 0 0 0 0 0 0 0 - 8002 - 0 0 - - 0");
    // The git user (the target's owner) rewrites it; HAProxy reads it.
    let (meta, target) = (fs::metadata(&state_file).expect("stat"), fs::metadata(&env.target));
    let target = target.expect("stat target");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (target.uid(), 0o644));
    let group = nix::unistd::Group::from_gid(target.gid().into()).ok().flatten().expect("group");
    let socket =
        format!("`stats socket /run/haproxy/admin.sock mode 660 group {} level admin`", group.name);
    assert!(output.stderr.contains(&socket), "{output}");

    // What init printed, with a frontend and the socket line, is a config HAProxy accepts.
    let printed: Vec<&str> =
        output.stderr.lines().filter_map(|line| line.strip_prefix("pushdeploy: ")).collect();
    let start = printed.iter().position(|line| *line == "backend www").expect("backend");
    let backend = printed[start..start + 6].join("\n");
    assert!(backend.ends_with("    server green 127.0.0.1:8002"), "{backend}");
    let sock = env.root.join("admin.sock");
    let config = env.root.join("printed.cfg");
    fs::write(
        &config,
        format!(
            "global\n\tstats socket {} mode 660 group {} level admin\ndefaults\n\tmode http\n\ttimeout connect 5s\n\ttimeout client 30s\n\ttimeout server 30s\nfrontend fe\n\tbind 127.0.0.1:1\n\tdefault_backend www\n{backend}\n",
            sock.display(),
            group.name
        ),
    )
    .expect("write printed.cfg");
    let said = haproxy_check(&[&config]).unwrap_or_else(|said| panic!("{said}"));
    assert!(said.contains("Configuration file is valid"), "{said}");

    // The state file is kept when init runs again (the deploys own it by then).
    fs::write(&state_file, "1\n").expect("rewrite");
    let again = init();
    assert!(again.stderr.contains(&format!("pushdeploy: kept {shown}\n")), "{again}");
    assert_eq!(fs::read_to_string(&state_file).expect("state file"), "1\n");

    // The operator config of site-templates/apps, beside Debian's own haproxy.cfg.
    let template = fs::read_to_string(template_dir("apps").join("haproxy.cfg")).expect("read");
    let rendered = [
        ("@SOCKET@", sock.display().to_string()),
        ("@GIT_GROUP@", group.name.clone()),
        ("@BACKEND@", "www".to_owned()),
        ("@SERVER_NAME@", "shop.example".to_owned()),
        ("@STATE_FILE@", shown.clone()),
        ("@BLUE_PORT@", "8001".to_owned()),
        ("@GREEN_PORT@", "8002".to_owned()),
    ]
    .iter()
    .fold(template, |text, (name, value)| text.replace(name, value));
    assert!(!rendered.contains('@'), "a placeholder is left\n{rendered}");
    let operator = env.root.join("operator.cfg");
    fs::write(&operator, rendered).expect("write operator.cfg");
    let debian = Path::new("/etc/haproxy/haproxy.cfg");
    let said = haproxy_check(&[debian, &operator]).unwrap_or_else(|said| panic!("{said}"));
    assert!(said.contains("Configuration file is valid"), "{said}");
}
