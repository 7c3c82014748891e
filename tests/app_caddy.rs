//! App deploys behind Debian's Caddy (`[app.proxy] kind = "caddy"`), run inside the test's
//! systemd with the operator config of site-templates/apps/Caddyfile.standalone: 20 pushes
//! under load with no failed request; the operator's own reload keeps the live instance; a
//! failed gate, a crash and a failed check through Caddy each leave the old instance serving
//! through it, the check's failure pointing Caddy back (`rolled-back`); a Caddyfile the
//! operator broke fails the switch with the snippet put back.

use std::fs;

use crate::support::BIN;
use crate::support::app_load::{failed_gates_under_load, push_under_load, push_with_request_held};
use crate::support::caddy::CaddySite;
use crate::support::history;

#[test]
fn twenty_pushes_through_caddy_fail_no_request_and_its_own_reload_keeps_the_live_instance() {
    let Some(caddy) = CaddySite::new("pdcaddy1-") else { return };
    let site = &caddy.site;
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(caddy.get(), (200, a.clone(), Some("blue".to_owned())));

    // A request in flight to blue when Caddy is pointed at green: the drain waits for it (it
    // is answered, by blue), and only then does blue stop.
    let b = site.commit("ok", "b");
    let held = push_with_request_held(site, caddy.front, "blue", &b);
    let pushed = &held.pushed;
    pushed.assert_live(&b, "refs/heads/main", "green");
    let answer = &held.answer;
    assert_eq!((answer.status, String::from_utf8_lossy(&answer.body)), (200, a.as_str().into()));
    let stopped = pushed.pushdeploy_lines().into_iter().find(|l| l.contains("drained in "));
    let drained = stopped.as_deref().and_then(|l| l.split("drained in ").nth(1)?.split(' ').next());
    let drained: f64 = drained.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{pushed}"));
    // Held for 0.5 s after Caddy answered from green: the drain waited.
    assert!(drained >= 0.3, "blue was stopped with /hold still in flight\n{pushed}");

    let load = push_under_load(site, caddy.front, &b, 20);
    let live = site.env.link_target().display().to_string();
    let (status, body, slot) = caddy.get();
    assert_eq!((status, slot.as_deref()), (200, Some(live.as_str())));

    // The operator reloads Caddy from its own Caddyfile: the imported snippet still names
    // the live instance.
    let reload = site
        .systemd
        .run(&site.env, "/usr/bin/caddy")
        .args(["reload", "--adapter", "caddyfile", "--force", "--config"])
        .arg(&caddy.caddyfile)
        .output();
    assert!(reload.status.success(), "caddy reload\n{reload}");
    assert_eq!(caddy.get(), (200, body, slot.clone()));

    // `status` tells the live instance, the stopped one, and where Caddy points.
    let status = site.systemd.run(&site.env, BIN).args(["status", "--repo"]).arg(&site.env.bare);
    let status = status.success();
    let other = if live == "blue" { "green" } else { "blue" };
    let (live_port, other_port) =
        if live == "blue" { (site.blue, site.green) } else { (site.green, site.blue) };
    for expected in [
        format!("app:    pushdeploy-www@{live}.service on 127.0.0.1:{live_port} (active/running)"),
        format!("other:  pushdeploy-www@{other}.service on 127.0.0.1:{other_port} (inactive/dead)"),
        format!("proxy:  caddy -> {live}"),
    ] {
        assert!(status.stdout.lines().any(|line| line == expected), "{expected:?}\n{status}");
    }
    eprintln!(
        "caddy: {} pushes, {} + {} requests",
        load.pushes, load.requests.requests, load.slow.requests
    );
}

#[test]
fn failures_behind_caddy_leave_the_old_instance_serving_and_a_failed_check_points_caddy_back() {
    let Some(caddy) = CaddySite::new("pdcaddy2-") else { return };
    let site = &caddy.site;
    let (a, versions, load) = failed_gates_under_load(site, caddy.front);
    assert_eq!(caddy.get(), (200, a.clone(), Some("blue".to_owned())));

    // Green passes its gate and Caddy sends it requests, but /ready answers 503 through Caddy:
    // Caddy goes back to blue, which never stopped. Clients may get green's answers meanwhile.
    let not_ready = site.commit("not-ready", "not ready");
    versions.add(1, "/", not_ready.as_bytes());
    let pushed = site.push();
    let line = pushed.final_line();
    assert!(
        line.starts_with("pushdeploy: failed at activate: check through the proxy: "),
        "{pushed}"
    );
    assert!(line.contains("answered HTTP 503; the proxy went back to blue"), "{line}");
    assert_eq!(caddy.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "inactive"));
    let entries = history::history(&site.env);
    let last = entries.iter().find(|e| e["commit"] == not_ready.as_str()).expect("entry");
    assert_eq!(last["result"], "rolled-back", "{last}");

    // The operator broke the Caddyfile: `caddy adapt` refuses it, the snippet is put back.
    let snippet = site.env.target.join(".pushdeploy/proxy/upstream.caddy");
    let before = fs::read_to_string(&snippet).expect("snippet");
    let good = fs::read_to_string(&caddy.caddyfile).expect("Caddyfile");
    fs::write(
        &caddy.caddyfile,
        format!("{good}\nhttp://127.0.0.1:1 {{\n\tno_such_directive\n}}\n"),
    )
    .expect("break the Caddyfile");
    let _ = site.commit("ok", "b");
    let broken = site.push();
    let line = broken.final_line();
    assert!(
        line.starts_with("pushdeploy: failed at activate: proxy switch: `caddy adapt "),
        "{broken}"
    );
    assert!(line.contains("no_such_directive"), "{line}");
    assert_eq!(fs::read_to_string(&snippet).expect("snippet"), before);
    assert_eq!(caddy.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!(site.state("green"), "inactive");

    let report = load.stop();
    eprintln!("during the four failed pushes through caddy: {report}");
    assert_eq!((report.failed(), report.wrong_bodies, report.stale_bodies), (0, 0, 0), "{report}");
    assert!(report.requests > 100, "{report}");
}

#[test]
fn with_keep_previous_a_rollback_behind_caddy_is_instant_and_restarts_nothing() {
    let Some(caddy) = CaddySite::new("pdcaddy3-") else { return };
    let site = &caddy.site;
    site.edit_config(|config| format!("{config}\n[retire]\nkeep_previous = true\n"));
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let b = site.commit("ok", "b");
    let pushed = site.push();
    pushed.assert_live(&b, "refs/heads/main", "green");
    assert!(pushed.stderr.contains("kept the old instance pushdeploy-www@blue.service running"));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "active"));

    let blue_pid =
        site.systemd.systemctl(&["show", "-p", "MainPID", "--value", &site.unit("blue")]);
    let rollback =
        site.systemd.run(&site.env, BIN).args(["rollback", "--repo"]).arg(&site.env.bare);
    let rollback = rollback.success();
    assert!(
        rollback
            .stderr
            .contains("pushdeploy-www@blue.service still runs the kept release: no restart"),
        "{rollback}"
    );
    assert!(rollback.final_line().contains("instant rollback"), "{rollback}");
    let after = site.systemd.systemctl(&["show", "-p", "MainPID", "--value", &site.unit("blue")]);
    assert_eq!(blue_pid.stdout, after.stdout, "blue was restarted");
    assert_eq!(caddy.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "active"));

    // The next push goes into green, whose instance (still b) is restarted on the new commit.
    let c = site.commit("ok", "c");
    site.push().assert_live(&c, "refs/heads/main", "green");
    assert_eq!(caddy.get(), (200, c, Some("green".to_owned())));
}
