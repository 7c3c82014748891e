//! Regressions: each test is named after what broke and says in one comment what it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::big_file::{MEMORY_LIMIT, STORE, deploy_measured, env_with_200_mb_branch, mib};
use crate::support::canned_server::{After, CannedServer, ok, status};
use crate::support::history::mask_log;
use crate::support::load::{LoadChecker, LoadOptions, Mode, Versions};
use crate::support::short;
use crate::support::site::{PUSHER, env_with_two_releases};

// Regression: the slot column is formatted with `{:<5}`, and `Slot`'s `Display` used
// `write_str`, which ignores the width, so `blue` rows were one column short of `green` ones.
#[test]
fn log_columns_line_up_whatever_the_slot() {
    let (env, a, b) = env_with_two_releases("");

    let log = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();

    let expected = format!(
        "TIME  #2    {b}  live    green  refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n\
         TIME  #1    {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
        a = short(&a),
        b = short(&b),
    );
    assert_eq!(mask_log(&log.stdout), expected, "{log}");
}

// Regression: a packed blob over 16 MiB failed with `Bad file descriptor` (its first bytes were
// read back from the write-only release file), and `git cat-file` read it whole below
// core.bigFileThreshold.
#[test]
fn packed_file_of_200_mb_deploys_with_bounded_memory() {
    let (env, commit) = env_with_200_mb_branch();
    // A push of 100 objects or more stays packed on the server; so does everything after gc.
    let _ = env.git_in(&env.bare).args(STORE).args(["repack", "-a", "-d", "-q"]).success();

    let deploy = deploy_measured(&env, "big");

    deploy.assert_big_live(&env, &commit);
    println!(
        "200 MB file, packed: peak RSS {}, peak anonymous memory {}",
        mib(deploy.peak_rss),
        mib(deploy.peak_anon)
    );
    assert!(deploy.peak_anon < MEMORY_LIMIT, "peak anonymous memory {}", mib(deploy.peak_anon));
}

// Regression: the load checker's report was expected to show both connections, but on a busy
// machine (seen in CI) one thread can reach the request limit before the other has connected.
#[test]
fn requests_mode_counts_right_when_its_limit_comes_before_the_second_connection() {
    // Every third answer to /a is truncated, /b always 503.
    let count = Arc::new(AtomicUsize::new(0));
    let server = CannedServer::start(move |path| match path {
        "/a" if count.fetch_add(1, Ordering::SeqCst) % 3 == 2 => (ok("versio"), After::KeepOpen),
        "/a" => (ok("version"), After::KeepOpen),
        _ => (status(503), After::KeepOpen),
    });
    let versions = Versions::new();
    versions.add(0, "/a", "version");
    versions.add(0, "/b", "bee");
    let options = LoadOptions { connections: 2, max_requests: 60, ..LoadOptions::default() };

    let checker = LoadChecker::start(server.addr, Mode::Requests { versions }, options);
    // Stops by itself at the limit; stop() then only collects.
    thread::sleep(Duration::from_millis(500));
    let report = checker.stop();

    assert_eq!(report.requests, 60, "{report}");
    assert_eq!(report.non_200, 30, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.wrong_bodies, 10, "{report}");
    assert!((1..=2).contains(&report.connects), "{report}");
    assert_eq!(report.limit_reached.as_deref(), Some("max_requests = 60"), "{report}");
    assert!(report.failures.len() <= 10, "{report}");
}
