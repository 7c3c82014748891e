//! The deploy history through real pushes: `pushdeploy log`, as text and as JSON.

use serde_json::Value;

use crate::support::history::{history, mask_log};
use crate::support::site::{
    BUILD_FAILS_ON_MARKER, BUILD_FAILURE, PUSHER, build_table, commit_failing_version,
    commit_version, config_with, push,
};
use crate::support::{TestEnv, short};

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
        "TIME  #3  {c}  failed  blue   refs/heads/main  (push by {PUSHER}; total N s): failed at build: {BUILD_FAILURE}\n\
         TIME  #2  {b}  live    green  refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n\
         TIME  #1  {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
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
