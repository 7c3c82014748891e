//! pushdeploy SIGKILLed at each step of an app deploy behind Caddy (real systemd, gunicorn,
//! Caddy): afterwards a healthy instance still serves through the proxy, and the next push
//! converges (exactly one instance runs, the live one, with Caddy pointing at it) and goes
//! live. The kills land on each step the deploy records in `progress.json`, and at times
//! spread over whole deploys.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::BIN;
use crate::support::caddy::CaddySite;
use crate::support::load::{LoadChecker, LoadOptions, Mode, Versions};

/// Where to kill a deploy: when its progress record names a step, or after a delay.
#[derive(Debug, Clone, Copy)]
enum Kill {
    AtStep(&'static str),
    After(Duration),
}

/// Returns the host pids of the `pushdeploy` processes running the hook inside the pid
/// namespace of `init` (this test's systemd): never another test's.
pub(crate) fn hook_pids(init: u32) -> Vec<i32> {
    let namespace =
        fs::read_link(format!("/proc/{init}/ns/pid")).expect("the test's pid namespace");
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            exe.as_deref() == Some(Path::new(BIN))
                && cmdline.split(|b| *b == 0).any(|arg| arg == b"hook")
                && fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&namespace)
        })
        .collect()
}

/// Pushes the work clone's commit and SIGKILLs the hook's pushdeploy as `kill` says; returns
/// what the progress record said at the kill (`None` when the deploy ended first).
fn push_and_kill(caddy: &CaddySite, kill: Kill) -> Option<String> {
    let site = &caddy.site;
    let progress = site.env.target.join(".pushdeploy/app/progress.json");
    let mut push = site
        .systemd
        .run_in(&site.env, &site.env.work, "git")
        .args(["push", "origin", "main"])
        .spawn();
    let started = Instant::now();
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(30) {
        if push.try_wait().expect("wait for git push").is_some() {
            break;
        }
        let step = fs::read_to_string(&progress).unwrap_or_default();
        let due = match kill {
            Kill::AtStep(name) => step.contains(&format!("\"step\":\"{name}\"")),
            Kill::After(delay) => started.elapsed() >= delay,
        };
        let pids = hook_pids(site.systemd.init_pid());
        if due && !pids.is_empty() {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            killed_at = Some(step.trim().to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = push.wait();
    killed_at
}

#[test]
fn a_deploy_killed_at_any_step_leaves_a_serving_instance_and_the_next_push_converges() {
    let Some(caddy) = CaddySite::new("pdkill1-") else { return };
    let site = &caddy.site;
    site.edit_config(|config| {
        format!("{config}\n[app.check]\nurl = \"http://{}/health\"\n", caddy.front)
    });
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    // Any commit pushed is an acceptable answer: a killed deploy may have gone live or not.
    let versions = Versions::new();
    versions.add(0, "/", a.as_bytes());
    let options = LoadOptions {
        connections: 2,
        max_duration: Duration::from_secs(400),
        pause: Duration::from_millis(5),
        ..LoadOptions::default()
    };
    let load =
        LoadChecker::start(caddy.front, Mode::Requests { versions: versions.clone() }, options);

    let mut kills = Vec::new();
    for step in ["start", "point", "check", "link", "stop"] {
        kills.extend([Kill::AtStep(step), Kill::AtStep(step)]);
    }
    kills.extend((1..=4).map(|tenth| Kill::After(Duration::from_millis(300 * tenth))));
    let mut version = 0;
    let mut killed_in_phase_2 = 0;
    for (trial, kill) in kills.into_iter().enumerate() {
        version += 1;
        let killed = site.commit("ok", &format!("killed {trial}"));
        versions.add(version, "/", killed.as_bytes());
        let at = push_and_kill(&caddy, kill);
        killed_in_phase_2 += usize::from(at.as_deref().is_some_and(|step| !step.is_empty()));
        // Right after the kill, whatever it interrupted, Caddy reaches a healthy instance.
        let (status, body, slot) = caddy.get();
        let states = (site.state("blue"), site.state("green"));
        assert_eq!(status, 200, "trial {trial} ({kill:?}, killed at {at:?}): through Caddy");
        eprintln!(
            "trial {trial}: killed at {at:?}; Caddy answers from {slot:?} ({}); blue, green: {states:?}",
            &body[..7]
        );

        version += 1;
        let next = site.commit("ok", &format!("after {trial}"));
        versions.add(version, "/", next.as_bytes());
        let pushed = site.push();
        let live = pushed.final_line();
        assert!(
            live.starts_with(&format!("pushdeploy: live: {}", &next[..7])),
            "trial {trial}\n{pushed}"
        );
        // A kill in phase 1 (before the first step is recorded) leaves nothing to converge.
        if at.as_deref().is_some_and(|step| !step.is_empty()) {
            assert!(pushed.stderr.contains(" was interrupted while "), "trial {trial}\n{pushed}");
        }
        let slot = site.env.link_target().display().to_string();
        let other = if slot == "blue" { "green" } else { "blue" };
        assert_eq!(
            (site.state(&slot).as_str(), site.state(other).as_str()),
            ("active", "inactive"),
            "trial {trial}: exactly the live instance must run\n{pushed}\n--- {other} ---\n{}",
            site.systemd.journal(&site.unit(other))
        );
        assert_eq!(caddy.get(), (200, next.clone(), Some(slot.clone())), "trial {trial}");
        assert!(!site.env.target.join(".pushdeploy/app/progress.json").exists());
    }
    // A trial whose deploy ended before the kill tests nothing: most must have landed.
    assert!(killed_in_phase_2 >= 10, "only {killed_in_phase_2} of 14 kills landed in phase 2");
    let report = load.stop();
    eprintln!("through Caddy during 14 killed deploys and their next pushes: {report}");
    assert_eq!(report.failed(), 0, "{report}");
}
