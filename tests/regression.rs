//! Regressions: each test is named after what broke and says in one comment what it was.

use crate::support::big_file::{
    MEMORY_LIMIT, STORE, assert_live_file_is_blob, deploy_measured, env_with_200_mb_branch, mib,
};
use crate::support::history::mask_log;
use crate::support::short;
use crate::support::site::{PUSHER, env_with_two_releases};

// Regression: the slot column is formatted with `{:<5}`, and `Slot`'s `Display` used
// `write_str`, which ignores the width, so `blue` rows were one column short of `green` ones.
#[test]
fn log_columns_line_up_whatever_the_slot() {
    let (env, a, b) = env_with_two_releases("");

    let log = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();

    let expected = format!(
        "TIME  {b}  live    green  refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n\
         TIME  {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
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

    let live = format!("pushdeploy: live: {} (big) in green", short(&commit));
    assert!(
        deploy.stderr.lines().last().is_some_and(|line| line.starts_with(&live)),
        "{}",
        deploy.stderr
    );
    assert_live_file_is_blob(&env, "big.bin", "big");
    println!(
        "200 MB file, packed: peak RSS {}, peak anonymous memory {}",
        mib(deploy.peak_rss),
        mib(deploy.peak_anon)
    );
    assert!(deploy.peak_anon < MEMORY_LIMIT, "peak anonymous memory {}", mib(deploy.peak_anon));
}
