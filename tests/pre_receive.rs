//! Pre-receive mode: a push whose deploy fails is rejected and the branch does not move.

use std::collections::BTreeSet;

use crate::support::TestEnv;
use crate::support::history::{deploy_refs, live_ref};
use crate::support::site::{
    BUILD_FAILS_ON_MARKER, BUILD_FAILURE, bare_main, commit_failing_version, commit_version, push,
    push_cmd,
};

#[test]
fn pre_receive_mode_rejects_push_whose_build_fails() {
    let env = TestEnv::new();
    env.init(&["--mode", "pre-receive", "--no-publish", "--build", BUILD_FAILS_ON_MARKER]);
    assert!(env.bare.join("hooks/pre-receive").is_file(), "no pre-receive hook");
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()), "post-receive set no live ref");
    let before = env.live_site();
    let b = commit_failing_version(&env, "b");

    let rejected = push_cmd(&env, &[]).failure();

    let line = rejected.assert_failed_at("build");
    assert!(line.contains(BUILD_FAILURE), "{line:?}");
    assert!(
        rejected.stderr.contains("[remote rejected] main -> main (pre-receive hook declined)"),
        "{rejected}"
    );
    assert_eq!(bare_main(&env), a, "the branch moved although the deploy failed");
    env.assert_live_unchanged(&before);
    assert_eq!(live_ref(&env).as_deref(), Some(a.as_str()));
    let in_bare = env.git_in(&env.bare).args(["cat-file", "-e", &format!("{b}^{{commit}}")]);
    let _ = in_bare.failure();
}

#[test]
fn pre_receive_mode_accepts_push_whose_build_passes() {
    let env = TestEnv::new();
    env.init(&["--mode", "pre-receive", "--no-publish", "--build", BUILD_FAILS_ON_MARKER]);
    let a = commit_version(&env, "a");
    let _ = push(&env, &[]);
    let _ = commit_failing_version(&env, "b");
    let _ = push_cmd(&env, &[]).failure();
    env.remove("fail-build");
    let c = commit_version(&env, "c");

    let accepted = push(&env, &[]);

    accepted.assert_live(&c, "refs/heads/main", "green");
    assert_eq!(bare_main(&env), c);
    env.assert_live_equals_archive(&c);
    env.assert_no_idle_slot();
    assert_eq!(live_ref(&env).as_deref(), Some(c.as_str()), "post-receive did not record it");
    let deployed: BTreeSet<String> = deploy_refs(&env)
        .into_iter()
        .filter(|(name, _)| name != "refs/deploys/live")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(deployed, BTreeSet::from([a, c]));
}
