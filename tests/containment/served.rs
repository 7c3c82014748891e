//! Containment: served. What the web server is given, after the build and after the grace
//! step, holds nothing that leads out of the release, checked with a real Apache; grace works
//! with the directories a build leaves read-only; a dry run carries nothing.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::support::load::Connection;
use crate::support::servers::{ServerKind, WebServer};
use crate::support::{Cmd, Output, TestEnv, short};

/// What the sentinel file outside the target holds; served, it proves an escape.
const SECRET: &str = "secret outside the release\n";

/// Returns an environment whose temp dir Apache's workers can reach, with `pushdeploy init`
/// done and the sentinel `outside/secret.txt` (and `outside/public/secret.txt`) beside the
/// target, or `None` when Apache is missing (see [`ServerKind::require`]).
fn apache_env() -> Option<TestEnv> {
    if !ServerKind::Apache.require() {
        return None;
    }
    let env = TestEnv::new();
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    env.init(&[]);
    let outside = outside(&env);
    fs::create_dir_all(outside.join("public")).expect("create the sentinel directory");
    for file in [outside.join("secret.txt"), outside.join("public/secret.txt")] {
        fs::write(&file, SECRET).expect("write the sentinel file");
    }
    Some(env)
}

/// Returns the sentinel directory beside the target.
fn outside(env: &TestEnv) -> PathBuf {
    env.root.join("outside")
}

/// Starts Apache on the target.
fn apache(env: &TestEnv) -> WebServer {
    WebServer::start(ServerKind::Apache, &env.target, &env.root.join("run"))
}

/// Returns the status and body Apache answers for `path`.
#[track_caller]
fn get(server: &WebServer, path: &str) -> (u16, String) {
    let mut connection = Connection::new(server.addr(), Duration::from_secs(5));
    match connection.get(path) {
        Ok(response) => (response.status, String::from_utf8_lossy(&response.body).into_owned()),
        Err(err) => panic!("GET {path}: {err}\n{}", server.logs()),
    }
}

/// Asserts Apache does not hand out the sentinel for `path`: it answers 404, or 403 for a
/// symlink whose target does not exist.
#[track_caller]
fn assert_not_served(server: &WebServer, path: &str) {
    let (status, body) = get(server, path);
    assert!(
        matches!(status, 403 | 404) && !body.contains(SECRET.trim()),
        "GET {path} -> {status}, expected 404 or 403 (the file is outside the release): {body:?}"
    );
}

/// Writes a config with `[build] command = "sh build.sh"` and `publish`, plus `extra`.
fn write_build_config(env: &TestEnv, publish: &str, extra: &str) {
    env.write_config(&format!(
        "{}\n[build]\ncommand = \"sh build.sh\"\npublish = \"{publish}\"\n{extra}",
        env.base_config()
    ));
}

/// Commits `build.sh` (and whatever else the work clone holds) and pushes it.
#[track_caller]
fn push_build(env: &TestEnv, script: &str, message: &str) -> (String, Output) {
    env.write("build.sh", script);
    let commit = env.commit_all(message);
    (commit, env.push())
}

/// Returns the final line of a deploy refused at verify while `commit` stays live in blue.
fn verify_refusal(what: &str, commit: &str, hint: &str) -> String {
    format!(
        "pushdeploy: failed at verify: {what}; the live site is unchanged (blue, {}); {hint}",
        short(commit)
    )
}

/// The hint of a refused build output.
const BUILD_OUTPUT_HINT: &str = "make the build leave only files, directories and symlinks that stay inside the release, then push again";

// A build that wrote `ln -s OUTSIDE public/leak` went live, and Apache served OUTSIDE's files
// through it: build output was published unchecked.
#[test]
fn build_symlink_out_of_the_release_is_served() {
    let Some(env) = apache_env() else { return };
    write_build_config(&env, "public", "");
    let v1_build = "mkdir -p public/docs\necho v1 > public/index.html\n\
                    echo page > public/docs/page.html\nln -s docs public/ok\n";
    let (v1, push) = push_build(&env, v1_build, "v1");
    push.assert_live(&v1, "refs/heads/main", "blue");
    let server = apache(&env);
    // The control: a request through a symlink the build made, inside the release, works.
    assert_eq!(get(&server, "/ok/page.html"), (200, "page\n".to_owned()));
    let before = env.live_site();

    let leak = format!("{v1_build}ln -s {} public/leak\n", outside(&env).display());
    let (_, push) = push_build(&env, &leak, "v2: leak");

    assert_not_served(&server, "/leak/secret.txt");
    assert_eq!(
        push.final_line(),
        verify_refusal(
            "refused public/leak: symlink to $TMP/outside is absolute; only relative links inside the release are allowed",
            &v1,
            BUILD_OUTPUT_HINT
        ),
        "{push}"
    );
    env.assert_live_unchanged(&before);
    assert_eq!(get(&server, "/ok/page.html"), (200, "page\n".to_owned()));
}

// A build that made a FIFO in the published directory went live with it: nothing looked at
// what the build left there (a web server or a later copy that opens it blocks forever).
#[test]
fn build_fifo_in_the_published_directory_goes_live() {
    let env = TestEnv::new();
    env.init(&[]);
    write_build_config(&env, "public", "");
    let v1_build = "mkdir -p public\necho v1 > public/index.html\n";
    let (v1, push) = push_build(&env, v1_build, "v1");
    push.assert_live(&v1, "refs/heads/main", "blue");
    let before = env.live_site();

    let (_, push) = push_build(&env, &format!("{v1_build}mkfifo public/p\n"), "v2: fifo");

    assert_eq!(
        push.final_line(),
        verify_refusal(
            "refused public/p: is a FIFO (named pipe); a published directory holds only files, directories and symlinks",
            &v1,
            BUILD_OUTPUT_HINT
        ),
        "{push}"
    );
    env.assert_live_unchanged(&before);
}

// With `publish = "out/public"`, a build that made `out` a symlink to a directory outside got
// that directory served: verify looked at the last component only.
#[test]
fn publish_through_a_symlinked_component_serves_outside() {
    let Some(env) = apache_env() else { return };
    write_build_config(&env, "out/public", "");
    let (v1, push) = push_build(
        &env,
        "mkdir -p out/public\necho v1 > out/public/secret.txt\ntouch out/public/index.html\n",
        "v1",
    );
    push.assert_live(&v1, "refs/heads/main", "blue");
    let server = apache(&env);
    // The control: the same request path serves the release's own file.
    assert_eq!(get(&server, "/secret.txt"), (200, "v1\n".to_owned()));
    let before = env.live_site();

    let script = format!("ln -s {} out\n", outside(&env).display());
    let (_, push) = push_build(&env, &script, "v2: out is a symlink");

    assert_eq!(get(&server, "/secret.txt"), (200, "v1\n".to_owned()), "{push}");
    let hint = "make the build write it, or fix `build.publish` in $TMP/site.git/pushdeploy.toml";
    assert_eq!(
        push.final_line(),
        verify_refusal(
            "refused out: is a symlink; the publish directory out/public and the directories above it must be real directories of the release",
            &v1,
            hint
        ),
        "{push}"
    );
    env.assert_live_unchanged(&before);
}

/// The symlink of the 40-level attack: inside v1, where `y` is 40 directories deep, it comes
/// back to the release's root before naming the sentinel's absolute path as relative parts;
/// in v2, where `y` is one level deep, the same text climbs to `/` and reaches the sentinel.
fn climbing_link(env: &TestEnv) -> String {
    let sentinel = outside(env);
    let relative = sentinel.strip_prefix("/").expect("the temp dir is absolute");
    format!("../y/{}{}", "../".repeat(40), relative.display())
}

// Grace hard-linked the old release's symlink `x/a` into the new release unchanged: checked
// against v1 it stayed inside, but in v2 (`y` no longer a deep symlink) it climbed out, and
// Apache served the file outside for the whole grace.
#[test]
fn grace_carries_a_symlink_that_leads_out_of_the_new_release() {
    let Some(env) = apache_env() else { return };
    env.write_config(&format!("{}\n[retire]\ngrace = \"30s\"\n", env.base_config()));
    let deep: PathBuf = (1..=40).map(|n| format!("c{n}")).collect();
    env.write("index.html", "v1\n");
    env.write(deep.join("index.html"), "deep\n");
    env.symlink("y", &deep);
    env.write("x/keep.html", "keep\n");
    env.symlink("x/a", climbing_link(&env));
    // The control: an old symlink that stays inside the new release too.
    env.write("docs/page.html", "page\n");
    env.symlink("x/b", "../docs");
    let v1 = env.commit_all("v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    let server = apache(&env);
    assert_not_served(&server, "/x/a/secret.txt");

    env.remove("y");
    env.write("y/index.html", "y is a directory now\n");
    env.remove("x/a");
    env.remove("x/b");
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2: y is a directory");
    let push = env.push();

    push.assert_live(&v2, "refs/heads/main", "green");
    assert_not_served(&server, "/x/a/secret.txt");
    let lines = push.pushdeploy_lines();
    let warning = "pushdeploy: warning: not keeping the old release's x/a for `retire.grace`: \
                   in the new release, its symlink target leads out of the release";
    assert!(lines.iter().any(|line| line == warning), "no line {warning:?}\n{push}");
    assert!(
        lines.iter().any(|line| line
            == "pushdeploy: kept 1 file of the old release reachable for 30s (retire.grace)"),
        "{push}"
    );
    assert!(fs::symlink_metadata(env.live_dir().join("x/a")).is_err(), "x/a was carried");
    assert_eq!(get(&server, "/x/b/page.html"), (200, "page\n".to_owned()));
}

/// Runs `git push origin main` from the work clone. As root, without the capabilities that
/// let root write into directories regardless of their mode: the deploy then runs as the
/// git user would, for whom a 0555 directory is read-only.
#[track_caller]
fn push_as_git_user(env: &TestEnv) -> Output {
    as_git_user(env, "git").args(["push", "origin", "main"]).current_dir(&env.work).success()
}

/// Returns a command for `program` that, as root, runs without `CAP_DAC_OVERRIDE`,
/// `CAP_DAC_READ_SEARCH` and `CAP_FOWNER`.
fn as_git_user(env: &TestEnv, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
    if nix::unistd::geteuid().is_root() {
        env.command("setpriv")
            .arg("--bounding-set=-dac_override,-dac_read_search,-fowner")
            .arg(program)
    } else {
        env.command(program)
    }
}

/// Returns the permission bits of `path`.
#[track_caller]
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display())).mode()
        & 0o7777
}

// A build that left `chmod 555 public/vendor` made every later deploy that dropped a file
// from vendor/ fail at the grace step with "Permission denied", naming no path.
#[test]
fn grace_fails_on_a_read_only_directory_of_the_build() {
    let env = TestEnv::new();
    env.init(&[]);
    let grace = Duration::from_secs(3);
    write_build_config(&env, "public", &format!("\n[retire]\ngrace = \"{}s\"\n", grace.as_secs()));
    env.write("src/a.js", "a\n");
    env.write("src/b.js", "b\n");
    env.write(
        "build.sh",
        "mkdir -p public/vendor\necho site > public/index.html\ncp src/*.js public/vendor/\nchmod 555 public/vendor\n",
    );
    let v1 = env.commit_all("v1");
    push_as_git_user(&env).assert_live(&v1, "refs/heads/main", "blue");

    env.remove("src/b.js");
    let v2 = env.commit_all("v2: drops vendor/b.js");
    let push = push_as_git_user(&env);

    push.assert_live(&v2, "refs/heads/main", "green");
    let vendor = env.live_dir().join("vendor");
    assert_eq!(fs::read_to_string(vendor.join("b.js")).expect("b.js is kept"), "b\n");
    assert_eq!(mode(&vendor), 0o555, "vendor/ is not as the build left it");
    assert_eq!(mode(&vendor.join("a.js")), 0o644);

    thread::sleep(grace + Duration::from_millis(500));
    let reap = as_git_user(&env, crate::support::BIN).arg("reap").arg("--repo").arg(&env.bare);
    let _ = reap.success();
    assert!(fs::symlink_metadata(vendor.join("b.js")).is_err(), "b.js outlived its grace");
    assert_eq!(fs::read_to_string(vendor.join("a.js")).expect("a.js stays"), "a\n");
    assert_eq!(mode(&vendor), 0o555, "the reaper left vendor/ changed");
}

// `git push -o dry-run` ran the grace step: it hard-linked the old release's files into the
// release it then threw away, and said it kept them.
#[test]
fn dry_run_runs_the_grace_step() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&format!("{}\n[retire]\ngrace = \"30s\"\n", env.base_config()));
    env.write("index.html", "v1\n");
    env.write("old.css", "old\n");
    let v1 = env.commit_all("v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    let before = env.live_site();

    env.remove("old.css");
    env.write("index.html", "v2\n");
    let _ = env.commit_all("v2: drops old.css");
    let push = env.git().args(["push", "-o", "dry-run", "origin", "main"]).success();

    let lines = push.pushdeploy_lines();
    assert!(lines.iter().all(|line| !line.starts_with("pushdeploy: kept")), "{push}");
    assert!(push.final_line().starts_with("pushdeploy: dry run: "), "{push}");
    env.assert_live_unchanged(&before);
    let old = env.live_dir().join("old.css");
    assert_eq!(fs::symlink_metadata(&old).expect("old.css is live").nlink(), 1, "{push}");
}
