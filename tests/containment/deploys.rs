//! Containment: what a deploy decides while it waits for the lock, and what reaches the pusher.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::support::{TestEnv, short, toml_str};

/// How long a test waits for another process to reach a point it is waiting for.
const WAIT: Duration = Duration::from_secs(30);

/// Waits until a process is blocked in `flock` on the file at `lock`: `/proc/locks` shows a
/// waiter as a `->` line naming the file's inode.
#[track_caller]
fn wait_for_lock_waiter(lock: &Path) {
    let inode = fs::metadata(lock).expect("stat the lock file").ino();
    let deadline = Instant::now() + WAIT;
    loop {
        let locks = fs::read_to_string("/proc/locks").expect("read /proc/locks");
        let waiting = locks.lines().any(|line| {
            line.contains(" -> FLOCK ")
                && line.split_whitespace().any(|field| field.ends_with(&format!(":{inode}")))
        });
        if waiting {
            return;
        }
        assert!(Instant::now() < deadline, "nothing waited for {} within {WAIT:?}", lock.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `path` exists.
#[track_caller]
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear within {WAIT:?}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

// Regression: `pushdeploy deploy` without REV read the branch tip before taking the lock, so
// when a push moved the branch (and went live) while it waited, it then published the older
// tip over the newer release.
#[test]
fn deploy_without_rev_published_the_tip_it_saw_before_waiting_for_the_lock() {
    let (env, v1, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    // The objects of v2 reach the bare repository through a push of another branch, which
    // does not deploy; the deploy branch moves later, while the manual deploy waits.
    env.push_ref("HEAD:refs/heads/staging");

    let lock_path = env.target.join(".pushdeploy/lock");
    let lock =
        Flock::lock(File::open(&lock_path).expect("open the lock file"), FlockArg::LockExclusive)
            .expect("hold the deploy lock");
    let manual = thread::scope(|scope| {
        let manual =
            scope.spawn(|| env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success());
        wait_for_lock_waiter(&lock_path);
        // What a push that goes live meanwhile does to the branch.
        let _ = env
            .command("git")
            .arg("--git-dir")
            .arg(&env.bare)
            .args(["update-ref", "refs/heads/main", &v2, &v1])
            .success();
        drop(lock);
        manual.join().expect("the manual deploy's thread")
    });
    manual.assert_live(&v2, "refs/heads/main", "green");
    assert_eq!(fs::read_to_string(env.live_dir().join("index.html")).expect("read"), "v2\n");
}

// Regression: `pushdeploy rollback` chose the release to go back to before taking the lock;
// when a push went live while it waited, it went back to the release before the one it had
// seen live, skipping the release that was live when it actually ran.
#[test]
fn rollback_skipped_the_release_that_went_live_while_it_waited_for_the_lock() {
    let env = TestEnv::new();
    env.init(&[]);
    let (started, go) = (env.root.join("build-started"), env.root.join("build-go"));
    env.write_config(&format!(
        "{}[build]\ncommand = \"sh hold.sh\"\n[build.env]\nSTARTED = {}\nGO = {}\n",
        env.base_config(),
        toml_str(&started.to_string_lossy()),
        toml_str(&go.to_string_lossy())
    ));
    // A release whose commit has a file `hold` holds its build (and so the lock) until the
    // test says go; the wait is bounded so a broken test cannot hang.
    env.write(
        "hold.sh",
        "if [ -e hold ]; then\n  touch \"$STARTED\"\n  i=0\n  while [ ! -e \"$GO\" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\nfi\n",
    );
    env.write("index.html", "v1\n");
    let v1 = env.commit_all("v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    env.push().assert_live(&v2, "refs/heads/main", "green");
    env.write("index.html", "v3\n");
    env.write("hold", "");
    let v3 = env.commit_all("v3");

    let lock_path = env.target.join(".pushdeploy/lock");
    let (push, rollback) = thread::scope(|scope| {
        let push = scope.spawn(|| env.push());
        wait_for_file(&started);
        let rollback =
            scope.spawn(|| env.pushdeploy().args(["rollback", "--repo"]).arg(&env.bare).success());
        wait_for_lock_waiter(&lock_path);
        fs::write(&go, "").expect("let the build finish");
        (push.join().expect("the push's thread"), rollback.join().expect("the rollback's thread"))
    });
    push.assert_live(&v3, "refs/heads/main", "blue");
    rollback.assert_live(&v2, "refs/heads/main", "green");
    assert_eq!(fs::read_to_string(env.live_dir().join("index.html")).expect("read"), "v2\n");
    assert!(
        !rollback.stderr.contains(short(&v1)),
        "the rollback must not consider v1, two releases back\n{rollback}"
    );
}

// Regression: a deploy that linked one file said "hard-linked 1 unchanged ones".
#[test]
fn one_hard_linked_file_was_counted_as_ones() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    let push = env.push();
    push.assert_live(&v2, "refs/heads/main", "green");
    let wrote = push
        .pushdeploy_lines()
        .into_iter()
        .find(|line| line.starts_with("pushdeploy: wrote "))
        .unwrap_or_else(|| panic!("no `wrote` line\n{push}"));
    assert!(
        wrote.starts_with("pushdeploy: wrote 1 file and hard-linked 1 unchanged file ("),
        "{wrote}"
    );
}

// Regression: a push of 5,000 refs that do not deploy printed 5,000 `ignored` lines.
#[test]
fn thousands_of_ignored_refs_printed_a_line_each() {
    let (env, _, _) = TestEnv::with_live_site();
    let head = env.rev_parse("HEAD");
    let updates: String =
        (0..5000).map(|i| format!("create refs/heads/many/b{i:04} {head}\n")).collect();
    let _ = env.git().args(["update-ref", "--stdin"]).stdin(updates).success();
    let push = env.push_ref("refs/heads/many/*:refs/heads/many/*");
    let ignored: Vec<String> = push
        .pushdeploy_lines()
        .into_iter()
        .filter(|line| line.starts_with("pushdeploy: ignored"))
        .collect();
    assert!(
        ignored.len() <= 3,
        "{} `ignored` lines for one push, the first: {:?}",
        ignored.len(),
        ignored[0]
    );
    assert_eq!(
        ignored,
        ["pushdeploy: ignored 5,000 refs (refs/heads/many/b0000, refs/heads/many/b0001, \
             refs/heads/many/b0002 and 4,997 more): only pushes to the branch \"main\" deploy"],
        "{push}"
    );
    // A few are still named one by one.
    let push = env.push_ref("HEAD:refs/heads/one");
    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: ignored refs/heads/one: only pushes to the branch \"main\" deploy",
            "pushdeploy: hint: to deploy it, push it as main: git push <remote> one:main, or set \
             branch = \"one\" in $TMP/site.git/pushdeploy.toml"
        ]
    );
}

// Regression: bidi overrides (U+202E and friends) in a ref name reached the pusher, `log` and
// `status` raw, so the name displayed differently from what it was.
#[test]
fn bidi_overrides_in_ref_names_reached_the_pusher_log_and_status_raw() {
    let (env, _, _) = TestEnv::with_live_site();
    let push = env.push_ref("HEAD:refs/heads/txt\u{202e}exe");
    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: ignored refs/heads/txt\\u{202e}exe: only pushes to the branch \"main\" deploy",
            "pushdeploy: hint: to deploy it, push it as main: git push <remote> \
             txt\\u{202e}exe:main, or set branch = \"txt\\u{202e}exe\" in \
             $TMP/site.git/pushdeploy.toml"
        ]
    );

    let _ = env.git().args(["tag", "v\u{2067}1\u{2069}"]).success();
    env.push_ref("refs/tags/*:refs/tags/*");
    env.pushdeploy()
        .args(["deploy", "--repo"])
        .arg(&env.bare)
        .arg("v\u{2067}1\u{2069}")
        .success()
        .assert_live(&env.rev_parse("HEAD"), "v\\u{2067}1\\u{2069}", "green");
    let log = env.pushdeploy().args(["log", "-n", "1", "--repo"]).arg(&env.bare).success();
    let status = env.pushdeploy().args(["status", "--repo"]).arg(&env.bare).success();
    for text in [&log.stdout, &status.stdout] {
        assert!(text.contains("v\\u{2067}1\\u{2069}"), "escaped ref name missing:\n{text}");
        assert!(
            !text.chars().any(|ch| ('\u{2066}'..='\u{2069}').contains(&ch)),
            "raw bidi control in:\n{text}"
        );
    }
}
