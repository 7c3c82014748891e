//! Sites for the operations tests: versions pushed as a named pusher, builds that fail on demand.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::{Cmd, Output, TestEnv, toml_str};

/// Who the test pushes as: `GIT_PUSHER` is the first name pushdeploy looks for.
pub const PUSHER: &str = "alice";

/// A build that passes unless the commit has a file named `fail-build`.
pub const BUILD_FAILS_ON_MARKER: &str = "test ! -e fail-build";

/// What that build's failure says.
pub const BUILD_FAILURE: &str = "`test ! -e fail-build` exited with status 1";

/// Returns the config `init` writes plus `extra` (TOML tables).
pub fn config_with(env: &TestEnv, extra: &str) -> String {
    format!("{}\n{extra}", env.base_config())
}

/// Returns a `[build]` table running `command`.
pub fn build_table(command: &str) -> String {
    format!("[build]\ncommand = {}\n", toml_str(command))
}

/// Commits `index.html` saying `name`; returns the commit.
#[track_caller]
pub fn commit_version(env: &TestEnv, name: &str) -> String {
    env.write("index.html", format!("<p>{name}</p>\n"));
    env.commit_all(name)
}

/// Commits a version whose build fails (see [`BUILD_FAILS_ON_MARKER`]); returns the commit.
#[track_caller]
pub fn commit_failing_version(env: &TestEnv, name: &str) -> String {
    env.write("fail-build", "the build refuses this commit\n");
    commit_version(env, name)
}

/// Returns `git push [-o OPTION]... origin main` as [`PUSHER`], from an environment without
/// an SSH client (which would be added to the pusher's name).
pub fn push_cmd(env: &TestEnv, options: &[&str]) -> Cmd {
    let mut cmd = env.git().env("GIT_PUSHER", PUSHER).env("SSH_CLIENT", "").arg("push");
    for option in options {
        cmd = cmd.args(["-o", option]);
    }
    cmd.args(["origin", "main"])
}

/// Pushes `main` with push options; git reports success even when the deploy fails.
#[track_caller]
pub fn push(env: &TestEnv, options: &[&str]) -> Output {
    push_cmd(env, options).success()
}

/// Returns `pushdeploy deploy --repo BARE REV`.
pub fn deploy_cmd(env: &TestEnv, rev: &str) -> Cmd {
    env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg(rev)
}

/// Inits with `config`, then deploys two versions; returns their commits (in blue, green).
#[track_caller]
pub fn env_with_two_releases(config_extra: &str) -> (TestEnv, String, String) {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, config_extra));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let b = commit_version(&env, "b");
    push(&env, &[]).assert_live(&b, "refs/heads/main", "green");
    (env, a, b)
}

/// Returns where `main` points in the bare repository.
#[track_caller]
pub fn bare_main(env: &TestEnv) -> String {
    let output = env.git_in(&env.bare).args(["rev-parse", "--verify", "main"]).success();
    output.stdout.trim().to_owned()
}

/// Asserts pushdeploy printed `line` (normalized, without the `remote: ` prefix).
#[track_caller]
pub fn assert_said(output: &Output, line: &str) {
    assert!(
        output.pushdeploy_lines().iter().any(|said| said == line),
        "no line {line:?}\n{output}"
    );
}

/// Asserts no line of the output (pushdeploy's or the build's) starts with `prefix`.
#[track_caller]
pub fn assert_no_line_starting(output: &Output, prefix: &str) {
    let stderr = output.normalized_stderr();
    let found: Vec<&str> = stderr.lines().filter(|line| line.starts_with(prefix)).collect();
    assert!(found.is_empty(), "unexpected {found:?}\n{output}");
}

/// Makes the temp dir searchable by everyone, as a real site's parents are: doctor checks
/// that the web server's user can reach the release.
#[track_caller]
pub fn open_temp_dir(env: &TestEnv) {
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temp dir");
}
