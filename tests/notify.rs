//! `[notify]` through real pushes: a command gets the outcome in its environment, a webhook on
//! a real loopback HTTP server gets a JSON POST, and neither can hold a push.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::site::{
    BUILD_FAILS_ON_MARKER, BUILD_FAILURE, PUSHER, build_table, commit_failing_version,
    commit_version, config_with, push,
};
use crate::support::webhook_receiver::{Answer, WebhookServer};
use crate::support::{TestEnv, toml_str};

/// Waits up to `timeout` for `path` to hold text ending in a newline; returns it.
#[track_caller]
fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} was not written in time", path.display());
        thread::sleep(Duration::from_millis(50));
    }
}

/// Returns what the notifications of run `id` reported (`TARGET/.pushdeploy/logs/ID.notify`).
#[track_caller]
fn notify_report(env: &TestEnv, id: u64, timeout: Duration) -> String {
    wait_for_file(&env.target.join(format!(".pushdeploy/logs/{id}.notify")), timeout)
}

#[test]
fn notify_command_gets_the_outcome_in_its_environment_never_in_its_command_line() {
    let env = TestEnv::new();
    env.init(&[]);
    let out = env.root.join("notified");
    let command = format!(
        "env | grep '^PUSHDEPLOY_' | grep -v -e STARTED_AT -e PUSHDEPLOY_TARGET | sort > {}.$PUSHDEPLOY_LOG_ID",
        out.display()
    );
    env.write_config(&config_with(
        &env,
        &format!(
            "{}\n[notify]\ncommand = {}\nurl = \"https://example.com/\"\n",
            build_table(BUILD_FAILS_ON_MARKER),
            toml_str(&command)
        ),
    ));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let b = commit_failing_version(&env, "b");
    push(&env, &[]).assert_failed_at("build");

    let live = wait_for_file(&env.root.join("notified.1"), Duration::from_secs(10));
    assert_eq!(
        live,
        format!(
            "PUSHDEPLOY_COMMIT={a}\nPUSHDEPLOY_LOG_ID=1\nPUSHDEPLOY_PUSHER={PUSHER}\n\
             PUSHDEPLOY_REASON=\nPUSHDEPLOY_REF=refs/heads/main\nPUSHDEPLOY_RESULT=live\n\
             PUSHDEPLOY_SLOT=blue\nPUSHDEPLOY_STAGE=\nPUSHDEPLOY_URL=https://example.com/\n"
        )
    );
    let failed = wait_for_file(&env.root.join("notified.2"), Duration::from_secs(10));
    assert_eq!(
        failed,
        format!(
            "PUSHDEPLOY_COMMIT={b}\nPUSHDEPLOY_LOG_ID=2\nPUSHDEPLOY_PUSHER={PUSHER}\n\
             PUSHDEPLOY_REASON={BUILD_FAILURE}\nPUSHDEPLOY_REF=refs/heads/main\n\
             PUSHDEPLOY_RESULT=failed\nPUSHDEPLOY_SLOT=green\nPUSHDEPLOY_STAGE=build\n\
             PUSHDEPLOY_URL=https://example.com/\n"
        )
    );
    let report = notify_report(&env, 2, Duration::from_secs(10));
    assert_eq!(report, format!("command `{command}`: ok\n"));

    // A revision named like shell code reaches the command as data.
    let tag = "v1$(touch${IFS}pwned)";
    let _ = env.git().args(["tag", tag, &a]).success();
    let _ = env.git().args(["push", "--quiet", "origin", tag]).success();
    let probe = "printf '%s\\n' \"$PUSHDEPLOY_REF\" > ref-seen";
    env.write_config(&config_with(&env, &format!("[notify]\ncommand = {}\n", toml_str(probe))));
    let _ = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg(tag).success();
    let seen = wait_for_file(&env.target.join("ref-seen"), Duration::from_secs(10));
    assert_eq!(seen, format!("{tag}\n"));
    assert!(!env.target.join("pwned").exists() && !env.root.join("pwned").exists());
}

#[test]
fn webhook_gets_a_json_post_of_each_outcome_it_is_on_for() {
    let server = WebhookServer::start(Answer::Status(204));
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(
        &env,
        &format!(
            "{}\n[notify]\nwebhook = {}\non = [\"failed\"]\n",
            build_table(BUILD_FAILS_ON_MARKER),
            toml_str(&server.url())
        ),
    ));
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    let b = commit_failing_version(&env, "b");
    push(&env, &[]).assert_failed_at("build");

    let received = server.wait_for(1, Duration::from_secs(10));
    let report = notify_report(&env, 2, Duration::from_secs(10));

    assert_eq!(received.len(), 1, "only the failure notifies: {received:?}");
    let head = received[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /hook http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(&received[0].body).expect("a JSON body");
    assert_eq!(body["result"], "failed");
    assert_eq!(body["commit"], b.as_str());
    assert_eq!(body["ref"], "refs/heads/main");
    assert_eq!(body["slot"], "green");
    assert_eq!(body["stage"], "build");
    assert_eq!(body["reason"], BUILD_FAILURE);
    assert_eq!(body["log_id"], 2);
    assert_eq!(body["pusher"], PUSHER);
    assert_eq!(body["target"], env.target.to_string_lossy().as_ref());
    assert_eq!(report, format!("webhook {}: 204 No Content on attempt 1 of 3\n", server.url()));
    assert!(!env.target.join(".pushdeploy/logs/1.notify").exists(), "live is not in `on`");
    let shown = env.pushdeploy().args(["show", "2", "--repo"]).arg(&env.bare).success();
    assert!(shown.stdout.ends_with(&format!("notifications:\n{report}")), "{shown}");
}

#[test]
fn webhook_that_hangs_does_not_hold_the_push() {
    let server = WebhookServer::start(Answer::Hang);
    let env = TestEnv::new();
    env.init(&[]);
    let notify = format!("[notify]\nwebhook = {}\ntimeout = \"1s\"\n", toml_str(&server.url()));
    env.write_config(&config_with(&env, &notify));
    let a = commit_version(&env, "a");

    let started = Instant::now();
    let pushed = push(&env, &[]);
    let took = started.elapsed();

    pushed.assert_live(&a, "refs/heads/main", "blue");
    assert!(took < Duration::from_millis(2500), "the push took {took:?}: {pushed}");
    assert_eq!(server.wait_for(1, Duration::from_secs(5)).len(), 1, "the POST was sent");
    // 3 attempts of 1 s with 1 s and 3 s between them.
    let report = notify_report(&env, 1, Duration::from_secs(20));
    let prefix = format!("webhook {}: ", server.url());
    assert!(
        report.starts_with(&prefix) && report.ends_with(" on each of 3 attempts; gave up\n"),
        "{report}"
    );
    assert!(report.contains("imeout"), "says it timed out: {report}");
    assert_eq!(server.received().len(), 3);
}

#[test]
fn webhook_answering_500_is_retried_then_given_up_and_the_site_stays_live() {
    let server = WebhookServer::start(Answer::Status(500));
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(
        &env,
        &format!("[notify]\nwebhook = {}\n", toml_str(&server.url())),
    ));
    let a = commit_version(&env, "a");

    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");

    let report = notify_report(&env, 1, Duration::from_secs(20));
    assert_eq!(
        report,
        format!(
            "webhook {}: 500 Internal Server Error on each of 3 attempts; gave up\n",
            server.url()
        )
    );
    assert_eq!(server.received().len(), 3);
    let log = env.pushdeploy().args(["log", "-n", "1", "--repo"]).arg(&env.bare).success();
    assert!(log.stdout.contains(" live "), "{log}");
}

#[test]
fn a_check_through_caddy_that_fails_notifies_rolled_back() {
    let Some(caddy) = crate::support::caddy::CaddySite::new("pdnotify") else { return };
    let site = &caddy.site;
    let out = site.env.root.join("notified");
    let command = format!(
        "env | grep -e RESULT -e STAGE -e SLOT -e COMMIT | sort > {}.$PUSHDEPLOY_LOG_ID",
        out.display()
    );
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let front = caddy.front;
    site.edit_config(|config| {
        format!(
            "{config}\n[notify]\ncommand = {}\non = [\"rolled-back\"]\n\n[app.check]\nurl = \"http://{front}/ready\"\n",
            toml_str(&command)
        )
    });
    let b = site.commit("not-ready", "not ready");

    let pushed = site.push();

    let line = pushed.final_line();
    assert!(line.contains("answered HTTP 503; the proxy went back to blue"), "{pushed}");
    let seen = wait_for_file(&site.env.root.join("notified.2"), Duration::from_secs(10));
    assert_eq!(
        seen,
        format!(
            "PUSHDEPLOY_COMMIT={b}\nPUSHDEPLOY_RESULT=rolled-back\nPUSHDEPLOY_SLOT=green\n\
             PUSHDEPLOY_STAGE=activate\n"
        )
    );
}
