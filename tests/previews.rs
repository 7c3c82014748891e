//! Branch previews: a push of a branch matching `[previews] branches` deploys it into
//! `TARGET/previews/<slug>/`, leaving production byte for byte as it was; deleting the branch
//! removes it; `max` bounds how many exist; a real web server serves them by host name.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::history::deploy_refs;
use crate::support::servers::{ServerKind, WebServer};
use crate::support::{Output, TestEnv, Tree, assert_trees_equal};

/// `[previews]` with `feature/*`, an address per preview, and `extra` lines.
fn previews_config(env: &TestEnv, extra: &str) -> String {
    format!(
        "{}\n[previews]\nbranches = [\"feature/*\"]\nurl = \"http://{{slug}}.preview.test/\"\n{extra}",
        env.base_config()
    )
}

/// Production's whole target but the previews (and their records): every file, link and mode.
fn production(env: &TestEnv) -> (Tree, Vec<(String, String)>) {
    let mut tree = env.snapshot_tree(&env.target);
    tree.retain(|path, _| {
        !path.starts_with("previews") && !path.to_string_lossy().starts_with(".pushdeploy/previews")
    });
    (tree, deploy_refs(env))
}

#[track_caller]
fn assert_production_unchanged(env: &TestEnv, before: &(Tree, Vec<(String, String)>)) {
    let now = production(env);
    assert_trees_equal(&before.0, &now.0);
    assert_eq!(before.1, now.1, "the deploy refs changed");
}

/// Returns a preview's directory.
fn preview_dir(env: &TestEnv, slug: &str) -> PathBuf {
    env.target.join("previews").join(slug)
}

/// Returns what a preview's link serves, as a tree.
#[track_caller]
fn preview_tree(env: &TestEnv, slug: &str) -> Tree {
    let link = preview_dir(env, slug).join("public_html");
    env.snapshot_tree(link.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", link.display())))
}

/// Returns a preview's own history, oldest first.
#[track_caller]
fn preview_history(env: &TestEnv, slug: &str) -> Vec<serde_json::Value> {
    let path = preview_dir(env, slug).join(".pushdeploy/history.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|line| serde_json::from_str(line).expect("a history line")).collect()
}

/// Commits `index.html` with `contents` on `branch` (made from main when new) and pushes it.
#[track_caller]
fn push_branch(env: &TestEnv, branch: &str, contents: &str) -> (String, Output) {
    let exists =
        env.git().args(["rev-parse", "--verify", "--quiet", branch]).output().status.success();
    if exists {
        let _ = env.git().args(["checkout", "--quiet", branch]).success();
    } else {
        let _ = env.git().args(["checkout", "--quiet", "-b", branch, "main"]).success();
    }
    env.write("index.html", contents);
    let commit = env.commit_all(contents.trim());
    let output = env.push_ref(branch);
    let _ = env.git().args(["checkout", "--quiet", "main"]).success();
    (commit, output)
}

fn preview_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.target.join("previews"))
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn feature_branch_goes_live_in_its_preview_and_production_stays_as_it_was() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&previews_config(&env, ""));
    let before = production(&env);

    let (commit, output) = push_branch(&env, "feature/x", "preview of x\n");
    let said = output.pushdeploy_lines();
    assert!(
        said.iter().any(|line| line == "pushdeploy: preview: http://feature-x.preview.test/"),
        "{output}"
    );
    assert!(!said.iter().any(|line| line.starts_with("pushdeploy: ignored")), "{output}");
    assert_trees_equal(&env.archive_tree(&commit), &preview_tree(&env, "feature-x"));
    let history = preview_history(&env, "feature-x");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["commit"], commit.as_str());
    assert_eq!(history[0]["ref"], "refs/heads/feature/x");
    assert_eq!(history[0]["result"], "live");
    assert_production_unchanged(&env, &before);

    // A second push of the branch replaces the preview, in its other slot.
    let (second, _) = push_branch(&env, "feature/x", "preview of x, again\n");
    assert_trees_equal(&env.archive_tree(&second), &preview_tree(&env, "feature-x"));
    assert_eq!(
        fs::read_link(preview_dir(&env, "feature-x").join("public_html")).unwrap(),
        Path::new("green")
    );
    assert_production_unchanged(&env, &before);

    // Production deploys meanwhile; the preview stays.
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    env.push().assert_live(&v2, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v2);
    assert_trees_equal(&env.archive_tree(&second), &preview_tree(&env, "feature-x"));
    let after_v2 = production(&env);

    // Deleting the branch removes its preview, and only it.
    let output = env.push_ref(":feature/x");
    assert!(
        output
            .pushdeploy_lines()
            .iter()
            .any(|line| line == "pushdeploy: feature/x was deleted: removed its preview feature-x"),
        "{output}"
    );
    assert!(!preview_dir(&env, "feature-x").exists());
    assert!(preview_names(&env).is_empty(), "{:?}", preview_names(&env));
    assert!(!env.target.join(".pushdeploy/previews/feature-x.json").exists());
    assert_production_unchanged(&env, &after_v2);
}

#[test]
fn max_previews_removes_the_oldest_and_says_so() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&previews_config(&env, "max = 2\n"));
    let before = production(&env);
    let _ = push_branch(&env, "feature/a", "a\n");
    // Creation times are whole seconds: make the order certain.
    std::thread::sleep(Duration::from_millis(1100));
    let _ = push_branch(&env, "feature/b", "b\n");
    assert_eq!(preview_names(&env), ["feature-a", "feature-b"]);
    std::thread::sleep(Duration::from_millis(1100));
    let (c, output) = push_branch(&env, "feature/c", "c\n");
    assert!(
        output.pushdeploy_lines().iter().any(|line| line.starts_with(
            "pushdeploy: removing the preview of feature/a (feature-a), the oldest: `[previews] max = 2`"
        )),
        "{output}"
    );
    assert_eq!(preview_names(&env), ["feature-b", "feature-c"]);
    assert_trees_equal(&env.archive_tree(&c), &preview_tree(&env, "feature-c"));
    // Pushing an existing preview again makes no new one, removes none.
    let _ = push_branch(&env, "feature/b", "b2\n");
    assert_eq!(preview_names(&env), ["feature-b", "feature-c"]);
    assert_production_unchanged(&env, &before);
    // A branch no pattern matches is ignored, as before (production's history says so).
    let (_, output) = push_branch(&env, "other", "other\n");
    assert!(
        output
            .pushdeploy_lines()
            .iter()
            .any(|line| line.starts_with("pushdeploy: ignored refs/heads/other")),
        "{output}"
    );
    assert_eq!(preview_names(&env), ["feature-b", "feature-c"]);
    let newest = &crate::support::history::history(&env)[0];
    assert_eq!(
        (newest["result"].as_str(), newest["ref"].as_str()),
        (Some("ignored"), Some("refs/heads/other"))
    );
}

/// GETs `/` with `host` as the Host header; returns the status and the body.
fn get_by_host(server: &WebServer, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn serves_previews_by_host_name(kind: ServerKind) {
    if !kind.require() {
        return;
    }
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&previews_config(&env, ""));
    let _ = push_branch(&env, "feature/x", "preview of x\n");
    let _ = push_branch(&env, "feature/y", "preview of y\n");
    let template = Path::new("previews").join(match kind {
        ServerKind::Caddy => "Caddyfile.standalone",
        ServerKind::Nginx => "nginx-standalone.conf",
        ServerKind::Apache => "apache-standalone.conf",
    });
    let server = WebServer::start_template(kind, &template, &env.target, &env.root.join("server"));
    assert_eq!(get_by_host(&server, "feature-x.preview.test"), (200, "preview of x\n".into()));
    assert_eq!(get_by_host(&server, "feature-y.preview.test"), (200, "preview of y\n".into()));
    assert_eq!(get_by_host(&server, "nosuch.preview.test").0, 404);
    assert_eq!(get_by_host(&server, "example.com").0, 404);
    // After the branch is deleted, its host name serves nothing.
    let _ = env.push_ref(":feature/x");
    assert_eq!(get_by_host(&server, "feature-x.preview.test").0, 404);
    assert_eq!(get_by_host(&server, "feature-y.preview.test"), (200, "preview of y\n".into()));
}

#[test]
fn caddy_serves_previews_by_host_name() {
    serves_previews_by_host_name(ServerKind::Caddy);
}

#[test]
fn nginx_serves_previews_by_host_name() {
    serves_previews_by_host_name(ServerKind::Nginx);
}

#[test]
fn apache_serves_previews_by_host_name() {
    serves_previews_by_host_name(ServerKind::Apache);
}

#[test]
fn previews_of_apps_are_refused_for_now() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&format!(
        "{}\n[app]\ncommand = \"true\"\nuser = \"nobody\"\nports = [8001, 8002]\n[previews]\nbranches = [\"feature/*\"]\n",
        env.base_config()
    ));
    let output = env.pushdeploy().args(["status", "--repo"]).arg(&env.bare).failure();
    assert!(output.stderr.contains("previews of an app"), "{output}");
}

/// Renders `site-templates/previews/NAME` for `preview.example.com` into `dir`.
#[track_caller]
fn render_preview_config(env: &TestEnv, name: &str, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("site-templates/previews").join(name);
    let text = fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let text = text
        .replace("@TARGET@", &env.target.to_string_lossy())
        .replace("@PORT@", "8080")
        .replace("@PREVIEW_DOMAIN_REGEX@", r"preview\.example\.com")
        .replace("@PREVIEW_DOMAIN@", "preview.example.com");
    assert!(
        !text.contains("@PREVIEW") && !text.contains("@TARGET@"),
        "{name}: a placeholder is left"
    );
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The site configs an operator installs (not the standalone ones the tests serve with) pass
/// the servers' own checks.
#[test]
fn preview_site_configs_pass_the_servers_own_checks() {
    let env = TestEnv::new();
    let dir = env.root.join("configs");
    fs::create_dir(&dir).expect("create configs/");
    let run = dir.to_string_lossy().into_owned();
    if ServerKind::Caddy.require() {
        let caddyfile = render_preview_config(&env, "Caddyfile", &dir);
        let caddy = ServerKind::Caddy.binary().expect("caddy");
        let _ = env
            .command(caddy)
            .args(["adapt", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .success();
    }
    if ServerKind::Nginx.require() {
        let server = render_preview_config(&env, "nginx.conf", &dir);
        let main = dir.join("nginx-main.conf");
        fs::write(
            &main,
            format!(
                "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\nhttp {{\n    include {};\n}}\n",
                server.display()
            ),
        )
        .expect("write nginx-main.conf");
        let nginx = ServerKind::Nginx.binary().expect("nginx");
        let _ = env
            .command(nginx)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-t")
            .arg("-c")
            .arg(&main)
            .success();
    }
    if ServerKind::Apache.require() {
        let vhost = render_preview_config(&env, "apache-vhost.conf", &dir);
        let modules = "/usr/lib/apache2/modules";
        let main = dir.join("apache-main.conf");
        fs::write(
            &main,
            format!(
                "ServerRoot {run}\nServerName localhost\nListen 127.0.0.1:8080\nPidFile {run}/apache.pid\n\
                 DefaultRuntimeDir {run}\nMutex file:{run} default\nErrorLog {run}/error.log\n\
                 LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
                 LoadModule authz_core_module {modules}/mod_authz_core.so\n\
                 LoadModule alias_module {modules}/mod_alias.so\n\
                 LoadModule dir_module {modules}/mod_dir.so\n\
                 LoadModule vhost_alias_module {modules}/mod_vhost_alias.so\n\
                 Include {}\n",
                vhost.display()
            ),
        )
        .expect("write apache-main.conf");
        let apache = ServerKind::Apache.binary().expect("apache2");
        let check = env.command(apache).arg("-t").arg("-f").arg(&main).success();
        assert!(check.stderr.contains("Syntax OK"), "{check}");
    }
}

/// A preview and production deploying at the same time: each under its own lock, neither
/// waits for the other, and each ends with its own commit live.
#[test]
fn a_preview_and_production_deploy_at_once_each_right() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&format!("{}\n[build]\ncommand = \"sleep 3\"\n", previews_config(&env, "")));
    let _ = env.git().args(["checkout", "--quiet", "-b", "feature/x", "main"]).success();
    env.write("index.html", "preview\n");
    let preview = env.commit_all("preview");
    let _ = env.git().args(["checkout", "--quiet", "main"]).success();
    env.write("index.html", "production v2\n");
    let production_commit = env.commit_all("v2");

    let started = std::time::Instant::now();
    let (main_push, feature_push) = std::thread::scope(|scope| {
        let main = scope.spawn(|| env.push_ref("main"));
        let feature = scope.spawn(|| env.push_ref("feature/x"));
        (main.join().expect("push main"), feature.join().expect("push feature/x"))
    });
    let took = started.elapsed();
    main_push.assert_live(&production_commit, "refs/heads/main", "green");
    assert!(!main_push.normalized_stderr().contains("waiting for the deploy"), "{main_push}");
    assert!(!feature_push.normalized_stderr().contains("waiting for the deploy"), "{feature_push}");
    assert!(
        took < Duration::from_millis(5500),
        "the two 3 s builds ran one after the other: {took:?}"
    );
    env.assert_live_equals_archive(&production_commit);
    assert_trees_equal(&env.archive_tree(&preview), &preview_tree(&env, "feature-x"));
    let history = crate::support::history::history(&env);
    assert_eq!(history.len(), 2, "production's history has the first deploy and v2 only");
    assert_eq!(history[0]["commit"], production_commit.as_str());
}
