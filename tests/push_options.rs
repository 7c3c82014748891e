//! The push options (`-o no-cache`, `skip-build`, `dry-run`, `rollback`) and the `deploy` flags.

use std::fs;

use crate::support::history::{history, live_ref, newest_entry};
use crate::support::site::{
    PUSHER, assert_no_line_starting, assert_said, bare_main, build_table, commit_version,
    config_with, env_with_two_releases, push,
};
use crate::support::{TestEnv, short};

#[test]
fn push_option_no_cache_builds_without_the_cache() {
    let env = TestEnv::new();
    env.init(&[]);
    // Each build appends to the cached `cache/runs` and publishes the count.
    let build = "mkdir -p cache && echo run >> cache/runs && wc -l < cache/runs > runs.txt";
    env.write_config(&config_with(&env, &format!("{}cache = [\"cache\"]\n", build_table(build))));
    let runs = |env: &TestEnv| {
        let path = env.live_dir().join("runs.txt");
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    commit_version(&env, "a");
    let _ = push(&env, &[]);
    let b = commit_version(&env, "b");
    let cached = push(&env, &[]);
    cached.assert_live(&b, "refs/heads/main", "green");
    assert_said(&cached, "pushdeploy: build cache: reusing cache");
    assert_eq!(runs(&env).trim(), "2");
    let c = commit_version(&env, "c");

    let fresh = push(&env, &["no-cache"]);

    fresh.assert_live(&c, "refs/heads/main", "blue");
    assert_said(&fresh, "pushdeploy: build cache: not used for this deploy");
    assert!(!fresh.normalized_stderr().contains("build cache: reusing"), "{fresh}");
    assert_eq!(runs(&env).trim(), "1", "the build saw the cache");
    // The fresh result became the new cache.
    let d = commit_version(&env, "d");
    push(&env, &[]).assert_live(&d, "refs/heads/main", "green");
    assert_eq!(runs(&env).trim(), "2");
}

#[test]
fn push_option_skip_build_deploys_without_running_the_build() {
    let env = TestEnv::new();
    env.init(&["--no-publish", "--build", "echo compiling; exit 1"]);
    let a = commit_version(&env, "a");

    let skipped = push(&env, &["skip-build"]);

    skipped.assert_live(&a, "refs/heads/main", "blue");
    assert_said(&skipped, "pushdeploy: build skipped, as asked (skip-build)");
    assert_no_line_starting(&skipped, "pushdeploy: building:");
    assert_no_line_starting(&skipped, "compiling");
    env.assert_live_equals_archive(&a);

    // Without the option, the same build does run, and fails.
    let b = commit_version(&env, "b");
    let built = push(&env, &[]);
    built.assert_failed_at("build");
    assert_eq!(newest_entry(&env)["commit"], b.as_str());
    env.assert_live_equals_archive(&a);
}

#[test]
fn push_option_dry_run_builds_but_does_not_switch() {
    let env = TestEnv::new();
    env.init(&["--no-publish", "--build", "echo compiling"]);
    let a = commit_version(&env, "a");
    let _ = push(&env, &[]);
    let before = env.live_site();
    let b = commit_version(&env, "b");

    let dry = push(&env, &["dry-run"]);

    assert_said(
        &dry,
        &format!("pushdeploy: deploying {} (refs/heads/main) into green (dry run)", short(&b)),
    );
    assert_said(&dry, "pushdeploy: building: echo compiling");
    let line = dry.final_line();
    let expected = format!(
        "pushdeploy: dry run: {} (refs/heads/main) was written, built and verified in ",
        short(&b)
    );
    assert!(line.starts_with(&expected), "expected {expected:?}..., found {line:?}\n{dry}");
    assert!(
        line.ends_with(&format!("not activated, the live site is unchanged (blue, {})", short(&a))),
        "{line:?}"
    );
    env.assert_live_unchanged(&before);
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()));
    let entry = newest_entry(&env);
    assert_eq!((&entry["result"], &entry["commit"]), (&"dry-run".into(), &b.as_str().into()));
    // The push itself was accepted: the branch moved, only the site did not.
    assert_eq!(bare_main(&env), b);
}

#[test]
fn push_option_rollback_rolls_back_instead_of_deploying_pushed_commit() {
    let (env, a, _) = env_with_two_releases("");
    let c = commit_version(&env, "c");

    let push = push(&env, &["rollback"]);

    assert_said(
        &push,
        "pushdeploy: rollback asked for with `-o rollback`: the pushed commit is not deployed",
    );
    push.assert_live(&a, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&a);
    let entry = newest_entry(&env);
    assert_eq!((&entry["trigger"], &entry["commit"]), (&"rollback".into(), &a.as_str().into()));
    assert_eq!(entry["pusher"], PUSHER);
    assert_eq!(bare_main(&env), c);
    assert!(!history(&env).iter().any(|entry| entry["commit"] == c.as_str()), "c was deployed");
}

// Regression: `git push -o dryrun` (a typo of dry-run) printed "ignored push option" and then
// deployed live, the very thing the pusher meant to avoid.
#[test]
fn push_option_with_a_typo_deployed_live() {
    let env = TestEnv::new();
    env.init(&[]);
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let before = env.live_site();
    let b = commit_version(&env, "b");

    let push = push(&env, &["dryrun"]);

    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: error: unknown push option \"dryrun\" (did you mean dry-run?): nothing \
             was deployed; pushdeploy knows no-cache, skip-build, dry-run and rollback",
            "pushdeploy: hint: push again with a known option, or run `pushdeploy deploy` on the \
             server",
        ],
        "{push}"
    );
    env.assert_live_unchanged(&before);
    // The branch moved (post-receive accepted the push); deploying it is one command away.
    let deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success();
    deploy.assert_live(&b, "refs/heads/main", "green");
}

#[test]
fn deploy_flags_dry_run_and_skip_build() {
    let env = TestEnv::new();
    env.init(&["--no-publish", "--build", "echo compiling; exit 1"]);
    let a = commit_version(&env, "a");
    // The push's deploy fails at the build, so nothing is live yet.
    push(&env, &[]).assert_failed_at("build");
    let deploy =
        |flags: &[&str]| env.pushdeploy().arg("deploy").args(flags).arg("--repo").arg(&env.bare);

    let skipped = deploy(&["--skip-build"]).success();

    skipped.assert_live(&a, "refs/heads/main", "blue");
    assert_said(&skipped, "pushdeploy: build skipped, as asked (skip-build)");
    assert_eq!(newest_entry(&env)["trigger"], "deploy");
    let before = env.live_site();
    let b = commit_version(&env, "b");
    push(&env, &[]).assert_failed_at("build");

    let dry = deploy(&["--dry-run", "--skip-build", "--no-cache"]).success();

    let line = dry.final_line();
    let expected = format!(
        "pushdeploy: dry run: {} (refs/heads/main) was written and verified in ",
        short(&b)
    );
    assert!(line.starts_with(&expected), "expected {expected:?}..., found {line:?}\n{dry}");
    assert_no_line_starting(&dry, "pushdeploy: building:");
    env.assert_live_unchanged(&before);
    let entry = newest_entry(&env);
    assert_eq!((&entry["result"], &entry["trigger"]), (&"dry-run".into(), &"deploy".into()));
}
