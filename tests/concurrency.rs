//! Concurrent pushes from many clones: deploys serialize, superseded commits skip, never backwards.

use std::fs;
use std::path::PathBuf;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Output, TestEnv, short, toml_str};

/// How the pushes of one race ended.
#[derive(Debug, Default)]
struct RaceOutcome {
    deployed: usize,
    skipped: usize,
    waited: usize,
    attempts: usize,
    took: Duration,
}

/// Commits a new file in each clone, then has every clone push at once, rebasing and pushing
/// again whenever another push got there first, until its commit is in. While they run,
/// `meanwhile` is called on the test's thread. Asserts every accepted push ended with one line:
/// its commit went live, or was skipped for a newer one.
#[track_caller]
fn race(env: &TestEnv, clones: &[PathBuf], round: &str, meanwhile: impl FnOnce()) -> RaceOutcome {
    const ATTEMPTS: usize = 80;
    for (i, dir) in clones.iter().enumerate() {
        fs::create_dir_all(dir.join("clones")).expect("create clones/");
        fs::write(dir.join(format!("clones/{round}-{i:02}.txt")), format!("{round} {i}\n"))
            .expect("write the clone's file");
        let _ = env.git_in(dir).args(["add", "--all"]).success();
        let _ =
            env.git_in(dir).args(["commit", "--quiet", "-m", &format!("{round} {i}")]).success();
    }
    let start = Barrier::new(clones.len() + 1);
    let started = Instant::now();
    let results: Vec<(Output, String, usize)> = thread::scope(|scope| {
        let handles: Vec<_> = clones
            .iter()
            .map(|dir| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    for attempt in 1..=ATTEMPTS {
                        let push = env.git_in(dir).args(["push", "origin", "main"]).output();
                        if push.status.success() {
                            let tip = env.git_in(dir).args(["rev-parse", "HEAD"]).success();
                            return (push, tip.stdout.trim().to_owned(), attempt);
                        }
                        let _ = env
                            .git_in(dir)
                            .args(["pull", "--rebase", "--quiet", "origin", "main"])
                            .success();
                    }
                    panic!("{} could not push in {ATTEMPTS} attempts", dir.display());
                })
            })
            .collect();
        start.wait();
        meanwhile();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut outcome = RaceOutcome { took: started.elapsed(), ..RaceOutcome::default() };
    for (push, tip, attempts) in &results {
        outcome.attempts += attempts;
        let line = push.final_line();
        let live = format!("pushdeploy: live: {} (refs/heads/main) in ", short(tip));
        let skip = format!("pushdeploy: skipped {}: main has moved on to ", short(tip));
        if line.starts_with(&live) {
            outcome.deployed += 1;
        } else if line.starts_with(&skip) && line.ends_with(", which its own push deploys") {
            outcome.skipped += 1;
        } else {
            panic!("neither live nor skipped: {line:?}\n{push}");
        }
        if push.stderr.contains("pushdeploy: waiting for the deploy in progress") {
            outcome.waited += 1;
        }
    }
    println!(
        "concurrent pushes, {round}: {} clones, {} push attempts in {:?}: {} deployed, {} \
         skipped, {} waited for the lock",
        clones.len(),
        outcome.attempts,
        outcome.took,
        outcome.deployed,
        outcome.skipped,
        outcome.waited
    );
    outcome
}

/// Returns the commits that went live, oldest first, from `history.jsonl`.
#[track_caller]
fn live_history(env: &TestEnv) -> Vec<String> {
    let history = fs::read_to_string(env.target.join(".pushdeploy/history.jsonl"))
        .expect("read history.jsonl");
    history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .filter(|entry| entry["result"] == "live")
        .map(|entry| entry["commit"].as_str().expect("a commit id").to_owned())
        .collect()
}

/// Asserts the tip of main is live, holding every clone's file of every round so far, and that
/// the commits that went live only ever moved forward in the branch's history.
#[track_caller]
fn assert_tip_live_and_history_forward(env: &TestEnv, files: &[String]) -> Vec<String> {
    let tip = env.git_in(&env.bare).args(["rev-parse", "main"]).success().stdout.trim().to_owned();
    env.assert_live_equals_archive(&tip);
    env.assert_no_idle_slot();
    for file in files {
        assert!(env.live_dir().join(file).is_file(), "{file} is not live");
    }
    let live = live_history(env);
    assert_eq!(live.last(), Some(&tip), "the tip is not the last live commit");
    for pair in live.windows(2) {
        let forward = env
            .git_in(&env.bare)
            .args(["merge-base", "--is-ancestor", &pair[0], &pair[1]])
            .output();
        assert!(forward.status.success(), "{} went live after {}", pair[1], pair[0]);
    }
    live
}

#[test]
fn concurrent_pushes_serialize_skip_superseded_commits_and_never_go_backwards() {
    const CLONES: usize = 12;
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "base\n");
    let base = env.commit_all("base");
    env.push().assert_live(&base, "refs/heads/main", "blue");
    let log = env.root.join("build.log");
    env.write_config(&format!(
        "{}\n[build]\ncommand = 'echo start >> \"$LOG\"; sleep 0.2; echo end >> \"$LOG\"'\n\
         [build.env]\nLOG = {}\n",
        env.base_config(),
        toml_str(&log.to_string_lossy())
    ));
    let clones: Vec<PathBuf> = (0..CLONES)
        .map(|i| {
            let dir = env.root.join(format!("clone-{i:02}"));
            let _ = env.git_in(&env.root).arg("clone").arg(&env.bare).arg(&dir).success();
            dir
        })
        .collect();
    let mut files: Vec<String> = (0..CLONES).map(|i| format!("clones/free-{i:02}.txt")).collect();

    // A free-for-all: how many pushes queue up depends on timing.
    let free = race(&env, &clones, "free", || {});

    let live = assert_tip_live_and_history_forward(&env, &files);
    assert_eq!(live.first(), Some(&base));
    assert_eq!(live.len(), 1 + free.deployed, "a live line without a history line");
    let log_text = fs::read_to_string(&log).expect("read the build log");
    assert_eq!(log_text, "start\nend\n".repeat(free.deployed), "the builds overlapped");

    // Every push queued at once, behind a deploy that holds the lock until all are in: only
    // the newest commit still needs deploying, so exactly one deploys and the rest skip.
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(env.target.join(".pushdeploy/lock"))
        .expect("open the deploy lock");
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, errno)| panic!("take the deploy lock: {errno}"));
    let before = env.git_in(&env.bare).args(["rev-list", "--count", "main"]).success();
    let all_in = before.stdout.trim().parse::<usize>().expect("a count") + CLONES;
    let queued = race(&env, &clones, "queued", || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let count = env.git_in(&env.bare).args(["rev-list", "--count", "main"]).success();
            if count.stdout.trim().parse::<usize>().expect("a count") == all_in {
                break;
            }
            assert!(Instant::now() < deadline, "the pushes did not all get in");
            thread::sleep(Duration::from_millis(50));
        }
        drop(held);
    });

    assert_eq!((queued.deployed, queued.skipped, queued.waited), (1, CLONES - 1, CLONES));
    files.extend((0..CLONES).map(|i| format!("clones/queued-{i:02}.txt")));
    let live = assert_tip_live_and_history_forward(&env, &files);
    assert_eq!(live.len(), 1 + free.deployed + 1, "a live line without a history line");
    let log_text = fs::read_to_string(&log).expect("read the build log");
    assert_eq!(log_text, "start\nend\n".repeat(free.deployed + 1), "the builds overlapped");
    // Each skipped push is in the history too, with its output kept under its id.
    let history = fs::read_to_string(env.target.join(".pushdeploy/history.jsonl")).expect("read");
    let skipped: Vec<serde_json::Value> = history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .filter(|entry| {
            entry["result"] == "ignored"
                && entry["error"].as_str().is_some_and(|error| error.starts_with("skipped: "))
        })
        .collect();
    assert_eq!(
        skipped.len(),
        free.skipped + queued.skipped,
        "a skipped push is not in the history"
    );
    for entry in &skipped {
        let log = env.target.join(format!(".pushdeploy/logs/{}.log", entry["id"]));
        let text = fs::read_to_string(&log).expect("the skipped push's log");
        assert!(text.contains("pushdeploy: skipped "), "{text}");
    }
}
