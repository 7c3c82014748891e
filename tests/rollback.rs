//! `pushdeploy rollback`: instant to a kept release, rebuilt otherwise, past failed deploys.

use std::path::Path;

use crate::support::history::{live_ref, newest_entry};
use crate::support::site::{
    BUILD_FAILS_ON_MARKER, assert_no_line_starting, assert_said, build_table,
    commit_failing_version, commit_version, env_with_two_releases, push,
};
use crate::support::{Cmd, TestEnv, assert_trees_equal, short};

/// Returns `pushdeploy rollback --repo BARE [REV]`.
fn rollback_cmd(env: &TestEnv, rev: Option<&str>) -> Cmd {
    env.pushdeploy().args(["rollback", "--repo"]).arg(&env.bare).args(rev)
}

#[test]
fn instant_rollback_with_keep_previous_switches_back_without_build() {
    let config = format!("{}\n[retire]\nkeep_previous = true\n", build_table("echo compiling"));
    let (env, a, b) = env_with_two_releases(&config);
    let kept_a = env.snapshot_tree(env.target.join("blue"));

    let rollback = rollback_cmd(&env, None).success();

    assert_said(
        &rollback,
        &format!("pushdeploy: rolling back to {}, kept in blue: no rebuild", short(&a)),
    );
    rollback.assert_live(&a, "refs/heads/main", "blue");
    let final_line = rollback.final_line();
    assert!(final_line.contains("instant rollback"), "{final_line:?}");
    assert_no_line_starting(&rollback, "pushdeploy: building:");
    assert_no_line_starting(&rollback, "compiling");
    assert_eq!(env.link_target(), Path::new("blue"));
    env.assert_live_equals_archive(&a);
    // The very files that were kept went live, not a new copy of them.
    assert_trees_equal(&kept_a, &env.snapshot_tree(env.live_dir()));
    let entry = newest_entry(&env);
    assert_eq!((&entry["trigger"], &entry["result"]), (&"rollback".into(), &"live".into()));
    assert_eq!((&entry["commit"], &entry["slot"]), (&a.as_str().into(), &"blue".into()));
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()));

    // The release it replaced stays kept: going forward to it by name is instant too (a
    // rollback without a name goes further back, and a is the oldest).
    assert!(env.target.join("green").is_dir(), "the replaced release was not kept");
    let again = rollback_cmd(&env, Some(&b)).success();

    assert_said(
        &again,
        &format!("pushdeploy: rolling back to {}, kept in green: no rebuild", short(&b)),
    );
    again.assert_live(&b, "refs/heads/main", "green");
    assert_no_line_starting(&again, "pushdeploy: building:");
    env.assert_live_equals_archive(&b);
    assert_eq!(live_ref(&env).as_deref(), Some(b.as_str()));
}

#[test]
fn rollback_without_keep_previous_rebuilds_previous_commit() {
    let (env, a, _) = env_with_two_releases(&build_table("echo compiling"));
    assert!(!env.target.join("blue").exists(), "the previous release was kept");

    let rollback = rollback_cmd(&env, None).success();

    assert_said(&rollback, "pushdeploy: building: echo compiling");
    assert!(rollback.normalized_stderr().lines().any(|line| line == "compiling"), "{rollback}");
    rollback.assert_live(&a, "refs/heads/main", "blue");
    assert!(!rollback.final_line().contains("instant rollback"), "{rollback}");
    env.assert_live_equals_archive(&a);
    env.assert_no_idle_slot();
    let entry = newest_entry(&env);
    assert_eq!((&entry["trigger"], &entry["result"]), (&"rollback".into(), &"live".into()));
    assert_eq!(entry["commit"], a.as_str());
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()));
}

#[test]
fn rollback_skips_failed_deploys() {
    let (env, a, b) = env_with_two_releases(&build_table(BUILD_FAILS_ON_MARKER));
    let c = commit_failing_version(&env, "c");
    push(&env, &[]).assert_failed_at("build");
    assert_eq!(newest_entry(&env)["commit"], c.as_str());

    // Live is b; the newest successful release that is not b is a, not the failed c.
    let rollback = rollback_cmd(&env, None).success();

    rollback.assert_live(&a, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&a);
    // Rolling back twice goes two steps back, not forth to b: before a there is nothing.
    let rollback_again = rollback_cmd(&env, None).failure();
    assert_eq!(
        rollback_again.pushdeploy_lines()[0],
        "pushdeploy: error: there is no earlier successful deploy to roll back to",
        "{rollback_again}"
    );
    env.assert_live_equals_archive(&a);
    rollback_cmd(&env, Some(&b)).success().assert_live(&b, &b, "green");
    env.assert_live_equals_archive(&b);
}

#[test]
fn rollback_to_named_revision() {
    let (env, a, b) = env_with_two_releases("");
    let c = commit_version(&env, "c");
    push(&env, &[]).assert_live(&c, "refs/heads/main", "blue");

    let rollback = rollback_cmd(&env, Some("main~2")).success();

    rollback.assert_live(&a, "main~2", "green");
    env.assert_live_equals_archive(&a);
    let entry = newest_entry(&env);
    assert_eq!((&entry["trigger"], &entry["commit"]), (&"rollback".into(), &a.as_str().into()));

    // A full commit id works too, for a commit deployed before.
    rollback_cmd(&env, Some(&b)).success().assert_live(&b, &b, "blue");
    env.assert_live_equals_archive(&b);
}

#[test]
fn rollback_without_earlier_deploy_fails_with_hint() {
    let env = TestEnv::new();
    env.init(&[]);
    let nothing = rollback_cmd(&env, None).failure();
    assert_eq!(nothing.code(), Some(2), "{nothing}");
    let a = commit_version(&env, "a");
    let _ = push(&env, &[]);
    let before = env.live_site();

    let rollback = rollback_cmd(&env, None).failure();

    assert_eq!(rollback.code(), Some(2), "{rollback}");
    let expected = [
        "pushdeploy: error: there is no earlier successful deploy to roll back to",
        "pushdeploy: hint: name the commit to go back to: `pushdeploy rollback REV`",
    ];
    assert_eq!(rollback.pushdeploy_lines(), expected, "{rollback}");
    assert_eq!(nothing.pushdeploy_lines(), expected, "{nothing}");
    env.assert_live_unchanged(&before);
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()));
}

// The issue asks that "failed deploys never push a good release out": with keep_previous,
// the release kept for an instant rollback must survive a deploy that fails.
#[test]
fn failed_deploy_keeps_the_kept_release_for_instant_rollback() {
    let config =
        format!("{}\n[retire]\nkeep_previous = true\n", build_table(BUILD_FAILS_ON_MARKER));
    let (env, a, _) = env_with_two_releases(&config);
    commit_failing_version(&env, "c");
    push(&env, &[]).assert_failed_at("build");

    let rollback = rollback_cmd(&env, None).success();

    assert_said(
        &rollback,
        &format!("pushdeploy: rolling back to {}, kept in blue: no rebuild", short(&a)),
    );
    rollback.assert_live(&a, "refs/heads/main", "blue");
    assert!(rollback.final_line().contains("instant rollback"), "{rollback}");
    env.assert_live_equals_archive(&a);
}
