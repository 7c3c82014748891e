//! `pushdeploy doctor`: every check ok on a healthy site, and each problem it finds, with its fix.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use nix::unistd::User;

use crate::support::site::{commit_version, open_temp_dir, push};
use crate::support::{BIN, TestEnv, short};

/// Runs `pushdeploy doctor --repo BARE`, expecting it to find no problem (`healthy`) or some;
/// returns the exit code and its report's lines, with the temp dir written `$TMP`.
#[track_caller]
fn doctor(env: &TestEnv, healthy: bool) -> (Option<i32>, Vec<String>) {
    let command = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare);
    let output = if healthy { command.success() } else { command.failure() };
    let root = env.root.to_string_lossy();
    let lines = output.stdout.lines().map(|line| line.replace(&*root, "$TMP")).collect();
    (output.code(), lines)
}

/// Returns the `problem` lines of a doctor report.
fn problems(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).filter(|line| line.starts_with("problem  ")).collect()
}

/// Inits (in `mode`) and deploys one commit; returns it.
#[track_caller]
fn env_with_live_site(mode: &str) -> (TestEnv, String) {
    let env = TestEnv::new();
    open_temp_dir(&env);
    env.init(&["--mode", mode]);
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    (env, a)
}

#[test]
fn doctor_on_healthy_site_finds_every_check_ok() {
    for mode in ["post-receive", "pre-receive"] {
        let (env, a) = env_with_live_site(mode);

        let (code, lines) = doctor(&env, true);

        assert_eq!(code, Some(0), "{mode}: {lines:#?}");
        let (summary, checks) = lines.split_last().expect("doctor printed a report");
        assert_eq!(summary, "no problems found", "{mode}");
        let not_ok: Vec<&String> =
            checks.iter().filter(|line| !line.starts_with("ok       ")).collect();
        assert_eq!(not_ok, Vec::<&String>::new(), "{mode}: not every check is ok");
        let expected = [
            "ok       configuration $TMP/site.git/pushdeploy.toml loads".to_owned(),
            format!("ok       $TMP/site.git/hooks/{mode} is installed and executable"),
            format!("ok       the hook runs {}", BIN),
            "ok       push options (git push -o ...) are accepted".to_owned(),
            "ok       target $TMP/www is writable by this user".to_owned(),
            format!("ok       $TMP/www/public_html -> blue is a complete release of {}", short(&a)),
        ];
        for line in expected {
            assert!(checks.contains(&line), "{mode}: no line {line:?} in {lines:#?}");
        }
        if User::from_name("www-data").ok().flatten().is_some() {
            let line = "ok       www-data can read the live release".to_owned();
            assert!(checks.contains(&line), "{mode}: no line {line:?} in {lines:#?}");
        }
        assert!(
            checks.iter().any(|line| line.starts_with("ok       ")
                && line.contains(" free for a release of about ")),
            "{mode}: no free space check in {lines:#?}"
        );
    }
}

#[test]
fn doctor_finds_hook_that_is_not_executable() {
    let (env, _) = env_with_live_site("post-receive");
    let hook = env.bare.join("hooks/post-receive");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o644)).expect("chmod hook");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(3), "{lines:#?}");
    assert_eq!(
        problems(&lines),
        [
            "problem  $TMP/site.git/hooks/post-receive is not executable, so git skips it; run `chmod +x $TMP/site.git/hooks/post-receive`"
        ]
    );
    assert_eq!(lines.last().map(String::as_str), Some("1 problem to fix"));
}

#[test]
fn doctor_finds_hook_whose_binary_is_gone() {
    let env = TestEnv::new();
    open_temp_dir(&env);
    let copy = env.root.join("pushdeploy-copy");
    fs::copy(BIN, &copy).expect("copy the binary");
    let _ =
        env.command(&copy).arg("init").arg(&env.bare).arg("--target").arg(&env.target).success();
    fs::remove_file(&copy).expect("remove the copy");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(3), "{lines:#?}");
    assert_eq!(
        problems(&lines),
        ["problem  the hook runs $TMP/pushdeploy-copy, which is missing or not executable; \
             run `pushdeploy init $TMP/site.git` with the pushdeploy the hook should run \
             (it keeps pushdeploy.toml as it is and rewrites the hooks)"]
    );
}

#[test]
fn doctor_finds_link_pointing_nowhere_and_deploy_fixes_it() {
    let (env, a) = env_with_live_site("post-receive");
    fs::remove_dir_all(env.target.join("blue")).expect("remove the live release");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(3), "{lines:#?}");
    assert_eq!(
        problems(&lines),
        [
            "problem  $TMP/www/public_html points at $TMP/www/blue, which is missing or empty; deploy again with `pushdeploy deploy`"
        ]
    );

    // Doing what it says fixes it.
    env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success().assert_live(
        &a,
        "refs/heads/main",
        "green",
    );
    let (code, lines) = doctor(&env, true);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(lines.last().map(String::as_str), Some("no problems found"));
}

#[test]
fn doctor_finds_missing_target() {
    let (env, _) = env_with_live_site("post-receive");
    fs::remove_dir_all(&env.target).expect("remove the target");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(3), "{lines:#?}");
    assert_eq!(
        problems(&lines),
        [
            "problem  target $TMP/www does not exist; create it (owned by the user that pushes) or fix `target` in the configuration"
        ]
    );
}

#[test]
fn doctor_finds_release_the_web_server_cannot_read() {
    if User::from_name("www-data").ok().flatten().is_none() {
        crate::support::skip("no www-data user here");
        return;
    }
    let (env, _) = env_with_live_site("post-receive");
    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o700)).expect("chmod the target");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(3), "{lines:#?}");
    let expected = "problem  www-data cannot read $TMP/www; run `chmod o+rx $TMP/www` (or give the web server's group access)";
    assert!(problems(&lines).contains(&expected), "{lines:#?}");
}
