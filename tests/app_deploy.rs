//! App deploys with `[app.proxy] kind = "none"` under real systemd (support::systemd) and
//! Debian's gunicorn: a push starts the idle slot's instance, which must pass the health gate
//! before the link moves, and stops the old instance after; an unhealthy or crashing commit
//! fails at activate with the old instance still serving; the gate waits for a slow boot; a
//! failed check keeps the old instance (without a proxy nothing was switched).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::app::{AppSite, Watcher, free_ports};

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
    let line = crash.final_line();
    assert!(line.starts_with("pushdeploy: failed at activate: health gate: "), "{crash}");
    assert!(line.contains(" after its start, before http://127.0.0.1:"), "{line}");
    // The gate saw the crash in under 3 s of the instance's start (its own clock: the push
    // around it, git and phase 1, is slower on a loaded machine), and the push ended long
    // before the 10 s deadline.
    let seen = line.split("pushdeploy-www@blue.service stopped ").nth(1);
    let seen = seen.and_then(|rest| rest.split(" s after its start").next()?.parse::<f64>().ok());
    let seen = seen.unwrap_or_else(|| panic!("no `stopped N s after its start` in {line}"));
    assert!(seen < 3.0, "the gate took {seen} s to see the crash\n{crash}");
    assert!(took < Duration::from_secs(6), "took {took:?}\n{crash}");
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

#[test]
fn the_gate_waits_for_a_slow_boot_and_a_failed_check_keeps_the_old_instance() {
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
    assert!(line.contains("; blue still serves; the live site is unchanged (blue, "), "{line}");
    assert_eq!(site.env.link_target(), Path::new("blue"));
    site.assert_serves(site.blue, &a);
    assert_eq!(site.state("blue"), "active");
    assert_eq!(site.state("green"), "inactive");
    let history = crate::support::history::history(&site.env);
    let last = history.iter().find(|entry| entry["commit"] == b.as_str()).expect("b's entry");
    // Without a proxy nothing sent traffic to green: it failed, nothing was rolled back.
    assert_eq!(last["result"], "failed", "{last}");
    assert_eq!(last["failed_stage"], "activate", "{last}");
    assert!(last["error"].as_str().is_some_and(|e| e.contains("blue still serves")), "{last}");
}
