//! `pushdeploy serve`: deliveries from a hosted repository deploy its pushes; anything not
//! signed with the secret, too large, or naming a ref with shell characters deploys nothing.

use std::fs;

use crate::support::systemd::Systemd;
use crate::support::webhook::{
    Receiver, SECRET, free_port, gitea_headers, github_headers, host, post, push_hosted,
    push_payload, sign, wait_for_history, wait_for_history_logged,
};
use crate::support::{TestEnv, history::history, short};

/// The name `serve` gives the site: its repository's directory without `.git`.
const SITE: &str = "site";

/// Commits `index.html` with `contents` in the work clone; returns the commit.
fn commit_index(env: &TestEnv, contents: &str) -> String {
    env.write("index.html", contents);
    env.commit_all(contents.trim())
}

#[test]
fn github_delivery_fetches_and_deploys_the_pushed_commit() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "");
    let commit = commit_index(&env, "from github\n");
    push_hosted(&env, "main");
    let receiver = Receiver::start(&env, &[&env.bare], &[]);

    let body = push_payload("refs/heads/main", &commit);
    let (status, text) =
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes());
    assert_eq!((status, text.as_str()), (202, "accepted: fetching and deploying\n"));

    let entries = wait_for_history(&env, &receiver, 1);
    let entry = &entries[0];
    assert_eq!(entry["commit"], commit.as_str(), "{entry}");
    assert_eq!(entry["result"], "live", "{entry}\n{}", receiver.log());
    assert_eq!(entry["trigger"], "webhook", "{entry}");
    assert_eq!(entry["ref"], "refs/heads/main", "{entry}");
    assert_eq!(entry["pusher"], "github", "{entry}");
    let log = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();
    assert!(
        log.stdout.contains(&format!(
            "{}  live    blue   refs/heads/main  (webhook by github; ",
            short(&commit)
        )),
        "{log}"
    );
    env.assert_live_equals_archive(&commit);
    assert_eq!(env.rev_parse("main"), commit);
    let log = receiver.log();
    assert!(
        log.contains(&format!("deploying {} (refs/heads/main) into blue", short(&commit))),
        "{log}"
    );
}

#[test]
fn gitea_deliveries_deploy_each_push_in_turn() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "gitea", "");
    let receiver = Receiver::start(&env, &[&env.bare], &[]);
    for (round, contents) in ["gitea one\n", "gitea two\n"].into_iter().enumerate() {
        let commit = commit_index(&env, contents);
        push_hosted(&env, "main");
        let body = push_payload("refs/heads/main", &commit);
        let (status, _) =
            receiver.post(SITE, &gitea_headers(SECRET, body.as_bytes()), body.as_bytes());
        assert_eq!(status, 202);
        let entries = wait_for_history(&env, &receiver, round + 1);
        assert_eq!(entries[0]["commit"], commit.as_str());
        assert_eq!(entries[0]["result"], "live", "{}", receiver.log());
        assert_eq!(entries[0]["trigger"], "webhook");
        env.assert_live_equals_archive(&commit);
    }
}

/// What a refused delivery is: what is wrong, its headers, its body, the status expected.
type Case<'a> = (&'a str, Vec<(String, String)>, &'a str, u16);

#[test]
fn refused_deliveries_deploy_nothing() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "");
    let receiver = Receiver::start(&env, &[&env.bare], &["--max-body", "4096"]);
    let first = commit_index(&env, "first\n");
    push_hosted(&env, "main");
    let body = push_payload("refs/heads/main", &first);
    assert_eq!(
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes()).0,
        202
    );
    wait_for_history(&env, &receiver, 1);
    let live = env.live_site();

    // A newer commit is on the hosted repository: any delivery that got through would fetch
    // and deploy it.
    let second = commit_index(&env, "second\n");
    push_hosted(&env, "main");
    let body = push_payload("refs/heads/main", &second);
    let marker = env.root.join("pwned");
    let hostile_ref = format!("refs/heads/x$(touch${{IFS}}{})", marker.display());
    let hostile = push_payload(&hostile_ref, &second);
    let replayed = body.replace("refs/heads/main", "refs/heads/other");
    let oversized = format!("{},\"pad\":\"{}\"}}", &body[..body.len() - 1], "x".repeat(8192));

    let with_signature = |signature: &str| {
        let mut headers = github_headers(SECRET, b"");
        headers.retain(|(name, _)| name != "X-Hub-Signature-256");
        headers.push(("X-Hub-Signature-256".into(), signature.to_owned()));
        headers
    };
    let mut unsigned = github_headers(SECRET, b"");
    unsigned.retain(|(name, _)| name != "X-Hub-Signature-256");
    let cases: Vec<Case> = vec![
        (
            "another secret",
            github_headers("not-the-secret-at-all", body.as_bytes()),
            body.as_str(),
            401,
        ),
        ("no signature", unsigned, body.as_str(), 401),
        ("garbage signature", with_signature("sha256=zz"), body.as_str(), 401),
        // The signature of the real delivery, on a body whose ref was changed.
        (
            "replayed with another ref",
            with_signature(&sign(SECRET, body.as_bytes())),
            replayed.as_str(),
            401,
        ),
        ("oversized", github_headers(SECRET, oversized.as_bytes()), oversized.as_str(), 413),
        (
            "shell characters in the ref",
            github_headers(SECRET, hostile.as_bytes()),
            hostile.as_str(),
            422,
        ),
    ];
    for (what, headers, body, expected) in cases {
        let (status, text) = receiver.post(SITE, &headers, body.as_bytes());
        assert_eq!(status, expected, "{what}: {text}\n{}", receiver.log());
    }
    // Nothing was fetched, nothing deployed.
    assert_eq!(
        env.git_in(&env.root)
            .args(["--git-dir"])
            .arg(&env.bare)
            .args(["rev-parse", "main"])
            .success()
            .stdout
            .trim(),
        first
    );
    assert_eq!(history(&env).len(), 1);
    env.assert_live_unchanged(&live);
    assert!(!marker.exists(), "the ref's command ran");
    let log = receiver.log();
    assert!(!log.contains(&format!("accepted a push of main ({}", &second[..12])), "{log}");
    assert!(log.contains("refused: a signature that does not match"), "{log}");
    assert!(log.contains("refused: no signature header"), "{log}");

    // The genuine delivery still deploys afterwards: the refusals above left nothing queued
    // that could have deployed instead of it.
    let (status, _) =
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes());
    assert_eq!(status, 202);
    let entries = wait_for_history(&env, &receiver, 2);
    assert_eq!(entries[0]["commit"], second.as_str());
    assert_eq!(history(&env).len(), 2);
}

#[test]
fn gitlab_token_pings_and_other_branches() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "gitlab", "");
    let receiver = Receiver::start(&env, &[&env.bare], &[]);
    let commit = commit_index(&env, "from gitlab\n");
    push_hosted(&env, "main");
    let body = push_payload("refs/heads/main", &commit);
    let gitlab = |token: &str| {
        vec![
            ("X-Gitlab-Event".to_owned(), "Push Hook".to_owned()),
            ("X-Gitlab-Token".to_owned(), token.to_owned()),
        ]
    };
    assert_eq!(receiver.post(SITE, &gitlab("wrong-token-0123456789"), body.as_bytes()).0, 401);
    // A GitHub signature is no GitLab token.
    assert_eq!(
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes()).0,
        401
    );
    let other = push_payload("refs/heads/feature", &commit);
    assert_eq!(
        receiver.post(SITE, &gitlab(SECRET), other.as_bytes()),
        (200, "ignored: only pushes to the branch \"main\" deploy, not \"feature\"\n".into())
    );
    assert_eq!(receiver.post("nosuch", &gitlab(SECRET), body.as_bytes()).0, 404);
    assert!(history(&env).is_empty());
    assert!(!env.target.join("public_html").exists());

    assert_eq!(receiver.post(SITE, &gitlab(SECRET), body.as_bytes()).0, 202);
    let entries = wait_for_history(&env, &receiver, 1);
    assert_eq!(entries[0]["commit"], commit.as_str());
    assert_eq!(entries[0]["trigger"], "webhook");
    env.assert_live_equals_archive(&commit);
}

#[test]
fn serve_refuses_a_secret_file_every_user_can_read() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "");
    let secret = env.root.join("webhook.secret");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let output = env
        .pushdeploy()
        .args(["serve", "--listen", "127.0.0.1:0", "--repo"])
        .arg(&env.bare)
        .failure();
    assert!(
        output.stderr.contains("is readable by every user") && output.stderr.contains("chmod o-r"),
        "{output}"
    );
}

/// Waits until `done` holds, or fails with serve's log.
#[track_caller]
fn wait_until(receiver: &Receiver, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s\n{}",
            receiver.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn webhook_pushes_and_deletions_of_a_feature_branch_make_and_remove_its_preview() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "\n[previews]\nbranches = [\"feature/*\"]\n");
    let receiver = Receiver::start(&env, &[&env.bare], &[]);
    let _ = env.git().args(["checkout", "--quiet", "-b", "feature/x"]).success();
    let commit = commit_index(&env, "preview from github\n");
    push_hosted(&env, "feature/x");
    let history = env.target.join("previews/feature-x/.pushdeploy/history.jsonl");
    let deploys = || fs::read_to_string(&history).map_or(0, |text| text.lines().count());

    let body = push_payload("refs/heads/feature/x", &commit);
    let (status, text) =
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes());
    assert_eq!((status, text.as_str()), (202, "accepted: fetching and deploying the preview\n"));
    wait_until(&receiver, "the preview's first deploy", || deploys() == 1);
    let line = fs::read_to_string(&history).unwrap();
    assert!(line.contains(r#""trigger":"webhook""#) && line.contains(&commit), "{line}");
    let served = env.target.join("previews/feature-x/public_html/index.html");
    assert_eq!(fs::read_to_string(&served).unwrap(), "preview from github\n");
    // Production was not deployed: no link, no history.
    assert!(!env.target.join("public_html").exists());
    assert!(history_of_production_is_empty(&env));

    // A signed deletion while the hosted repository still has the branch (a replay, say):
    // the hosted repository is asked, and the preview is redeployed, not removed.
    let deleted = push_payload("refs/heads/feature/x", &"0".repeat(40));
    let signed = github_headers(SECRET, deleted.as_bytes());
    assert_eq!(receiver.post(SITE, &signed, deleted.as_bytes()).0, 202);
    wait_until(&receiver, "the preview's redeploy", || deploys() == 2);
    assert_eq!(fs::read_to_string(&served).unwrap(), "preview from github\n");

    // The branch really deleted there: the same delivery removes the preview and the branch.
    let _ = env.git().args(["push", "--quiet", "hosted", ":feature/x"]).success();
    assert_eq!(receiver.post(SITE, &signed, deleted.as_bytes()).0, 202);
    wait_until(&receiver, "the preview's removal", || {
        !env.target.join("previews/feature-x").exists()
    });
    let branches =
        env.git_in(&env.root).arg("--git-dir").arg(&env.bare).args(["branch", "--list"]).success();
    assert!(!branches.stdout.contains("feature/x"), "{}", branches.stdout);
}

fn history_of_production_is_empty(env: &TestEnv) -> bool {
    history(env).is_empty()
}

#[test]
fn deliveries_during_a_deploy_coalesce_and_the_newest_commit_wins() {
    let env = TestEnv::new();
    env.init(&[]);
    // A slow build, so that the later deliveries all arrive while the first one deploys.
    host(&env, "github", "\n[build]\ncommand = \"sleep 5\"\n");
    let receiver = Receiver::start(&env, &[&env.bare], &[]);
    let deliver = |commit: &str| {
        let body = push_payload("refs/heads/main", commit);
        let (status, _) =
            receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes());
        assert_eq!(status, 202);
    };
    let first = commit_index(&env, "one\n");
    push_hosted(&env, "main");
    deliver(&first);
    let building = format!("deploying {} (refs/heads/main)", short(&first));
    wait_until(&receiver, "the first deploy", || receiver.log().contains(&building));
    let mut newest = String::new();
    for contents in ["two\n", "three\n", "four\n"] {
        newest = commit_index(&env, contents);
        push_hosted(&env, "main");
        deliver(&newest);
    }
    let entries = wait_for_history(&env, &receiver, 2);
    // The three waiting deliveries were one fetch of the branch's tip, one deploy.
    let commits: Vec<&str> = entries.iter().rev().filter_map(|e| e["commit"].as_str()).collect();
    assert_eq!(commits, [first.as_str(), newest.as_str()], "{}", receiver.log());
    assert!(entries.iter().all(|e| e["result"] == "live" && e["trigger"] == "webhook"));
    env.assert_live_equals_archive(&newest);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(history(&env).len(), 2, "{}", receiver.log());
}

/// The unit of `site-templates/webhook/` under real systemd: `--sites` finds the site among
/// the other directories, a delivery deploys, and `systemctl stop` ends serve cleanly.
#[test]
fn the_systemd_unit_serves_deliveries_and_stops_cleanly() {
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "");
    let Some(systemd) = Systemd::boot(&env) else { return };
    let port = free_port();
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("site-templates/webhook/pushdeploy-serve.service");
    let unit = fs::read_to_string(&template)
        .expect("read the unit")
        .replace("/usr/local/bin/pushdeploy", crate::support::BIN)
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{port}"))
        .replace("--sites /srv/git", &format!("--sites {}", env.root.display()))
        // The test runs as root, and its repositories live under /tmp, which PrivateTmp hides.
        .replace("User=git", "User=root")
        .replace("Group=git", "Group=root")
        .replace("PrivateTmp=true\n", "");
    assert!(unit.contains(&format!("--listen 127.0.0.1:{port} --sites")), "{unit}");
    systemd.write_unit("pushdeploy-serve.service", &unit);
    let journal = || systemd.journal("pushdeploy-serve.service");
    assert!(systemd.systemctl(&["daemon-reload"]).status.success());
    let started = systemd.systemctl(&["start", "pushdeploy-serve.service"]);
    assert!(started.status.success(), "{started}\n{}", journal());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_logged("serve listening", &journal, || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
    });

    let commit = commit_index(&env, "under systemd\n");
    push_hosted(&env, "main");
    let body = push_payload("refs/heads/main", &commit);
    let answer = post(addr, SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes());
    assert_eq!(answer.as_ref().map(|(status, _)| *status), Ok(202), "{}", journal());
    let entries = wait_for_history_logged(&env, 1, journal);
    assert_eq!(entries[0]["commit"], commit.as_str());
    assert_eq!(entries[0]["result"], "live", "{}", journal());
    env.assert_live_equals_archive(&commit);

    let stopped = systemd.systemctl(&["stop", "pushdeploy-serve.service"]);
    assert!(stopped.status.success(), "{stopped}");
    let state = systemd.systemctl(&["is-active", "pushdeploy-serve.service"]);
    assert_eq!(state.stdout.trim(), "inactive", "{}", journal());
    let log = journal();
    assert!(log.contains("POST http://127.0.0.1:") && log.contains("/hooks/site deploys"), "{log}");
    assert!(log.contains("stopping: no more deliveries are accepted"), "{log}");
}

/// Waits until `done` holds, or fails with `log`.
#[track_caller]
fn wait_until_logged(what: &str, log: &dyn Fn() -> String, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 30 s\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A client that connects and sends nothing holds one of `--max-connections` until the 10 s
/// bound on reading a request's head ends it: a delivery waits for that, then is answered.
#[test]
fn stalled_clients_hold_a_connection_slot_for_a_bounded_time() {
    use std::io::Read as _;
    let env = TestEnv::new();
    env.init(&[]);
    host(&env, "github", "");
    let receiver = Receiver::start(&env, &[&env.bare], &["--max-connections", "1"]);
    // Receiver::start's readiness probe may still hold the slot for a moment: wait until a
    // request is answered before stalling it.
    let ping = [("X-GitHub-Event".to_owned(), "ping".to_owned())];
    let mut headers = ping.to_vec();
    headers.push(("X-Hub-Signature-256".into(), sign(SECRET, b"{}")));
    assert_eq!(receiver.post(SITE, &headers, b"{}"), (200, "pong\n".into()));

    let mut stalled = std::net::TcpStream::connect(receiver.addr).expect("connect");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(receiver.post(SITE, &headers, b"{}"), (200, "pong\n".into()));
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(5) && waited < std::time::Duration::from_secs(20),
        "the second client waited {waited:?}"
    );
    // The stalled connection was closed by serve.
    stalled.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
    let mut rest = Vec::new();
    let closed = stalled.read_to_end(&mut rest);
    assert!(closed.is_ok(), "serve did not close the stalled connection: {closed:?}");
}

#[test]
fn serve_warns_when_a_secret_in_the_config_is_readable_by_every_user() {
    let env = TestEnv::new();
    env.init(&[]);
    let hosted = host(&env, "github", "");
    env.write_config(&format!(
        "{}\n[webhook]\nprovider = \"github\"\nurl = {}\nsecret = \"{SECRET}\"\n",
        env.base_config(),
        crate::support::toml_str(&hosted.to_string_lossy())
    ));
    let config = env.bare.join("pushdeploy.toml");
    fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let receiver = Receiver::start(&env, &[&env.bare], &[]);
    let log = receiver.log();
    assert!(
        log.contains("holds the webhook secret and every user can read it; use `secret_file`"),
        "{log}"
    );
    // It still serves, with that secret.
    let commit = commit_index(&env, "inline\n");
    push_hosted(&env, "main");
    let body = push_payload("refs/heads/main", &commit);
    assert_eq!(
        receiver.post(SITE, &github_headers(SECRET, body.as_bytes()), body.as_bytes()).0,
        202
    );
    assert_eq!(wait_for_history(&env, &receiver, 1)[0]["commit"], commit.as_str());
}
