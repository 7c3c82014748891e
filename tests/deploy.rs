//! The deploy pipeline through real pushes: what gets served, slot alternation, builds,
//! failures that must leave the live site alone, and the deploy lock.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use crate::support::{Entry, TestEnv, Tree, assert_trees_equal, toml_str};

const NON_UTF8_NAME: &[u8] = b"caf\xe9.txt";

/// Writes a site that exercises every kind of tree entry a deploy must reproduce.
fn write_tricky_site(env: &TestEnv) {
    env.write("index.html", "<h1>home</h1>\n");
    env.write("posts/one.html", "<p>one</p>\n");
    env.write("posts/two.html", "<p>two</p>\n");
    env.symlink("latest", "posts/one.html");
    env.symlink("articles", "posts");
    // Climbs with `..` but stays inside the release: allowed.
    env.symlink("posts/home.html", "../index.html");
    env.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    env.write("it's \"quoted\" name.txt", "quotes\n");
    env.write(OsStr::from_bytes(NON_UTF8_NAME), "latin-1 name\n");
    env.write("empty", "");
    env.write("-rf", "not an option\n");
    env.write(deep_path(), "deep\n");
}

/// A path 12 directories deep and longer than the 100 bytes of a plain tar header.
fn deep_path() -> PathBuf {
    let mut path: PathBuf = (1..=12).map(|level| format!("level-{level:02}")).collect();
    path.push("deep.txt");
    path
}

/// Returns the config `init` writes plus a `[build]` section.
fn config_with_build(env: &TestEnv, build: &str) -> String {
    format!("{}\n[build]\n{build}", env.base_config())
}

#[test]
fn push_serves_exactly_git_archive_of_commit() {
    let env = TestEnv::new();
    env.init(&[]);
    write_tricky_site(&env);
    let commit = env.commit_all("tricky site");

    let push = env.push();

    push.assert_live(&commit, "refs/heads/main", "blue");
    assert_eq!(env.link_target(), Path::new("blue"));
    let archive = env.archive_tree(&commit);
    for path in [Path::new(OsStr::from_bytes(NON_UTF8_NAME)), &deep_path()] {
        assert!(archive.contains_key(path), "fixture lacks {path:?}");
    }
    env.assert_live_equals_archive(&commit);
}

#[test]
fn each_push_switches_relative_link_to_other_slot_and_removes_old() {
    let env = TestEnv::new();
    env.init(&[]);
    for (round, slot) in ["blue", "green", "blue"].into_iter().enumerate() {
        env.write("index.html", format!("round {round}\n"));
        let commit = env.commit_all(&format!("round {round}"));

        env.push().assert_live(&commit, "refs/heads/main", slot);

        assert_eq!(env.link_target(), Path::new(slot), "round {round}");
        assert_eq!(env.live_dir(), env.target.join(slot), "round {round}");
        env.assert_no_idle_slot();
        env.assert_live_equals_archive(&commit);
    }
}

#[test]
fn publish_subdir_is_linked_inside_slot() {
    let env = TestEnv::new();
    env.init(&["--publish", "public", "--build", "mkdir -p public && cp index.html public/"]);
    let expected_tree = |contents: &str| -> Tree {
        let entry = Entry::File { mode: 0o644, contents: contents.into() };
        [(PathBuf::from("index.html"), entry)].into()
    };

    for (round, slot) in ["blue", "green"].into_iter().enumerate() {
        let contents = format!("<p>round {round}</p>\n");
        env.write("index.html", &contents);
        env.write("README.md", "not published\n");
        let commit = env.commit_all(&format!("round {round}"));

        env.push().assert_live(&commit, "refs/heads/main", slot);

        assert_eq!(env.link_target(), Path::new(slot).join("public"));
        assert_trees_equal(&expected_tree(&contents), &env.snapshot_tree(env.live_dir()));
        env.assert_no_idle_slot();
    }
}

#[test]
fn failing_build_keeps_previous_release_live() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "v1\n");
    env.commit_all("v1");
    let _ = env.push();
    let before = env.live_site();
    env.write_config(&config_with_build(&env, "command = 'echo compiling; exit 3'\n"));
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    push.assert_failed_at("build");
    env.assert_live_unchanged(&before);

    // The same failure from the command line exits 1.
    let deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).failure();
    assert_eq!(deploy.code(), Some(1), "{deploy}");
    deploy.assert_failed_at("build");
    env.assert_live_unchanged(&before);
}

#[test]
fn build_timeout_kills_background_children() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "v1\n");
    env.commit_all("v1");
    let _ = env.push();
    let before = env.live_site();
    let marker = env.root.join("outside-marker");
    env.write_config(&config_with_build(
        &env,
        &format!(
            "command = '(sleep 2; touch \"$OUTSIDE_MARKER\") & sleep 30'\ntimeout = \"1s\"\n\
             [build.env]\nOUTSIDE_MARKER = {}\n",
            toml_str(&marker.to_string_lossy())
        ),
    ));
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    push.assert_failed_at("build");
    env.assert_live_unchanged(&before);
    // The background subshell would touch the marker 2 s after the build started: past the
    // 1 s timeout, so only a kill of the whole process group stops it.
    thread::sleep(Duration::from_millis(2500));
    assert!(!marker.exists(), "a build child outlived the timeout");
}

#[test]
fn missing_publish_dir_fails_at_verify() {
    let env = TestEnv::new();
    env.init(&["--publish", "public"]);
    env.write("public/index.html", "v1\n");
    let first = env.commit_all("v1");
    env.push().assert_live(&first, "refs/heads/main", "blue");
    assert_eq!(env.link_target(), Path::new("blue/public"));
    let before = env.live_site();
    env.remove("public");
    env.write("index.html", "no public dir\n");
    env.commit_all("v2 without public/");

    let push = env.push();

    let line = push.assert_failed_at("verify");
    assert!(line.contains("public"), "{line:?} does not name the directory");
    env.assert_live_unchanged(&before);
}

#[test]
fn build_output_reaches_pusher() {
    let env = TestEnv::new();
    env.init(&[
        "--no-publish",
        "--build",
        "echo 'from build stdout'; echo 'from build stderr' >&2",
    ]);
    env.write("index.html", "v1\n");
    let commit = env.commit_all("v1");

    let push = env.push();

    push.assert_live(&commit, "refs/heads/main", "blue");
    let stderr = push.normalized_stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    let final_index = lines.iter().rposition(|line| line.starts_with("pushdeploy: live: "));
    for text in ["from build stdout", "from build stderr"] {
        let index = lines.iter().position(|line| line.contains(text));
        assert!(index.is_some(), "{text:?} did not reach the pusher\n{push}");
        assert!(index < final_index, "{text:?} came after the final line\n{push}");
    }
}

#[test]
fn build_gets_deploy_environment_without_git_variables() {
    let env = TestEnv::new();
    env.init(&[]);
    let env_file = env.root.join("build-env.txt");
    env.write_config(&config_with_build(
        &env,
        &format!(
            "command = 'env > \"$ENV_FILE\"; echo \"BUILD_CWD=$(pwd -P)\" >> \"$ENV_FILE\"'\n\
             [build.env]\nENV_FILE = {}\nGREETING = \"hello world\"\n",
            toml_str(&env_file.to_string_lossy())
        ),
    ));
    env.write("index.html", "v1\n");
    let commit = env.commit_all("v1");

    env.push().assert_live(&commit, "refs/heads/main", "blue");

    let text = fs::read_to_string(&env_file).expect("the build wrote its environment");
    let vars: Vec<(&str, &str)> = text.lines().filter_map(|line| line.split_once('=')).collect();
    let var = |name: &str| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| *value);
    let release = env.target.join("blue").to_string_lossy().into_owned();
    let target = env.target.to_string_lossy().into_owned();
    let repo = env.bare.to_string_lossy().into_owned();
    let tool_cache = |tool: &str| {
        env.target.join(".pushdeploy/tool-cache").join(tool).to_string_lossy().into_owned()
    };
    let (hugo_cache, npm_cache, pip_cache) =
        (tool_cache("hugo"), tool_cache("npm"), tool_cache("pip"));
    let expected = [
        ("PUSHDEPLOY_COMMIT", commit.as_str()),
        ("PUSHDEPLOY_REF", "refs/heads/main"),
        ("PUSHDEPLOY_BRANCH", "main"),
        ("PUSHDEPLOY_SLOT", "blue"),
        ("PUSHDEPLOY_RELEASE_DIR", &release),
        ("PUSHDEPLOY_TARGET", &target),
        ("PUSHDEPLOY_REPO", &repo),
        ("HUGO_CACHEDIR", &hugo_cache),
        ("npm_config_cache", &npm_cache),
        ("PIP_CACHE_DIR", &pip_cache),
        ("GREETING", "hello world"),
        ("BUILD_CWD", &release),
    ];
    for (name, value) in expected {
        assert_eq!(var(name), Some(value), "{name} in the build environment:\n{text}");
    }
    let git_vars: Vec<&str> =
        vars.iter().map(|(key, _)| *key).filter(|key| key.starts_with("GIT_")).collect();
    assert_eq!(git_vars, Vec::<&str>::new(), "GIT_* leaked into the build");
}

#[test]
fn concurrent_deploys_run_one_after_another() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "a\n");
    let a = env.commit_all("a");
    let _ = env.push();
    env.write("index.html", "b\n");
    let b = env.commit_all("b");
    let _ = env.push();
    let log = env.root.join("build.log");
    env.write_config(&config_with_build(
        &env,
        &format!(
            "command = 'echo start >> \"$LOG\"; sleep 1; echo end >> \"$LOG\"'\n\
             [build.env]\nLOG = {}\n",
            toml_str(&log.to_string_lossy())
        ),
    ));

    let start = Barrier::new(2);
    let deploy = |rev: &str| {
        let cmd = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg(rev);
        start.wait();
        cmd.success()
    };
    let (first, second) = thread::scope(|scope| {
        let first = scope.spawn(|| deploy(&a));
        let second = scope.spawn(|| deploy(&b));
        (join(first), join(second))
    });

    let log_text = fs::read_to_string(&log).expect("read build log");
    assert_eq!(log_text, "start\nend\nstart\nend\n", "the builds overlapped");
    let first_waited = first.stderr.contains("waiting");
    let second_waited = second.stderr.contains("waiting");
    assert!(
        first_waited != second_waited,
        "exactly one deploy should report waiting\n{first}\n{second}"
    );
    // The deploy that waited ran last, so its commit is live.
    let (last, last_output) = if first_waited { (&a, &first) } else { (&b, &second) };
    last_output.assert_live(last, last, &env.live_slot());
    env.assert_live_equals_archive(last);
    env.assert_no_idle_slot();
}

/// Returns a thread's result, re-raising its panic (with its own message and location).
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
