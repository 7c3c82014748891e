//! Crashes: SIGKILL at random moments, an interrupted switch, an orphaned build, then a clean up.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::site::deploy_cmd;
use crate::support::target::assert_no_leftovers;
use crate::support::{BIN, TestEnv, Tree, assert_trees_equal};

/// A deterministic pseudo-random sequence (Knuth's MMIX LCG), so a failing trial reruns the
/// same way.
struct Lcg(u64);

impl Lcg {
    /// Returns the next number in [0, 1).
    fn next_fraction(&mut self) -> f64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes a site of 302 files under `site/`; a third of them change between versions, and
/// each version has a file of its own.
fn write_crash_site(env: &TestEnv, version: &str) {
    env.write("site/index.html", format!("<h1>{version}</h1>\n"));
    for dir in 0..10 {
        for page in 0..30 {
            let text = if page % 3 == 0 {
                format!("{version} page {dir}/{page}\n")
            } else {
                format!("page {dir}/{page}\n")
            };
            env.write(format!("site/dir{dir}/page{page}.html"), text);
        }
    }
    env.write(format!("site/only-{version}.html"), version);
}

/// Returns the entries of `tree` under `prefix`, relative to it.
fn subtree(tree: &Tree, prefix: &str) -> Tree {
    tree.iter()
        .filter_map(|(path, entry)| {
            let inner = path.strip_prefix(prefix).ok()?;
            (!inner.as_os_str().is_empty()).then(|| (inner.to_owned(), entry.clone()))
        })
        .collect()
}

/// What each commit's release looks like, served whole (no build) or as `public/` (a build
/// that copies `site/` there).
struct Releases {
    commits: [String; 2],
    whole: [Tree; 2],
    public: [Tree; 2],
}

impl Releases {
    /// Asserts the link points at a complete release of one of the commits; returns which.
    #[track_caller]
    fn live(&self, env: &TestEnv, context: &str) -> usize {
        let link = env.link_target();
        let served = env.snapshot_tree(env.live_dir());
        let candidates = if link.ends_with("public") { &self.public } else { &self.whole };
        match candidates.iter().position(|tree| *tree == served) {
            Some(which) => which,
            None => {
                println!("{context}: the link -> {} serves neither commit", link.display());
                assert_trees_equal(&candidates[0], &served);
                unreachable!("the trees differ");
            }
        }
    }
}

#[test]
fn sigkill_at_random_moments_leaves_a_complete_release_and_the_next_deploy_cleans_up() {
    const TRIALS_PER_PHASE: usize = 16;
    let env = TestEnv::new();
    env.init(&[]);
    write_crash_site(&env, "alpha");
    let alpha = env.commit_all("alpha");
    env.push().assert_live(&alpha, "refs/heads/main", "blue");
    write_crash_site(&env, "beta");
    env.remove("site/only-alpha.html");
    let beta = env.commit_all("beta");
    env.push().assert_live(&beta, "refs/heads/main", "green");
    let whole = [env.archive_tree(&alpha), env.archive_tree(&beta)];
    let public = [subtree(&whole[0], "site"), subtree(&whole[1], "site")];
    let releases = Releases { commits: [alpha, beta], whole, public };

    let build = format!(
        "{}\n[build]\ncommand = 'sleep 0.15 && mkdir public && cp -R site/. public/ && sleep 0.05'\n\
         publish = \"public\"\n",
        env.base_config()
    );
    let phases = [("no build", env.base_config()), ("build", build)];
    let mut lcg = Lcg(0x5eed);
    let mut stages: BTreeMap<&str, usize> = BTreeMap::new();
    let progress = env.root.join("killed-deploy.log");
    let started = Instant::now();
    for (phase, config) in phases {
        env.write_config(&config);
        // One deploy to completion: a release in this phase's shape, and how long it takes.
        let mut live = releases.live(&env, phase);
        let timer = Instant::now();
        let _ = deploy_cmd(&env, &releases.commits[1 - live]).success();
        let mut normal = timer.elapsed();
        live = releases.live(&env, phase);
        for trial in 0..TRIALS_PER_PHASE {
            let want = 1 - live;
            let delay = normal.mul_f64(lcg.next_fraction());
            let mut deploy = env
                .command("sh")
                .args(["-c", "exec \"$0\" deploy --repo \"$1\" \"$2\" 2>\"$3\"", BIN])
                .arg(&env.bare)
                .arg(&releases.commits[want])
                .arg(&progress)
                .spawn();
            thread::sleep(delay);
            let _ = deploy.kill();
            let _ = deploy.wait();

            let now = releases.live(&env, "after the kill");
            let printed = fs::read_to_string(&progress).unwrap_or_default();
            let stage = stage_at_kill(&printed, now != live);
            // The record and the index after the switch are renamed into place only once
            // synced: a kill anywhere leaves the live slot's record whole, naming what it serves.
            let record = env.target.join(format!(".pushdeploy/releases/{}.json", env.live_slot()));
            let text = fs::read_to_string(&record).unwrap_or_default();
            assert!(
                text.contains(&format!("\"commit\": \"{}\"", releases.commits[now])),
                "{phase}, trial {trial}, in {stage}: the record of the live slot does not name \
                 its commit:\n{text}\n{printed}"
            );
            *stages.entry(stage).or_default() += 1;
            let context = format!(
                "{phase}, trial {trial}, killed after {delay:?} of {normal:?}, in {stage}:\n\
                 {printed}"
            );
            // The lock died with the deploy: the next one starts at once and goes through.
            let timer = Instant::now();
            let next = deploy_cmd(&env, &releases.commits[want]).success();
            normal = timer.elapsed();
            let commit = &releases.commits[want];
            next.assert_live(commit, commit, &env.live_slot());
            assert!(!next.stderr.contains("waiting"), "{context}: the lock was held\n{next}");
            assert!(normal < Duration::from_secs(20), "{context}: the next deploy took {normal:?}");
            assert_eq!(releases.live(&env, &context), want, "{context}");
            assert_no_leftovers(&env, &context);
            live = want;
        }
    }
    println!(
        "SIGKILL: {} trials in {:?}, killed in {stages:?}",
        2 * TRIALS_PER_PHASE,
        started.elapsed()
    );
    for stage in ["prepare or materialize", "build"] {
        assert!(stages.contains_key(stage), "no kill landed in {stage}: {stages:?}");
    }
}

/// Tells where a killed deploy was, from the progress lines it printed and whether the link
/// had moved.
fn stage_at_kill(printed: &str, link_moved: bool) -> &'static str {
    let said = |line: &str| printed.lines().any(|printed| printed.starts_with(line));
    if said("pushdeploy: live: ") {
        "finished"
    } else if link_moved {
        "retire or record"
    } else if said("pushdeploy: built in ") {
        "verify or activate"
    } else if said("pushdeploy: building: ") {
        "build"
    } else if said("pushdeploy: wrote ") {
        "verify or activate"
    } else if said("pushdeploy: deploying ") {
        "prepare or materialize"
    } else {
        "start or lock"
    }
}

/// Writes the record a deploy keeps of a slot directory it made (`.pushdeploy/slots/SLOT`,
/// its `dev:inode`), as the killed deploy that left it would have: pushdeploy removes only
/// slots it made, and moves any other aside.
#[track_caller]
fn mark_slot_as_made_by_pushdeploy(env: &TestEnv, slot: &str) {
    let meta = fs::symlink_metadata(env.target.join(slot)).expect("stat the slot");
    let slots = env.target.join(".pushdeploy/slots");
    fs::create_dir_all(&slots).expect("make the slots directory");
    fs::write(slots.join(slot), format!("{}:{}\n", meta.dev(), meta.ino()))
        .expect("write the slot's marker");
}

#[test]
fn next_deploy_cleans_what_an_interrupted_switch_left() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    // What a power cut can leave: a new link not yet renamed, a half-written idle slot, an old
    // release parked in the trash, and the process group of a build that died with the machine.
    std::os::unix::fs::symlink("green", env.target.join(".public_html.pushdeploy-new"))
        .expect("make the stale link");
    fs::create_dir_all(env.target.join("green/half/written")).expect("make the half slot");
    fs::write(env.target.join("green/index.html"), "half\n").expect("write the half slot");
    fs::write(env.target.join("green/stale-only.html"), "stale\n").expect("write the half slot");
    mark_slot_as_made_by_pushdeploy(&env, "green");
    fs::create_dir_all(env.target.join(".pushdeploy/trash/blue/old")).expect("make the trash");
    fs::write(env.target.join(".pushdeploy/trash/blue/old/page.html"), "old\n")
        .expect("fill the trash");
    let mut gone = env.command("true").spawn();
    let dead_pid = gone.id();
    let _ = gone.wait();
    fs::write(env.target.join(".pushdeploy/build.pgid"), dead_pid.to_string())
        .expect("write the stale build.pgid");

    let push = env.push();

    push.assert_live(&v2, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v2);
    assert_no_leftovers(&env, "after the leftovers");
}

#[test]
fn next_deploy_stops_a_build_orphaned_by_a_killed_deploy() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");
    // A build whose pushdeploy was killed: its own process group, still writing into the slot
    // the next deploy prepares.
    let green = env.target.join("green");
    fs::create_dir(&green).expect("make the orphan's slot");
    mark_slot_as_made_by_pushdeploy(&env, "green");
    let mut orphan = env
        .command("setsid")
        .args(["sh", "-c", "while :; do echo x >> stray.txt; sleep 0.02; done"])
        .current_dir(&green)
        .spawn();
    fs::write(env.target.join(".pushdeploy/build.pgid"), orphan.id().to_string())
        .expect("record the orphan's group");
    while !green.join("stray.txt").exists() {
        thread::sleep(Duration::from_millis(10));
    }

    let push = env.push();

    push.assert_live(&v2, "refs/heads/main", "green");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match orphan.try_wait().expect("poll the orphan") {
            Some(status) => break status,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = orphan.kill();
                let _ = orphan.wait();
                panic!("the orphaned build still runs after the deploy\n{push}");
            }
        }
    };
    assert_eq!(status.signal(), Some(9), "the orphan was not killed: {status}");
    env.assert_live_equals_archive(&v2);
    assert_no_leftovers(&env, "after stopping the orphan");
}
