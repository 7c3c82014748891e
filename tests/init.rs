//! `pushdeploy init`: what it creates, idempotence, and refusing to overwrite without --force.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::{BIN, LINK, Output, TestEnv};

fn config_path(env: &TestEnv) -> PathBuf {
    env.bare.join("pushdeploy.toml")
}

fn hook_path(env: &TestEnv) -> PathBuf {
    env.bare.join("hooks/post-receive")
}

#[track_caller]
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[track_caller]
fn read_config(env: &TestEnv) -> toml::Table {
    let text = read(&config_path(env));
    text.parse().unwrap_or_else(|e| panic!("pushdeploy.toml is not TOML: {e}\n{text}"))
}

/// Returns the names of `*.pushdeploy-backup` files in the repository and its hooks.
fn backups(env: &TestEnv) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [env.bare.clone(), env.bare.join("hooks")] {
        for entry in fs::read_dir(&dir).expect("read repository dir") {
            let name = entry.expect("read dir entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".pushdeploy-backup") {
                found.push(name.into_owned());
            }
        }
    }
    found
}

/// Asserts a refusal: exit 2 with an error line that points at `--force`.
#[track_caller]
fn assert_refused_without_force(output: &Output) {
    assert_eq!(output.code(), Some(2), "{output}");
    let lines = output.pushdeploy_lines();
    assert!(
        lines.iter().any(|line| line.starts_with("pushdeploy: error: ")),
        "no `pushdeploy: error: ` line\n{output}"
    );
    assert!(output.stderr.contains("--force"), "no hint at --force\n{output}");
}

#[track_caller]
fn assert_hook_runs_pushdeploy(env: &TestEnv) {
    let hook = hook_path(env);
    let mode = fs::metadata(&hook).expect("stat hook").permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "hook mode {mode:o} is not executable");
    let script = read(&hook);
    let canonical = fs::canonicalize(BIN).expect("canonicalize binary");
    assert!(
        script.contains(BIN) || script.contains(&*canonical.to_string_lossy()),
        "the hook does not name {BIN}:\n{script}"
    );
    assert!(script.contains("hook post-receive"), "{script}");
}

#[test]
fn init_creates_repo_config_hook_and_target() {
    let env = TestEnv::new();

    let _ = env.init_cmd(&["--build", "make site", "--publish", "public"]).success();

    let bare = env.git_in(&env.bare).args(["rev-parse", "--is-bare-repository"]).success();
    assert_eq!(bare.stdout, "true\n");
    let head = env.git_in(&env.bare).args(["symbolic-ref", "HEAD"]).success();
    assert_eq!(head.stdout, "refs/heads/main\n");
    let config = read_config(&env);
    let target = env.target.to_string_lossy();
    assert_eq!(config.get("branch").and_then(|v| v.as_str()), Some("main"));
    assert_eq!(config.get("target").and_then(|v| v.as_str()), Some(&*target));
    assert_eq!(config.get("link").and_then(|v| v.as_str()), Some(LINK));
    let build = config.get("build").and_then(|v| v.as_table()).expect("[build] table");
    assert_eq!(build.get("command").and_then(|v| v.as_str()), Some("make site"));
    assert_eq!(build.get("publish").and_then(|v| v.as_str()), Some("public"));
    assert_hook_runs_pushdeploy(&env);
    assert!(env.target.is_dir(), "target directory not created");
}

#[test]
fn init_rerun_with_same_args_is_unchanged() {
    let env = TestEnv::new();
    let _ = env.init_cmd(&[]).success();
    let config = read(&config_path(&env));
    let hook = read(&hook_path(&env));

    let again = env.init_cmd(&[]).success();

    assert!(again.stderr.contains("unchanged"), "{again}");
    assert_eq!(read(&config_path(&env)), config);
    assert_eq!(read(&hook_path(&env)), hook);
    assert_eq!(backups(&env), Vec::<String>::new());
}

#[test]
fn init_with_different_args_refuses_without_force() {
    let env = TestEnv::new();
    let _ = env.init_cmd(&[]).success();
    let config = read(&config_path(&env));

    let refused = env.init_cmd(&["--link", "www"]).failure();

    assert_refused_without_force(&refused);
    assert_eq!(read(&config_path(&env)), config);
    assert_eq!(backups(&env), Vec::<String>::new());
}

#[test]
fn init_force_replaces_config_and_keeps_backup() {
    let env = TestEnv::new();
    let _ = env.init_cmd(&[]).success();
    let old_config = read(&config_path(&env));

    let _ = env.init_cmd(&["--link", "www", "--force"]).success();

    let backup = env.bare.join("pushdeploy.toml.pushdeploy-backup");
    assert_eq!(read(&backup), old_config);
    let config = read_config(&env);
    assert_eq!(config.get("link").and_then(|v| v.as_str()), Some("www"));
    assert_hook_runs_pushdeploy(&env);
}

#[test]
fn init_refuses_foreign_hook_without_force_and_backs_it_up_with_force() {
    let env = TestEnv::new();
    let _ = env.git_in(&env.root).args(["init", "--quiet", "--bare"]).arg(&env.bare).success();
    let foreign = "#!/bin/sh\necho somebody else's hook\n";
    fs::write(hook_path(&env), foreign).expect("write foreign hook");
    fs::set_permissions(hook_path(&env), fs::Permissions::from_mode(0o755)).expect("chmod");

    let refused = env.init_cmd(&[]).failure();

    assert_refused_without_force(&refused);
    assert_eq!(read(&hook_path(&env)), foreign);

    let _ = env.init_cmd(&["--force"]).success();

    assert_eq!(read(&env.bare.join("hooks/post-receive.pushdeploy-backup")), foreign);
    assert_hook_runs_pushdeploy(&env);
}

#[test]
fn init_on_existing_repo_keeps_history_and_moves_head() {
    let env = TestEnv::new();
    let _ = env
        .git_in(&env.root)
        .args(["init", "--quiet", "--bare", "--initial-branch=trunk"])
        .arg(&env.bare)
        .success();
    env.clone_work();
    // The clone's unborn branch is named after the remote HEAD (trunk).
    let _ = env.git().args(["checkout", "--quiet", "-b", "main"]).success();
    env.write("index.html", "before pushdeploy\n");
    let old = env.commit_all("before pushdeploy");
    let _ = env.push();

    let _ = env.init_cmd(&[]).success();

    assert_eq!(env.rev_parse("origin/main"), old);
    let in_bare = env.git_in(&env.bare).args(["rev-parse", "refs/heads/main"]).success();
    assert_eq!(in_bare.stdout.trim(), old);
    let head = env.git_in(&env.bare).args(["symbolic-ref", "HEAD"]).success();
    assert_eq!(head.stdout, "refs/heads/main\n");

    // The installed hook deploys the next push on top of the old history.
    env.write("index.html", "after pushdeploy\n");
    let new = env.commit_all("after pushdeploy");
    env.push().assert_live(&new, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&new);
}
