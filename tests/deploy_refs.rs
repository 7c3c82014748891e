//! The deploy refs: `refs/deploys/live` and one ref per successful deploy, fetchable by a clone.

use std::collections::BTreeSet;

use crate::support::history::{deploy_refs, live_ref};
use crate::support::site::{
    BUILD_FAILS_ON_MARKER, build_table, commit_failing_version, commit_version, config_with, push,
};
use crate::support::{TestEnv, short};

#[test]
fn deploy_refs_name_live_commit_and_each_successful_deploy() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, &build_table(BUILD_FAILS_ON_MARKER)));
    assert_eq!(deploy_refs(&env), Vec::new(), "refs before any deploy");
    let a = commit_version(&env, "a");
    let _ = push(&env, &[]);
    let b = commit_version(&env, "b");
    let _ = push(&env, &[]);
    let c = commit_failing_version(&env, "c");
    push(&env, &[]).assert_failed_at("build");

    let refs = deploy_refs(&env);

    assert_eq!(live_ref(&env).as_deref(), Some(b.as_str()), "{refs:#?}");
    let per_deploy: Vec<&(String, String)> =
        refs.iter().filter(|(name, _)| name != "refs/deploys/live").collect();
    let deployed: BTreeSet<&str> = per_deploy.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(deployed, BTreeSet::from([a.as_str(), b.as_str()]), "{refs:#?}");
    assert_eq!(per_deploy.len(), 2, "one ref per successful deploy: {refs:#?}");
    assert!(!refs.iter().any(|(_, id)| *id == c), "the failed deploy has a ref: {refs:#?}");
    for (name, id) in per_deploy {
        assert!(
            name.strip_prefix("refs/deploys/")
                .is_some_and(|rest| rest.ends_with(&format!("-{}", short(id)))),
            "{name} is not refs/deploys/<stamp>-<short commit>"
        );
    }

    // What a laptop does to see what is live.
    let _ =
        env.git().args(["fetch", "--quiet", "origin", "refs/deploys/*:refs/deploys/*"]).success();
    assert_eq!(env.rev_parse("refs/deploys/live"), b);
    let fetched =
        env.git().args(["for-each-ref", "--format=%(refname)", "refs/deploys/"]).success();
    let fetched: Vec<&str> = fetched.stdout.lines().collect();
    let expected: Vec<&str> = refs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(fetched.len(), expected.len(), "{fetched:?} vs {expected:?}");
    for name in expected {
        assert!(fetched.contains(&name), "{name} was not fetched: {fetched:?}");
    }
}
