//! The deploy history as `pushdeploy log` prints it, and the deploy refs of the bare repository.

use serde_json::Value;

use super::TestEnv;

/// Returns the history as `pushdeploy log --json` prints it, newest first.
#[track_caller]
pub fn history(env: &TestEnv) -> Vec<Value> {
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
pub fn newest_entry(env: &TestEnv) -> Value {
    history(env).into_iter().next().expect("the history has an entry")
}

/// Returns `refs/deploys/*` of the bare repository as `(name, commit)`, via `git ls-remote`.
#[track_caller]
pub fn deploy_refs(env: &TestEnv) -> Vec<(String, String)> {
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
pub fn live_ref(env: &TestEnv) -> Option<String> {
    deploy_refs(env).into_iter().find(|(name, _)| name == "refs/deploys/live").map(|(_, id)| id)
}

/// Replaces the leading RFC 3339 time of each `log` line with `TIME` and each duration
/// (`0.05 s`) with `N s`, asserting the time is one.
#[track_caller]
pub fn mask_log(text: &str) -> String {
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
