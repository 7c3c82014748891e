//! Which pushes deploy and which are ignored, the hook run by hand, `pushdeploy deploy`, and
//! trees that must be refused before anything is served.

use std::path::Path;

use crate::support::{LiveSite, Output, TestEnv, assert_trees_equal};

const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// Asserts pushdeploy printed exactly one line, `pushdeploy: ignored <refname>: <why>`, with
/// `why` containing `reason`.
#[track_caller]
fn assert_ignored(push: &Output, refname: &str, reason: &str) {
    let lines = push.pushdeploy_lines();
    let prefix = format!("pushdeploy: ignored {refname}: ");
    let ok = match lines.as_slice() {
        [line] => line.strip_prefix(&prefix).is_some_and(|why| why.contains(reason)),
        _ => false,
    };
    assert!(ok, "expected one line {prefix:?} mentioning {reason:?}, found {lines:#?}\n{push}");
}

/// Asserts the deploy was refused in materialize with a message naming `path`, and nothing
/// served changed.
#[track_caller]
fn assert_refused(env: &TestEnv, push: &Output, path: &str, before: &LiveSite) {
    let line = push.assert_failed_at("materialize");
    assert!(line.contains(path), "{line:?} does not name {path:?}");
    env.assert_live_unchanged(before);
}

#[test]
fn push_of_other_branch_is_ignored() {
    let (env, _, before) = TestEnv::with_live_site();
    let _ = env.git().args(["switch", "--quiet", "-c", "feature"]).success();
    env.write("index.html", "feature work\n");
    env.commit_all("feature work");

    let push = env.push_ref("feature");

    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: ignored refs/heads/feature: only pushes to the branch \"main\" deploy",
            "pushdeploy: hint: to deploy it, push it as main: git push <remote> feature:main, \
             or set branch = \"feature\" in $TMP/site.git/pushdeploy.toml",
        ],
        "{push}"
    );
    env.assert_live_unchanged(&before);
}

#[test]
fn push_of_tag_is_ignored() {
    let (env, _, before) = TestEnv::with_live_site();
    let _ = env.git().args(["tag", "-a", "v1", "-m", "release v1"]).success();

    let push = env.push_ref("v1");

    assert_ignored(&push, "refs/tags/v1", "main");
    env.assert_live_unchanged(&before);
}

#[test]
fn deletion_of_deploy_branch_is_ignored() {
    let (env, _, before) = TestEnv::with_live_site();
    // Git refuses to delete the branch HEAD points at unless told otherwise.
    let _ = env.git_in(&env.bare).args(["config", "receive.denyDeleteCurrent", "ignore"]).success();

    let push = env.push_ref(":main");

    assert_ignored(&push, "refs/heads/main", "delet");
    env.assert_live_unchanged(&before);
}

#[test]
fn hook_run_by_hand_serves_same_release_as_push() {
    let (env, commit, pushed) = TestEnv::with_live_site();
    let hook = env.bare.join("hooks/post-receive");
    let stdin = format!("{ZERO_ID} {commit} refs/heads/main\n");

    // As an admin would run it: from inside the repository.
    let by_hand = env.command(&hook).current_dir(&env.bare).stdin(stdin.as_str()).success();
    by_hand.assert_live(&commit, "refs/heads/main", &env.live_slot());
    assert_trees_equal(&pushed.tree, &env.live_site().tree);
    env.assert_live_equals_archive(&commit);
    env.assert_no_idle_slot();

    // As git runs it: GIT_DIR set, working directory elsewhere.
    let with_git_dir = env.command(&hook).env("GIT_DIR", &env.bare).stdin(stdin).success();
    with_git_dir.assert_live(&commit, "refs/heads/main", &env.live_slot());
    assert_trees_equal(&pushed.tree, &env.live_site().tree);
    env.assert_no_idle_slot();
}

#[test]
fn deploy_rev_serves_older_commit_and_deploy_serves_tip() {
    let (env, first, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    env.remove("css/style.css");
    env.write("new.html", "new\n");
    let second = env.commit_all("v2");
    env.push().assert_live(&second, "refs/heads/main", "green");

    let older = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg("main~1").success();

    older.assert_live(&first, "main~1", "blue");
    assert_eq!(env.link_target(), Path::new("blue"));
    env.assert_live_equals_archive(&first);
    env.assert_no_idle_slot();

    // Without --repo and REV: the repository is the working directory, the rev the branch tip.
    let tip = env.pushdeploy().arg("deploy").current_dir(&env.bare).success();

    tip.assert_live(&second, "refs/heads/main", "green");
    assert_eq!(env.link_target(), Path::new("green"));
    env.assert_live_equals_archive(&second);
    env.assert_no_idle_slot();
}

#[test]
fn symlink_to_absolute_path_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    env.symlink("leak", "/etc/passwd");
    env.commit_all("leak");

    let push = env.push();

    assert_refused(&env, &push, "leak", &before);
}

#[test]
fn symlink_climbing_out_with_dotdot_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    env.write("docs/index.html", "docs\n");
    env.symlink("docs/up", "../../x");
    env.commit_all("up");

    let push = env.push();

    assert_refused(&env, &push, "docs/up", &before);
}

#[test]
fn symlink_escaping_through_another_symlink_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    // `hop` stays inside (it is the release root), but `hop/..` is the target directory.
    env.symlink("hop", ".");
    env.symlink("exit-via-hop", "hop/..");
    env.commit_all("chain");

    let push = env.push();

    assert_refused(&env, &push, "exit-via-hop", &before);
}

/// Asserts nothing named `evil.txt` was written outside the slots.
#[track_caller]
fn assert_no_evil_outside(env: &TestEnv) {
    for dir in [&env.root, &env.target] {
        let path = dir.join("evil.txt");
        assert!(!path.exists(), "{} was written", path.display());
    }
}

#[test]
fn crafted_dotdot_entry_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    let evil = env.hash_blob(b"evil\n");
    let css = env.hash_blob(b"body {}\n");
    // assets/../../evil.txt is TARGET/evil.txt when written relative to a slot.
    let inner = env.hash_tree(&[("100644", b"evil.txt", &evil)]);
    let up = env.hash_tree(&[("40000", b"..", &inner)]);
    let assets = env.hash_tree(&[("100644", b"style.css", &css), ("40000", b"..", &up)]);

    let push = env.push_crafted(&[("40000", b"assets", &assets)]);

    assert_refused(&env, &push, "assets/..", &before);
    assert_no_evil_outside(&env);
}

#[test]
fn crafted_dot_entry_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    let evil = env.hash_blob(b"evil\n");
    let css = env.hash_blob(b"body {}\n");
    let inner = env.hash_tree(&[("100644", b"evil.txt", &evil)]);
    let assets = env.hash_tree(&[("100644", b"style.css", &css), ("40000", b".", &inner)]);

    let push = env.push_crafted(&[("40000", b"assets", &assets)]);

    assert_refused(&env, &push, "assets/.", &before);
}

#[test]
fn crafted_git_dir_entry_is_refused_in_any_case() {
    let (env, _, before) = TestEnv::with_live_site();
    let config = env.hash_blob(b"[core]\n\tworktree = /\n");
    let git_dir = env.hash_tree(&[("100644", b"config", &config)]);
    for name in [".git", ".Git", ".GIT"] {
        let push = env.push_crafted(&[("40000", name.as_bytes(), &git_dir)]);

        assert_refused(&env, &push, name, &before);
    }
}

#[test]
fn crafted_entry_name_with_slash_is_refused() {
    let (env, _, before) = TestEnv::with_live_site();
    let evil = env.hash_blob(b"evil\n");

    let push = env.push_crafted(&[("100644", b"sub/evil.txt", &evil)]);

    assert_refused(&env, &push, "sub/evil.txt", &before);
}
