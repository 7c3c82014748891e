//! Stored deploy logs through real pushes: every run is a history entry with an id, its
//! output is kept in `TARGET/.pushdeploy/logs/`, bounded, and `pushdeploy show ID` prints it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::history::{history, mask_log};
use crate::support::site::{PUSHER, build_table, commit_version, config_with, push};
use crate::support::{TestEnv, short};

/// Runs `pushdeploy ARGS... --repo BARE` and returns it.
#[track_caller]
fn pushdeploy(env: &TestEnv, args: &[&str]) -> crate::support::Output {
    env.pushdeploy().args(args).arg("--repo").arg(&env.bare).output()
}

/// Returns what the pusher saw from the server: the `remote: ` lines of a push, unpadded.
fn remote_lines(push: &crate::support::Output) -> String {
    let mut text = String::new();
    for line in push.stderr.lines().filter_map(|line| line.strip_prefix("remote: ")) {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Returns the log ids kept in `TARGET/.pushdeploy/logs/`, sorted.
fn kept_logs(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.target.join(".pushdeploy/logs"))
        .expect("read the logs directory")
        .map(|entry| entry.expect("a logs entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|name| name.split('.').next().and_then(|id| id.parse::<u64>().ok()));
    names
}

#[test]
fn every_run_is_in_the_log_and_show_prints_what_the_pusher_saw() {
    let env = TestEnv::new();
    env.init(&[]);
    let build = "echo building the site; echo 'second line' >&2";
    env.write_config(&config_with(&env, &build_table(build)));
    let a = commit_version(&env, "a");
    let first = push(&env, &[]);
    first.assert_live(&a, "refs/heads/main", "blue");
    // An ignored push: another branch.
    let ignored = env
        .git()
        .env("GIT_PUSHER", PUSHER)
        .env("SSH_CLIENT", "")
        .args(["push", "origin", "main:other"])
        .success();
    // A push refused for its option.
    let b = commit_version(&env, "b");
    let _ = env
        .git()
        .env("GIT_PUSHER", PUSHER)
        .env("SSH_CLIENT", "")
        .args(["push", "-o", "dryrun", "origin", "main"])
        .success();
    // A push whose configuration is broken (its target still readable).
    env.write_config(&format!("bogus = 1\n{}", config_with(&env, &build_table(build))));
    let c = commit_version(&env, "c");
    let broken = push(&env, &[]);
    assert_eq!(broken.code(), Some(0), "git accepted the push: {broken}");

    let log = pushdeploy(&env, &["log"]);

    let toml = "$TMP/site.git/pushdeploy.toml";
    let expected = format!(
        "TIME  #4    {c}  error   -      refs/heads/main  (push by {PUSHER}; total N s): {toml}: line 1: unknown field `bogus`, expected one of `branch`, `target`, `link`, `umask`, `world_writable`, `symlinks`, `mode`, `submodules`, `build`, `retire`, `app`, `webhook`, `previews`, `logs`, `notify` (in `bogus = 1`)\n\
         TIME  #3    {b}  error   -      refs/heads/main  (push by {PUSHER}; total N s): unknown push option \"dryrun\" (did you mean dry-run?): nothing was deployed; pushdeploy knows no-cache, skip-build, dry-run and rollback\n\
         TIME  #2    {a}  ignored -      refs/heads/other  (push by {PUSHER}; total N s): only pushes to the branch \"main\" deploy\n\
         TIME  #1    {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
        a = short(&a),
        b = short(&b),
        c = short(&c),
    );
    let root = env.root.to_string_lossy();
    assert_eq!(mask_log(&log.stdout.replace(&*root, "$TMP")), expected, "{log}");

    // `show` prints what each pusher saw, build output included, line for line.
    let shown = pushdeploy(&env, &["show", "1"]);
    assert_eq!(shown.stdout, remote_lines(&first), "{shown}");
    assert!(shown.stdout.contains("\nbuilding the site\nsecond line\n"), "{shown}");
    let shown = pushdeploy(&env, &["show", "#2"]);
    assert_eq!(shown.stdout, remote_lines(&ignored), "{shown}");
    for (id, args) in [("4", &["show", "last"][..]), ("4", &["log", "--full", "4"])] {
        let shown = pushdeploy(&env, args);
        assert_eq!(shown.stdout, remote_lines(&broken), "run {id}: {shown}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&pushdeploy(&env, &["show", "3", "--json"]).stdout).expect("JSON");
    assert_eq!(json["entry"]["id"], 3);
    assert_eq!(json["entry"]["result"], "error");
    assert_eq!(
        json["output"],
        "pushdeploy: error: unknown push option \"dryrun\" (did you mean dry-run?): nothing was deployed; pushdeploy knows no-cache, skip-build, dry-run and rollback\n\
         pushdeploy: hint: push again with a known option, or run `pushdeploy deploy` on the server\n"
    );
    assert_eq!(history(&env)[0]["id"], 4);

    let missing = pushdeploy(&env, &["show", "9"]);
    assert_eq!(missing.code(), Some(2));
    assert_eq!(
        missing.normalized_stderr(),
        "pushdeploy: warning: $TMP/site.git/pushdeploy.toml: line 1: unknown field `bogus`, expected one of `branch`, `target`, `link`, `umask`, `world_writable`, `symlinks`, `mode`, `submodules`, `build`, `retire`, `app`, `webhook`, `previews`, `logs`, `notify` (in `bogus = 1`); reading the history of its target anyway\n\
         pushdeploy: error: no run 9 in the history of $TMP/www\n\
         pushdeploy: hint: `pushdeploy log` lists the runs and their ids\n"
    );

    // Logs are the pusher's alone: the web server's user may not read the build's output.
    let mode = fs::metadata(env.target.join(".pushdeploy/logs/1.log"))
        .expect("1.log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn logs_keep_only_the_newest_runs_configured() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, "[logs]\nkeep = 3\n"));
    for name in ["a", "b", "c", "d", "e"] {
        let _ = commit_version(&env, name);
        let _ = push(&env, &[]);
    }

    assert_eq!(kept_logs(&env), ["3.log", "4.log", "5.log"]);
    let gone = pushdeploy(&env, &["show", "2"]);
    assert_eq!(
        gone.normalized_stderr(),
        "pushdeploy: error: the output of run #2 is no longer kept (the newest 3 runs' are, up to 16.8 MB in all)\n\
         pushdeploy: hint: raise `keep` or `max_size` in [logs] of pushdeploy.toml to keep more\n",
        "{gone}"
    );
    assert_eq!(gone.code(), Some(2));

    // A byte bound: each log here is well over 100 bytes, so only the newest stays.
    env.write_config(&config_with(&env, "[logs]\nmax_size = \"100\"\n"));
    let _ = commit_version(&env, "f");
    let _ = push(&env, &[]);
    assert_eq!(kept_logs(&env), ["6.log"]);

    // Logs removed by hand: ids go on from the history, never given out twice.
    fs::remove_dir_all(env.target.join(".pushdeploy/logs")).expect("remove the logs");
    let _ = commit_version(&env, "g");
    let _ = push(&env, &[]);
    assert_eq!(kept_logs(&env), ["7.log"]);
}

#[test]
fn a_build_that_prints_without_end_keeps_a_bounded_log_with_its_last_lines() {
    let env = TestEnv::new();
    env.init(&[]);
    // About 4 MB of output, then a last line.
    let build = "i=0; while [ $i -lt 40000 ]; do echo \"line $i: $(printf '%080d' 0)\"; i=$((i+1)); done; echo the end";
    env.write_config(&config_with(&env, &build_table(build)));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");

    let size = fs::metadata(env.target.join(".pushdeploy/logs/1.log")).expect("1.log").len();
    assert!(size <= 1024 * 1024 + 200, "the log is {size} bytes");
    let shown = pushdeploy(&env, &["show", "1"]).stdout;
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[..4].iter().any(|line| line.starts_with("line 0: ")), "{:?}", &lines[..4]);
    assert!(shown.contains("lines left out of this log]\n"), "no note of what was left out");
    assert!(lines[lines.len() - 3] == "the end", "{:?}", &lines[lines.len() - 4..]);
    assert!(lines[lines.len() - 1].starts_with("pushdeploy: live: "));
}

#[test]
fn a_planted_logs_symlink_is_refused_and_never_written_through() {
    let env = TestEnv::new();
    env.init(&[]);
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let elsewhere = env.root.join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir elsewhere");
    let logs = env.target.join(".pushdeploy/logs");
    fs::remove_dir_all(&logs).expect("remove logs");
    std::os::unix::fs::symlink(&elsewhere, &logs).expect("plant the symlink");
    let _ = commit_version(&env, "b");

    let refused = push(&env, &[]);

    assert_eq!(
        refused.pushdeploy_lines()[0],
        "pushdeploy: error: cannot set up pushdeploy's state directory: $TMP/www/.pushdeploy/logs is a symlink, not a directory; pushdeploy does not follow it",
        "{refused}"
    );
    assert_eq!(
        fs::read_dir(&elsewhere).expect("read elsewhere").count(),
        0,
        "written through the link"
    );
}

#[test]
fn a_failure_of_the_target_before_the_deploy_is_recorded_with_its_output() {
    let env = TestEnv::new();
    env.init(&[]);
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    // Someone replaced the served link with a directory: no deploy may begin.
    fs::remove_file(env.link_path()).expect("remove the link");
    fs::create_dir(env.link_path()).expect("make a directory there");
    let b = commit_version(&env, "b");

    let failed = push(&env, &[]);

    let log = pushdeploy(&env, &["log", "-n", "1"]);
    let root = env.root.to_string_lossy();
    assert_eq!(
        mask_log(&log.stdout.replace(&*root, "$TMP")),
        format!(
            "TIME  #2    {}  error   -      refs/heads/main  (push by {PUSHER}; total N s): \
             $TMP/www/public_html is a directory, not a symlink; move it away (pushdeploy \
             replaces it with a link to the live release)\n",
            short(&b)
        ),
        "{failed}"
    );
    assert_eq!(pushdeploy(&env, &["show", "2"]).stdout, remote_lines(&failed));
}

/// `logs --deploy ID` (issue 14) is the stored output `show ID` prints, for a site as for an
/// app; it takes no journal options.
#[test]
fn logs_deploy_prints_the_stored_output_of_a_run() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, &build_table("echo building the site")));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let show = pushdeploy(&env, &["show", "last"]);
    let logs = pushdeploy(&env, &["logs", "--deploy", "last"]);
    assert!(show.status.success() && logs.status.success(), "{show}\n{logs}");
    assert!(logs.stdout.contains("building the site"), "{logs}");
    assert_eq!(logs.stdout, show.stdout);
    let both = pushdeploy(&env, &["logs", "--deploy", "last", "-f"]);
    assert_eq!(both.code(), Some(2), "{both}");
}

/// A configuration that is not even TOML (a table header left open) still names its target on
/// its own line: the failed push is in that target's history, with what the pusher saw.
#[test]
fn a_push_with_a_configuration_that_is_not_toml_is_in_the_history() {
    let env = TestEnv::new();
    env.init(&[]);
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    env.write_config(&format!("{}[build\ncommand = \"true\"\n", config_with(&env, "")));
    let b = commit_version(&env, "b");
    let broken = push(&env, &[]);
    assert!(broken.stderr.contains("pushdeploy.toml"), "{broken}");
    let entries = history(&env);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        (entries[0]["result"].as_str(), entries[0]["commit"].as_str()),
        (Some("error"), Some(b.as_str()))
    );
    let shown = pushdeploy(&env, &["show", "last"]);
    assert_eq!(shown.stdout, remote_lines(&broken), "{shown}");
}
