//! `pushdeploy status`: what is live, as text and as JSON.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::support::{LINK, TestEnv};

#[track_caller]
fn status_json(env: &TestEnv) -> Value {
    let output = env.pushdeploy().args(["status", "--json", "--repo"]).arg(&env.bare).success();
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("status --json printed no JSON object: {e}\n{output}"))
}

/// Removes `live_since` from a status object, asserting it is an RFC 3339 UTC timestamp
/// between `earliest` and now.
#[track_caller]
fn take_live_since(status: &mut Value, earliest: SystemTime) {
    let object = status.as_object_mut().expect("status is a JSON object");
    let live_since = object.remove("live_since");
    let text = live_since.as_ref().and_then(Value::as_str);
    let time = text.and_then(|text| humantime::parse_rfc3339(text).ok());
    let now = SystemTime::now();
    // RFC 3339 text may drop the fraction of a second.
    let earliest = earliest - Duration::from_secs(1);
    assert!(
        time.is_some_and(|time| earliest <= time && time <= now),
        "live_since is not an RFC 3339 time of this deploy: {live_since:?}"
    );
}

#[test]
fn status_json_before_any_deploy_has_nulls() {
    let env = TestEnv::new();
    env.init(&[]);

    let status = status_json(&env);

    let expected = json!({
        "target": env.target.to_string_lossy(),
        "link": LINK,
        "slot": null,
        "commit": null,
        "ref": null,
        "live_since": null,
        "path": null,
    });
    assert_eq!(status, expected);
}

#[test]
fn status_json_reports_live_commit_slot_and_ref() {
    let env = TestEnv::new();
    env.init(&[]);
    for (round, slot) in ["blue", "green"].into_iter().enumerate() {
        env.write("index.html", format!("round {round}\n"));
        let commit = env.commit_all(&format!("round {round}"));
        let pushed_at = SystemTime::now();
        let _ = env.push();

        let mut status = status_json(&env);

        take_live_since(&mut status, pushed_at);
        let expected = json!({
            "target": env.target.to_string_lossy(),
            "link": LINK,
            "slot": slot,
            "commit": commit,
            "ref": "refs/heads/main",
            "path": env.target.join(slot).to_string_lossy(),
        });
        assert_eq!(status, expected, "round {round}");
    }
}

#[test]
fn status_text_names_link_slot_commit_ref_and_since() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "v1\n");
    let commit = env.commit_all("v1");
    let _ = env.push();

    // Without --repo, from inside the repository.
    let output = env.pushdeploy().arg("status").current_dir(&env.bare).success();

    let target = env.target.display();
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            format!("live:   {target}/public_html -> {target}/blue").as_str(),
            "slot:   blue",
            format!("commit: {commit} v1").as_str(),
            "ref:    refs/heads/main",
        ],
        "{output}"
    );
    let since = lines.get(4).and_then(|line| line.strip_prefix("since:  "));
    assert!(
        since.is_some_and(|since| since.len() == 20 && since.ends_with('Z')),
        "no `since:` line with a UTC time\n{output}"
    );
    assert_eq!(lines.len(), 5, "{output}");
}
