//! Day-two operations through real pushes: the deploy history (`log`), the deploy refs,
//! `rollback` (instant and rebuilt), pre-receive mode, the push options, `doctor`, and
//! `install.sh --site` with `--uninstall`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::unistd::User;
use serde_json::Value;

use crate::support::install::{build_release, install_sh};
use crate::support::{BIN, Cmd, Output, TestEnv, assert_trees_equal, short, toml_str};

/// Who the test pushes as: `GIT_PUSHER` is the first name pushdeploy looks for.
const PUSHER: &str = "alice";

/// A build that passes unless the commit has a file named `fail-build`.
const BUILD_FAILS_ON_MARKER: &str = "test ! -e fail-build";

/// What that build's failure says.
const BUILD_FAILURE: &str = "`test ! -e fail-build` exited with status 1";

/// Returns the config `init` writes plus `extra` (TOML tables).
fn config_with(env: &TestEnv, extra: &str) -> String {
    format!("{}\n{extra}", env.base_config())
}

/// Returns a `[build]` table running `command`.
fn build_table(command: &str) -> String {
    format!("[build]\ncommand = {}\n", toml_str(command))
}

/// Commits `index.html` saying `name`; returns the commit.
#[track_caller]
fn commit_version(env: &TestEnv, name: &str) -> String {
    env.write("index.html", format!("<p>{name}</p>\n"));
    env.commit_all(name)
}

/// Commits a version whose build fails (see [`BUILD_FAILS_ON_MARKER`]); returns the commit.
#[track_caller]
fn commit_failing_version(env: &TestEnv, name: &str) -> String {
    env.write("fail-build", "the build refuses this commit\n");
    commit_version(env, name)
}

/// Returns `git push [-o OPTION]... origin main` as [`PUSHER`], from an environment without
/// an SSH client (which would be added to the pusher's name).
fn push_cmd(env: &TestEnv, options: &[&str]) -> Cmd {
    let mut cmd = env.git().env("GIT_PUSHER", PUSHER).env("SSH_CLIENT", "").arg("push");
    for option in options {
        cmd = cmd.args(["-o", option]);
    }
    cmd.args(["origin", "main"])
}

/// Pushes `main` with push options; git reports success even when the deploy fails.
#[track_caller]
fn push(env: &TestEnv, options: &[&str]) -> Output {
    push_cmd(env, options).success()
}

/// Returns `pushdeploy rollback --repo BARE [REV]`.
fn rollback_cmd(env: &TestEnv, rev: Option<&str>) -> Cmd {
    env.pushdeploy().args(["rollback", "--repo"]).arg(&env.bare).args(rev)
}

/// Returns the history as `pushdeploy log --json` prints it, newest first.
#[track_caller]
fn history(env: &TestEnv) -> Vec<Value> {
    let output = env.pushdeploy().args(["log", "--json", "--repo"]).arg(&env.bare).success();
    let value: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("log --json printed no JSON: {e}\n{output}"));
    match value {
        Value::Array(entries) => entries,
        other => panic!("log --json printed {other}, not an array"),
    }
}

/// Returns the newest history entry.
#[track_caller]
fn newest_entry(env: &TestEnv) -> Value {
    history(env).into_iter().next().expect("the history has an entry")
}

/// Returns `refs/deploys/*` of the bare repository as `(name, commit)`, via `git ls-remote`.
#[track_caller]
fn deploy_refs(env: &TestEnv) -> Vec<(String, String)> {
    let output =
        env.git_in(&env.root).arg("ls-remote").arg(&env.bare).arg("refs/deploys/*").success();
    output
        .stdout
        .lines()
        .map(|line| {
            let (id, name) = line.split_once('\t').expect("ls-remote prints `<id>\\t<ref>`");
            (name.to_owned(), id.to_owned())
        })
        .collect()
}

/// Returns what `refs/deploys/live` names in the bare repository.
#[track_caller]
fn live_ref(env: &TestEnv) -> Option<String> {
    deploy_refs(env).into_iter().find(|(name, _)| name == "refs/deploys/live").map(|(_, id)| id)
}

/// Returns where `main` points in the bare repository.
#[track_caller]
fn bare_main(env: &TestEnv) -> String {
    let output = env.git_in(&env.bare).args(["rev-parse", "--verify", "main"]).success();
    output.stdout.trim().to_owned()
}

/// Asserts pushdeploy printed `line` (normalized, without the `remote: ` prefix).
#[track_caller]
fn assert_said(output: &Output, line: &str) {
    assert!(
        output.pushdeploy_lines().iter().any(|said| said == line),
        "no line {line:?}\n{output}"
    );
}

/// Asserts no line of the output (pushdeploy's or the build's) starts with `prefix`.
#[track_caller]
fn assert_no_line_starting(output: &Output, prefix: &str) {
    let stderr = output.normalized_stderr();
    let found: Vec<&str> = stderr.lines().filter(|line| line.starts_with(prefix)).collect();
    assert!(found.is_empty(), "unexpected {found:?}\n{output}");
}

/// Replaces the leading RFC 3339 time of each `log` line with `TIME` and each duration
/// (`0.05 s`) with `N s`, asserting the time is one.
#[track_caller]
fn mask_log(text: &str) -> String {
    let mut masked = String::new();
    for line in text.lines() {
        let (time, rest) = line.split_once("  ").unwrap_or((line, ""));
        assert!(
            humantime::parse_rfc3339(time).is_ok(),
            "log line does not start with an RFC 3339 time: {line:?}"
        );
        masked.push_str("TIME  ");
        masked.push_str(&mask_durations(rest));
        masked.push('\n');
    }
    masked
}

/// Replaces each decimal number followed by ` s` with `N`.
fn mask_durations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let number_end = rest[start..]
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .map_or(rest.len(), |len| start + len);
        let number = &rest[start..number_end];
        let after = &rest[number_end..];
        if number.contains('.') && after.starts_with(" s") {
            out.push('N');
        } else {
            out.push_str(number);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Returns `text` with each run of spaces made one space.
fn squeeze_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if !(ch == ' ' && out.ends_with(' ')) {
            out.push(ch);
        }
    }
    out
}

/// Inits with `config`, then deploys two versions; returns their commits (in blue, green).
#[track_caller]
fn env_with_two_releases(config_extra: &str) -> (TestEnv, String, String) {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, config_extra));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let b = commit_version(&env, "b");
    push(&env, &[]).assert_live(&b, "refs/heads/main", "green");
    (env, a, b)
}

#[test]
fn log_lists_deploys_newest_first_with_the_failed_one() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, &build_table(BUILD_FAILS_ON_MARKER)));
    let empty = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();
    assert_eq!(empty.stdout, "no deploys yet\n");
    assert_eq!(history(&env), Vec::<Value>::new());
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let b = commit_version(&env, "b");
    push(&env, &[]).assert_live(&b, "refs/heads/main", "green");
    let c = commit_failing_version(&env, "c");
    push(&env, &[]).assert_failed_at("build");

    let log = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();

    let expected = format!(
        "TIME  {c}  failed  blue   refs/heads/main  (push by {PUSHER}; total N s): failed at build: {BUILD_FAILURE}\n\
         TIME  {b}  live    green  refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n\
         TIME  {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
        a = short(&a),
        b = short(&b),
        c = short(&c),
    );
    // Column widths are checked by `log_columns_line_up_whatever_the_slot`.
    assert_eq!(squeeze_spaces(&mask_log(&log.stdout)), squeeze_spaces(&expected), "{log}");

    let limited = env.pushdeploy().args(["log", "-n", "2", "--repo"]).arg(&env.bare).success();
    let first_two: Vec<&str> = log.stdout.lines().take(2).collect();
    assert_eq!(limited.stdout.lines().collect::<Vec<_>>(), first_two, "{limited}");

    let entries = history(&env);
    let commits: Vec<&str> = entries.iter().filter_map(|e| e["commit"].as_str()).collect();
    assert_eq!(commits, [c.as_str(), b.as_str(), a.as_str()], "newest first");
    for (entry, (result, slot)) in
        entries.iter().zip([("failed", "blue"), ("live", "green"), ("live", "blue")])
    {
        assert_eq!(entry["result"], result, "{entry}");
        assert_eq!(entry["slot"], slot, "{entry}");
        assert_eq!(entry["ref"], "refs/heads/main", "{entry}");
        assert_eq!(entry["trigger"], "push", "{entry}");
        assert_eq!(entry["pusher"], PUSHER, "{entry}");
        assert!(entry["total"].as_f64().is_some_and(|total| total >= 0.0), "{entry}");
        assert!(humantime::parse_rfc3339(entry["started_at"].as_str().unwrap_or("")).is_ok());
    }
    let stage_names = |entry: &Value| -> Vec<String> {
        let stages = entry["stages"].as_array().expect("stages is an array");
        stages.iter().map(|stage| stage[0].as_str().expect("stage name").to_owned()).collect()
    };
    let failed = &entries[0];
    assert_eq!(failed["failed_stage"], "build", "{failed}");
    assert_eq!(failed["error"], BUILD_FAILURE, "{failed}");
    assert_eq!(failed.get("time_to_live"), None, "{failed}");
    assert_eq!(stage_names(failed), ["prepare", "materialize", "build"]);
    for good in &entries[1..] {
        assert_eq!(good.get("failed_stage"), None, "{good}");
        assert_eq!(good.get("error"), None, "{good}");
        assert!(good["time_to_live"].as_f64().is_some(), "{good}");
        assert_eq!(
            stage_names(good),
            ["prepare", "materialize", "build", "verify", "activate", "retire"]
        );
    }

    let one =
        env.pushdeploy().args(["log", "--json", "-n", "1", "--repo"]).arg(&env.bare).success();
    let one: Value = serde_json::from_str(&one.stdout).expect("log --json -n 1 prints JSON");
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one[0]["commit"], c.as_str());
}

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

    // The release it replaced stays kept: rolling back again is instant too.
    assert!(env.target.join("green").is_dir(), "the replaced release was not kept");
    let again = rollback_cmd(&env, None).success();

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
    let rollback_again = rollback_cmd(&env, None).success();
    rollback_again.assert_live(&b, "refs/heads/main", "green");
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

#[test]
fn pre_receive_mode_rejects_push_whose_build_fails() {
    let env = TestEnv::new();
    env.init(&["--mode", "pre-receive", "--build", BUILD_FAILS_ON_MARKER]);
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
    env.init(&["--mode", "pre-receive", "--build", BUILD_FAILS_ON_MARKER]);
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
    env.init(&["--build", "echo compiling; exit 1"]);
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
    env.init(&["--build", "echo compiling"]);
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

#[test]
fn unknown_push_option_is_ignored_with_a_line() {
    let env = TestEnv::new();
    env.init(&[]);
    let a = commit_version(&env, "a");

    let push = push(&env, &["frobnicate"]);

    assert_said(
        &push,
        "pushdeploy: ignored push option \"frobnicate\": pushdeploy knows no-cache, skip-build, dry-run and rollback",
    );
    push.assert_live(&a, "refs/heads/main", "blue");
}

#[test]
fn deploy_flags_dry_run_and_skip_build() {
    let env = TestEnv::new();
    env.init(&["--build", "echo compiling; exit 1"]);
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

/// Makes the temp dir searchable by everyone, as a real site's parents are: doctor checks
/// that the web server's user can reach the release.
#[track_caller]
fn open_temp_dir(env: &TestEnv) {
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temp dir");
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

    assert_eq!(code, Some(1), "{lines:#?}");
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

    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(
        problems(&lines),
        [
            "problem  the hook runs $TMP/pushdeploy-copy, which is missing or not executable; run `pushdeploy init` again to reinstall it"
        ]
    );
}

#[test]
fn doctor_finds_link_pointing_nowhere_and_deploy_fixes_it() {
    let (env, a) = env_with_live_site("post-receive");
    fs::remove_dir_all(env.target.join("blue")).expect("remove the live release");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(1), "{lines:#?}");
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

    assert_eq!(code, Some(1), "{lines:#?}");
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
        eprintln!("notice: skipping: no www-data user here");
        return;
    }
    let (env, _) = env_with_live_site("post-receive");
    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o700)).expect("chmod the target");

    let (code, lines) = doctor(&env, false);

    assert_eq!(code, Some(1), "{lines:#?}");
    let expected = "problem  www-data cannot read $TMP/www; run `chmod o+rx $TMP/www` (or give the web server's group access)";
    assert!(problems(&lines).contains(&expected), "{lines:#?}");
}

/// Returns the lines of install.sh's record of what it installed.
#[track_caller]
fn installed_files(prefix: &Path) -> Vec<String> {
    let manifest = prefix.join("share/pushdeploy/installed-files");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    text.lines().map(str::to_owned).collect()
}

#[test]
fn install_site_is_idempotent_and_uninstall_removes_only_what_it_installed() {
    let env = TestEnv::new();
    build_release(&env);
    let prefix = env.root.join("prefix");
    // Someone else's files in the same prefix.
    let others = [prefix.join("bin/other-tool"), prefix.join("share/other/data")];
    for path in &others {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
        fs::write(path, "not pushdeploy's\n").expect("write a foreign file");
    }
    let site_args = |command: Cmd| {
        command.args(["--site", "site", "--target"]).arg(&env.target).arg("--repos").arg(&env.root)
    };

    let first = site_args(install_sh(&env, &prefix)).success();

    let bin = prefix.join("bin/pushdeploy");
    assert!(bin.is_file(), "{} was not installed\n{first}", bin.display());
    let hook = fs::read_to_string(env.bare.join("hooks/post-receive")).expect("read the hook");
    assert!(
        hook.contains(&*bin.to_string_lossy()),
        "the hook does not run the installed binary:\n{hook}"
    );
    let stderr = first.normalized_stderr();
    assert!(
        stderr.lines().any(|line| line.starts_with("install.sh: site site: push to ssh://")
            && line.ends_with(
                "$TMP/site.git, serve $TMP/www/public_html (see site-templates/servers/)"
            )),
        "{first}"
    );
    let recorded = [bin.to_string_lossy().into_owned(), format!("site:{}", env.bare.display())];
    assert_eq!(installed_files(&prefix), recorded);

    // Again: nothing changes, nothing is recorded twice.
    let config = fs::read(env.bare.join("pushdeploy.toml")).expect("read the config");
    let second = site_args(install_sh(&env, &prefix)).success();
    assert_eq!(installed_files(&prefix), recorded, "{second}");
    assert_eq!(fs::read(env.bare.join("pushdeploy.toml")).expect("read the config"), config);

    // The site it set up deploys.
    env.clone_work();
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&a);
    let before = env.live_site();

    let uninstall = install_sh(&env, &prefix).arg("--uninstall").success();

    assert!(!bin.exists(), "{} is still installed\n{uninstall}", bin.display());
    assert!(!prefix.join("share/pushdeploy").exists(), "install.sh's record is left\n{uninstall}");
    for path in &others {
        assert!(path.is_file(), "{} was removed\n{uninstall}", path.display());
    }
    let said = uninstall.normalized_stderr();
    for line in [
        "install.sh: removed $TMP/prefix/bin/pushdeploy",
        "install.sh: left in place: $TMP/site.git and its target (remove them by hand if you want)",
    ] {
        assert!(said.lines().any(|said| said == line), "no line {line:?}\n{uninstall}");
    }
    assert!(env.bare.join("pushdeploy.toml").is_file(), "the site's repository was touched");
    env.assert_live_unchanged(&before);
}

/// Deletes a system user when dropped (one install.sh created for a test).
struct RemoveUserOnDrop(String);

impl Drop for RemoveUserOnDrop {
    fn drop(&mut self) {
        let status = Command::new("userdel").arg(&self.0).stderr(Stdio::null()).status();
        if !status.is_ok_and(|status| status.success()) {
            eprintln!("warning: could not delete the test user {0}; run `userdel {0}`", self.0);
        }
    }
}

// As root with --git-user, install.sh creates REPOS/NAME.git (empty, owned by the user) before
// running `pushdeploy init` on it as that user, and init refuses an existing empty directory.
#[test]
fn install_git_user_owns_the_site_and_uninstall_leaves_the_user() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "install.sh --git-user needs root, and CI is set"
        );
        eprintln!("notice: skipping: install.sh --git-user needs root");
        return;
    }
    let env = TestEnv::new();
    // The user reaches the prefix and its repositories through the temp dir.
    open_temp_dir(&env);
    build_release(&env);
    let prefix = env.root.join("prefix");
    let repos = env.root.join("git");
    let name = format!("pdinst{}", std::process::id());
    let _remove_user = RemoveUserOnDrop(name.clone());

    let install = install_sh(&env, &prefix)
        .args(["--git-user", &name, "--site", "example.com", "--target"])
        .arg(&env.target)
        .arg("--repos")
        .arg(&repos)
        .success();

    let user = User::from_name(&name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("install.sh created no user {name}\n{install}"));
    assert!(user.shell.ends_with("git-shell"), "login shell {}", user.shell.display());
    assert_eq!(user.dir, repos);
    let repo = repos.join("example.com.git");
    for path in
        [&repo, &repo.join("pushdeploy.toml"), &repo.join("hooks/post-receive"), &env.target]
    {
        let owner =
            fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).uid();
        assert_eq!(
            owner,
            user.uid.as_raw(),
            "{} is not owned by {name}\n{install}",
            path.display()
        );
    }
    let bin = prefix.join("bin/pushdeploy");
    let recorded = [
        bin.to_string_lossy().into_owned(),
        format!("user:{name}"),
        format!("site:{}", repo.display()),
    ];
    assert_eq!(installed_files(&prefix), recorded);

    let uninstall = install_sh(&env, &prefix).arg("--uninstall").success();

    assert!(!bin.exists(), "{} is still installed\n{uninstall}", bin.display());
    let expected = format!(
        "install.sh: left in place: the user {name} (remove it with 'userdel {name}' once its repositories are gone)"
    );
    assert!(uninstall.normalized_stderr().lines().any(|line| line == expected), "{uninstall}");
    assert!(User::from_name(&name).ok().flatten().is_some(), "the user was removed");
    assert!(repo.join("pushdeploy.toml").is_file(), "the site's repository was removed");
}
