//! `pushdeploy env` (issue 14, secrets): values kept outside git in the app's environment
//! directory, set by root, taking effect by a blue/green cycle of the live release behind a real
//! Caddy with the health gate (the old instance serves until the new one passed it: no request
//! fails), and never printed: not by `env` itself, the deploy it runs, `log` or `status`.

use std::time::Duration;

use crate::support::BIN;
use crate::support::app::AppSite;
use crate::support::caddy::CaddySite;
use crate::support::load::{Connection, LoadChecker, LoadOptions, Mode, Versions};

const SECRET: &str = "s3cr3t-value-42";

#[test]
fn env_set_reaches_the_app_through_a_gated_cycle_and_its_value_is_never_printed() {
    let Some(caddy) = CaddySite::new("pdenv1-") else { return };
    let site = &caddy.site;
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let env_of = |name: &str| {
        let answer =
            Connection::new(caddy.front, Duration::from_secs(5)).get(&format!("/env/{name}"));
        let answer = answer.unwrap_or_else(|e| panic!("GET /env/{name}: {e}"));
        String::from_utf8_lossy(&answer.body).into_owned()
    };
    assert_eq!(env_of("SECRET_TOKEN"), "");
    let versions = Versions::new();
    versions.add(0, "/", a.as_bytes());
    let options = LoadOptions {
        connections: 2,
        max_duration: Duration::from_secs(120),
        pause: Duration::from_millis(5),
        ..LoadOptions::default()
    };
    let load = LoadChecker::start(caddy.front, Mode::Requests { versions }, options);
    assert!(load.wait_for_requests(20, Duration::from_secs(10)), "no load through Caddy");
    let env_cmd = |args: &[&str]| {
        site.systemd
            .run_as_root(&site.env, BIN)
            .arg("env")
            .args(args)
            .arg("--repo")
            .arg(&site.env.bare)
    };

    let set = env_cmd(&["set", &format!("SECRET_TOKEN={SECRET}")]).success();
    let lines = set.pushdeploy_lines();
    assert_eq!(lines[0], "pushdeploy: set SECRET_TOKEN (the value is not shown)", "{set}");
    let again = format!(
        "pushdeploy: deploying the live release {} again, so that a new instance starts with it",
        &a[..7]
    );
    assert!(lines.contains(&again), "{set}");
    set.assert_live(&a, &a, "green");
    assert_eq!(env_of("SECRET_TOKEN"), SECRET);

    // A value from standard input, kept out of the process list.
    let stdin = env_cmd(&["set", "FROM_STDIN"]).stdin("read from stdin\n").success();
    stdin.assert_live(&a, &a, "blue");
    assert_eq!(
        (env_of("FROM_STDIN"), env_of("SECRET_TOKEN")),
        ("read from stdin".into(), SECRET.into())
    );

    let list = env_cmd(&["list"]).success();
    assert_eq!(list.stdout, "FROM_STDIN=******\nSECRET_TOKEN=******\n", "{list}");

    let unset = env_cmd(&["unset", "SECRET_TOKEN"]).success();
    unset.assert_live(&a, &a, "green");
    assert_eq!(env_of("SECRET_TOKEN"), "");
    let missing = env_cmd(&["unset", "SECRET_TOKEN"]).failure();
    assert!(missing.stderr.contains("the app has no secret \"SECRET_TOKEN\""), "{missing}");
    let bad = env_cmd(&["set", "PORT=1"]).failure();
    assert!(bad.stderr.contains("\"PORT\" is set by pushdeploy for each slot"), "{bad}");

    let report = load.stop();
    assert_eq!((report.failed(), report.wrong_bodies, report.stale_bodies), (0, 0, 0), "{report}");
    eprintln!("env cycles under load: {report}");

    // The value is in no output: not the cycles', not log's, not status's.
    let log =
        site.systemd.run(&site.env, BIN).args(["log", "--json", "--repo"]).arg(&site.env.bare);
    let status =
        site.systemd.run(&site.env, BIN).args(["status", "--json", "--repo"]).arg(&site.env.bare);
    for output in [set, stdin, list, unset, log.success(), status.success()] {
        let text = format!("{}{}", output.stdout, output.stderr);
        assert!(!text.contains(SECRET) && !text.contains("read from stdin"), "{output}");
    }
}

/// In production the repository and the target are the git user's: root's `env set` opens
/// that repository, and the redeploy runs as the git user (through its sudo rules).
#[test]
fn env_set_by_root_redeploys_as_the_git_user() {
    let Some(site) = AppSite::with_git_user("pdenv2a-", "pdenv2g-", &[]) else { return };
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let set = site
        .systemd
        .run_as_root(&site.env, BIN)
        .args(["env", "set", &format!("SECRET_TOKEN={SECRET}"), "--repo"])
        .arg(&site.env.bare)
        .success();
    set.assert_live(&a, &a, "green");
    let answer = Connection::new(([127, 0, 0, 1], site.green).into(), Duration::from_secs(5))
        .get("/env/SECRET_TOKEN")
        .expect("GET /env/SECRET_TOKEN on green");
    assert_eq!(String::from_utf8_lossy(&answer.body), SECRET);
    assert_eq!(site.state("blue"), "inactive", "{set}");
    // The deploy ran as the git user: the records it wrote are theirs.
    let git_uid = site.git_user.as_ref().expect("git user").uid;
    let history = site.env.target.join(".pushdeploy/history.jsonl");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&history).expect("history")),
        git_uid
    );
    assert!(!set.stderr.contains(SECRET) && !set.stdout.contains(SECRET), "{set}");
}
