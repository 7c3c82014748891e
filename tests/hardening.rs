//! Hardening (issue 6), each through the real binary and real pushes: hostile trees, shell
//! syntax and control characters in ref names, messages and paths, SIGKILL at random moments,
//! full disks, concurrent pushes from many clones, bad input, and the modes of what is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    BIN, Cmd, Entry, LINK, LiveSite, Output, TestEnv, Tree, assert_trees_equal, short, toml_str,
};

/// Returns the final line of a deploy refused in materialize because of `what`, while
/// `commit` stays live in `slot`.
fn refusal(what: &str, slot: &str, commit: &str) -> String {
    format!(
        "pushdeploy: failed at materialize: {what}; the live site is unchanged ({slot}, {}); \
         remove or fix that path in the repository and push again",
        short(commit)
    )
}

/// Returns the names in a directory, sorted.
#[track_caller]
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Returns a set of names, for comparing with [`names`].
fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A directory beside the target that hostile trees aim their links at. A deploy that wrote
/// through such a link would change it, or leave something new beside the target.
struct Sentinel {
    dir: PathBuf,
    before: Tree,
    root_names: BTreeSet<String>,
}

impl Sentinel {
    fn new(env: &TestEnv) -> Sentinel {
        let dir = env.root.join("outside");
        fs::create_dir(&dir).expect("create the sentinel directory");
        fs::write(dir.join("keep.txt"), "keep\n").expect("write the sentinel file");
        Sentinel { before: env.snapshot_tree(&dir), root_names: names(&env.root), dir }
    }

    /// Asserts the deploy ended refused for `why` with `live` still served unchanged, and
    /// nothing written outside.
    #[track_caller]
    fn assert_refused(
        &self,
        env: &TestEnv,
        push: &Output,
        why: &str,
        live: &str,
        before: &LiveSite,
    ) {
        assert_eq!(push.final_line(), refusal(why, "blue", live), "{push}");
        env.assert_live_unchanged(before);
        self.assert_untouched(env);
    }

    /// Asserts nothing was written outside the live slot: not into the sentinel directory,
    /// not beside the target, not into the target beside the slots.
    #[track_caller]
    fn assert_untouched(&self, env: &TestEnv) {
        assert_trees_equal(&self.before, &env.snapshot_tree(&self.dir));
        assert_eq!(names(&env.root), self.root_names, "something appeared beside the target");
        let slot = env.live_slot();
        assert_eq!(names(&env.target), set(&[".pushdeploy", &slot, LINK]), "target holds more");
    }
}

/// Returns `pushdeploy deploy --repo BARE REV`.
fn deploy_cmd(env: &TestEnv, rev: &str) -> Cmd {
    env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg(rev)
}

/// Asserts `text` holds no control character but newlines: a raw ESC, BEL or CR reaching the
/// pusher's terminal could recolour, retitle or overwrite what they read.
#[track_caller]
fn assert_no_raw_control_characters(text: &str) {
    let raw: Vec<(usize, char)> =
        text.char_indices().filter(|(_, c)| c.is_control() && *c != '\n').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{text:?}");
}

/// Writes `len` pseudo-random bytes (xorshift64*, fixed seed) to `path`: incompressible, fast
/// to make, the same on every run.
#[track_caller]
fn write_pseudo_random(path: &Path, len: usize) {
    let mut file = fs::File::create(path).expect("create the random file");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).expect("write the random file");
        left -= n;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Hostile trees

#[test]
fn symlink_chain_leading_out_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    // `a` names a sibling; only followed through `b` does it leave the release.
    env.symlink("a", "b");
    env.symlink("b", "../..");
    env.commit_all("two-link chain");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused a: symlink to b leads out of the release",
        &live,
        &before,
    );

    // Three links, each of which alone stays inside the release: `sub/hop3` is the release
    // root, so `sub/hop2` (lexically `sub`) is the target directory.
    env.remove("a");
    env.remove("b");
    env.write("sub/page.html", "page\n");
    env.symlink("hop1", "sub/hop2");
    env.symlink("sub/hop2", "hop3/..");
    env.symlink("sub/hop3", "..");
    env.commit_all("three-link chain");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused hop1: symlink to sub/hop2 leads out of the release",
        &live,
        &before,
    );
}

#[test]
fn symlink_to_directory_with_a_path_through_it_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    let evil = env.hash_blob(b"evil\n");
    let through = env.hash_tree(&[("100644", b"x.txt", &evil)]);
    let css = env.hash_blob(b"body {}\n");
    let inside = env.hash_tree(&[("100644", b"style.css", &css)]);
    let absolute = sentinel.dir.to_string_lossy().into_owned();
    // Git's tools cannot make an entry `d/x.txt` under a symlink `d`, but a tree may hold a
    // symlink `d` and a directory `d`: a writer that creates `d` first and then `d/x.txt`
    // writes through the link.
    for link in ["..", "../../outside", absolute.as_str(), "css"] {
        let link_blob = env.hash_blob(link.as_bytes());

        let push = env.push_crafted(&[
            ("120000", b"d", &link_blob),
            ("40000", b"d", &through),
            ("40000", b"css", &inside),
        ]);

        let why = "refused d: the tree holds two entries of this name";
        assert_eq!(push.final_line(), refusal(why, "blue", &live), "d -> {link}\n{push}");
        env.assert_live_unchanged(&before);
        sentinel.assert_untouched(&env);
    }
}

#[test]
fn symlink_loop_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    env.symlink("loop-a", "loop-b");
    env.symlink("loop-b", "loop-a");
    env.commit_all("loop");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused loop-a: symlink to loop-b is part of a symlink loop",
        &live,
        &before,
    );
}

#[test]
fn symlinks_none_refuses_even_a_link_inside_the_release() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    env.write_config(&format!("{}symlinks = \"none\"\n", env.base_config()));
    env.symlink("latest.html", "index.html");
    env.commit_all("inside link");

    let push = env.push();

    sentinel.assert_refused(&env, &push, "refused latest.html: symlinks are not allowed (`symlinks = \"none\"` in the configuration)", &live, &before);

    // The same configuration deploys a tree without links.
    env.remove("latest.html");
    let plain = env.commit_all("no link");
    env.push().assert_live(&plain, "refs/heads/main", "green");
    env.assert_live_equals_archive(&plain);
}

// ---------------------------------------------------------------------------------------------
// 2. Ref names, messages and paths

#[test]
fn shell_syntax_in_branch_names_is_shown_verbatim_and_never_run() {
    let (env, _, before) = TestEnv::with_live_site();
    let root_names = names(&env.root);
    let root = env.root.to_string_lossy().into_owned();
    let branches = [
        format!("x;touch${{IFS}}{root}/pwned-semicolon"),
        format!("$(touch${{IFS}}{root}/pwned-dollar)"),
        format!("`touch${{IFS}}{root}/pwned-backtick`"),
        "$(id)".to_owned(),
        "`id`".to_owned(),
        "a|b&c>d<e'f\"g".to_owned(),
    ];
    let refspecs = branches.iter().map(|branch| format!("HEAD:refs/heads/{branch}"));

    let push = env.git().args(["push", "origin"]).args(refspecs).success();

    let mut expected: Vec<String> = branches
        .iter()
        .map(|branch| {
            format!(
                "pushdeploy: ignored refs/heads/{}: only pushes to the branch \"main\" deploy",
                branch.replace(&root, "$TMP")
            )
        })
        .collect();
    expected.sort();
    let mut lines = push.pushdeploy_lines();
    lines.sort();
    assert_eq!(lines, expected, "{push}");
    assert_eq!(names(&env.root), root_names, "a branch name ran as a command");
    env.assert_live_unchanged(&before);
}

#[test]
fn deploy_branch_with_shell_syntax_deploys_and_reaches_the_build_as_data() {
    let env = TestEnv::new();
    let branch = format!("x;touch${{IFS}}{}/pwned-$(id)-`id`", env.root.display());
    let valid = env.git_in(&env.root).args(["check-ref-format", "--branch"]).arg(&branch).output();
    if !valid.status.success() {
        println!("skipped: git rejects the branch name {branch:?}:\n{valid}");
        return;
    }
    env.init(&["--branch", &branch]);
    let saw = env.root.join("build-saw.txt");
    env.write_config(&format!(
        "branch = {}\ntarget = {}\nlink = \"{LINK}\"\n\n[build]\n\
         command = 'printf \"%s\\n\" \"$PUSHDEPLOY_REF\" \"$PUSHDEPLOY_BRANCH\" > \"$SAW\"'\n\
         [build.env]\nSAW = {}\n",
        toml_str(&branch),
        toml_str(&env.target.to_string_lossy()),
        toml_str(&saw.to_string_lossy()),
    ));
    env.write("index.html", "odd branch\n");
    let commit = env.commit_all("odd branch");
    let mut root_names = names(&env.root);

    let push = env.push_ref(&format!("HEAD:refs/heads/{branch}"));

    let label = format!("refs/heads/{branch}").replace(&env.root.to_string_lossy()[..], "$TMP");
    push.assert_live(&commit, &label, "blue");
    env.assert_live_equals_archive(&commit);
    let seen = fs::read_to_string(&saw).expect("the build wrote what it saw");
    assert_eq!(seen, format!("refs/heads/{branch}\n{branch}\n"));
    root_names.insert("build-saw.txt".to_owned());
    assert_eq!(names(&env.root), root_names, "the branch name ran as a command");
}

#[test]
fn control_characters_in_paths_messages_and_build_output_reach_the_pusher_escaped() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&format!(
        "{}\n[build]\ncommand = 'printf \"build says \\033[31mred\\033[0m\\a\\n\"'\n",
        env.base_config()
    ));
    // A name with an escape sequence and a newline, holding an LFS pointer so that the deploy
    // names it in a warning.
    let name = "\x1b[31mred\nline.txt";
    env.write(name, "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n");
    let message = "deploy \x1b[31mred\x07\r\nsecond \x1b]0;retitled\x07 line\x1b[2J";
    let commit = env.commit_all(message);

    let push = env.push();

    push.assert_live(&commit, "refs/heads/main", "green");
    let lines: Vec<String> = push.normalized_stderr().lines().map(str::to_owned).collect();
    let warning = "pushdeploy: warning: \\u{1b}[31mred\\nline.txt is a Git LFS pointer: it is \
                   deployed as the pointer text, since pushdeploy does not fetch LFS objects; \
                   commit the file itself to deploy it";
    assert!(lines.iter().any(|line| line == warning), "no line {warning:?}\n{push}");
    let build = "build says \\u{1b}[31mred\\u{1b}[0m\\u{7}";
    assert!(lines.iter().any(|line| line == build), "no line {build:?}\n{push}");
    assert_no_raw_control_characters(&push.stderr);
    env.assert_live_equals_archive(&commit);

    // A refused path and a link target with escape sequences are named escaped too, through
    // git and without it.
    let before = env.live_site();
    env.symlink("\x1b[2J\rgone", "/\x1b[5mblink");
    env.commit_all("hostile link");
    let why = "refused \\u{1b}[2J\\rgone: symlink to /\\u{1b}[5mblink is absolute; only relative \
               links inside the release are allowed";

    let push = env.push();

    assert_eq!(push.final_line(), refusal(why, "green", &commit), "{push}");
    assert_no_raw_control_characters(&push.stderr);
    let by_hand = deploy_cmd(&env, "main").failure();
    assert_eq!(by_hand.final_line(), refusal(why, "green", &commit), "{by_hand}");
    assert_no_raw_control_characters(&by_hand.stderr);
    env.assert_live_unchanged(&before);
}

// ---------------------------------------------------------------------------------------------
// 3. Crashes

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

/// Asserts a deploy left nothing behind: only the live slot, no temporary link, no trash, no
/// recorded build, and no process working in the target.
#[track_caller]
fn assert_no_leftovers(env: &TestEnv, context: &str) {
    let slot = env.live_slot();
    assert_eq!(names(&env.target), set(&[".pushdeploy", &slot, LINK]), "{context}");
    let trash = env.target.join(".pushdeploy/trash");
    if trash.exists() {
        assert_eq!(names(&trash), BTreeSet::new(), "{context}: trash left");
    }
    let pgid = env.target.join(".pushdeploy/build.pgid");
    assert!(!pgid.exists(), "{context}: {} left", pgid.display());
    let stray = processes_working_under(&env.target);
    assert!(stray.is_empty(), "{context}: processes still work in the target: {stray:?}");
}

/// Returns `pid: command line` of every live process whose working directory is under `dir`.
fn processes_working_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|entry| {
            fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .map(|entry| {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline)
            )
        })
        .collect()
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

// ---------------------------------------------------------------------------------------------
// 4. Full disk

/// A small tmpfs mounted for one test and unmounted when dropped, also when the test panics.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs with `options` at `TMP/name`. Without the right to mount, says so and
    /// returns `None`, unless `CI` is set (CI runs as root): then it fails.
    #[track_caller]
    fn mount(env: &TestEnv, name: &str, options: &str) -> Option<SmallDisk> {
        let dir = env.root.join(name);
        fs::create_dir(&dir).expect("create the mount point");
        let mount =
            env.command("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&dir).output();
        if mount.status.success() {
            return Some(SmallDisk { dir });
        }
        assert!(std::env::var_os("CI").is_none(), "cannot mount a tmpfs under CI:\n{mount}");
        println!("skipped: cannot mount a tmpfs (this test needs root):\n{mount}");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn release_that_does_not_fit_is_refused_and_a_build_that_fills_the_disk_fails() {
    let mut env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env, "small", "size=2m") else { return };
    env.target = disk.dir.join("www");
    env.init(&[]);
    env.write("index.html", "small\n");
    env.write("css/style.css", "body {}\n");
    let small = env.commit_all("small");
    env.push().assert_live(&small, "refs/heads/main", "blue");
    let before = env.live_site();

    // 3 MB on a 2 MiB filesystem: the preflight refuses before writing anything.
    env.write("big.bin", vec![0u8; 3_000_000]);
    env.commit_all("too big");
    let push = env.push();

    let line = push.assert_failed_at("materialize");
    let start = "pushdeploy: failed at materialize: not enough space on the target's filesystem: \
                 the release needs about 3.0 MB, and ";
    let end = format!(
        " are free in $TMP/small/www; the live site is unchanged (blue, {}); free space on the \
         filesystem of $TMP/small/www, then push again",
        short(&small)
    );
    assert!(line.starts_with(start) && line.ends_with(&end), "{line:?}\n{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after the preflight");

    // Fits, but the build fills the disk.
    env.remove("big.bin");
    env.write("index.html", "v3\n");
    env.commit_all("v3");
    let command = "head -c 4000000 /dev/zero > big";
    env.write_config(&format!("{}\n[build]\ncommand = {}\n", env.base_config(), toml_str(command)));
    let push = env.push();

    let expected = format!(
        "pushdeploy: failed at build: `{command}` exited with status 1; the live site is \
         unchanged (blue, {}); fix the build and push again (its output is above)",
        short(&small)
    );
    assert_eq!(push.final_line(), expected, "{push}");
    assert!(push.stderr.contains("No space left on device"), "{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after the full build");

    // The space came back: a release that fits goes live.
    env.write_config(&env.base_config());
    env.write("index.html", "v4\n");
    let v4 = env.commit_all("v4");
    env.push().assert_live(&v4, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v4);
}

#[test]
fn running_out_of_inodes_fails_at_materialize_as_no_space() {
    let mut env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env, "inodes", "size=4m,nr_inodes=64") else { return };
    env.target = disk.dir.join("www");
    env.init(&[]);
    env.write("index.html", "small\n");
    let small = env.commit_all("small");
    env.push().assert_live(&small, "refs/heads/main", "blue");
    let before = env.live_site();
    // Few bytes, so the preflight (which counts bytes) lets it through; too many inodes.
    for page in 0..100 {
        env.write(format!("pages/{page:03}.html"), format!("page {page}\n"));
    }
    env.commit_all("many pages");

    let push = env.push();

    let line = push.assert_failed_at("materialize");
    let start = "pushdeploy: failed at materialize: $TMP/inodes/www/green/";
    let end = format!(
        ": No space left on device (os error 28); the live site is unchanged (blue, {}); free \
         space on the filesystem of $TMP/inodes/www, then push again",
        short(&small)
    );
    assert!(line.starts_with(start) && line.ends_with(&end), "{line:?}\n{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after running out of inodes");
}

// ---------------------------------------------------------------------------------------------
// 5. Concurrent pushes

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
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input

#[test]
fn broken_config_fails_the_push_with_its_line_and_what_to_do() {
    let (env, _, before) = TestEnv::with_live_site();
    let target = toml_str(&env.target.to_string_lossy());
    let cases = [
        (
            format!("target = {target}\nlink = \"{LINK}\n"),
            "line 2: invalid basic string, expected `\"` (in `link = \"public_html`)",
        ),
        (
            format!("target = {target}\n\n[build]\ncomand = \"make\"\n"),
            "line 4: unknown field `comand`, expected one of `command`, `publish`, `timeout`, \
             `cache`, `env` (in `comand = \"make\"`)",
        ),
        (
            format!("target = {target}\numask = 22\n"),
            "line 2: invalid type: integer `22`, expected a string (in `umask = 22`)",
        ),
        ("target = \"www\"\n".to_owned(), "line 1: `target`: www is not an absolute path"),
        (
            format!("target = {target}\nlink = \"a/b\"\n"),
            "line 2: `link`: \"a/b\" must be a plain file name inside the target, without `/`",
        ),
    ];
    for (round, (config, message)) in cases.iter().enumerate() {
        env.write_config(config);
        env.write("index.html", format!("round {round}\n"));
        env.commit_all(&format!("round {round}"));

        let push = env.push();

        let expected = [
            format!("pushdeploy: error: $TMP/site.git/pushdeploy.toml: {message}"),
            "pushdeploy: hint: fix $TMP/site.git/pushdeploy.toml and try again".to_owned(),
        ];
        assert_eq!(push.pushdeploy_lines(), expected, "{config}\n{push}");
        env.assert_live_unchanged(&before);
    }
    env.write_config(&env.base_config());
    env.write("index.html", "fixed\n");
    let fixed = env.commit_all("fixed");
    env.push().assert_live(&fixed, "refs/heads/main", "green");
}

#[test]
fn missing_target_or_a_file_in_its_place_fails_with_what_to_do() {
    let (env, _, before) = TestEnv::with_live_site();
    let away = env.root.join("www-away");
    fs::rename(&env.target, &away).expect("move the target away");
    let expected = [
        "pushdeploy: error: target $TMP/www does not exist or is not a directory",
        "pushdeploy: hint: create it, or fix `target` in $TMP/site.git/pushdeploy.toml",
    ];
    for (round, file_in_place) in [false, true].into_iter().enumerate() {
        if file_in_place {
            fs::write(&env.target, "not a directory\n").expect("put a file in place");
        }
        env.write("index.html", format!("round {round}\n"));
        env.commit_all(&format!("round {round}"));

        let push = env.push();

        assert_eq!(push.pushdeploy_lines(), expected, "{push}");
    }
    assert_eq!(names(&env.root), set(&["home", "site.git", "work", "www", "www-away"]));
    fs::remove_file(&env.target).expect("remove the file");
    fs::rename(&away, &env.target).expect("move the target back");
    env.assert_live_unchanged(&before);
}

#[test]
fn state_path_taken_by_a_file_fails_with_what_to_do() {
    let (env, _, before) = TestEnv::with_live_site();
    let state = env.target.join(".pushdeploy");
    let kept = env.root.join("state-kept");
    fs::rename(&state, &kept).expect("move the state away");
    fs::write(&state, "not a directory\n").expect("put a file in place");
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    let lines = push.pushdeploy_lines();
    assert_eq!(lines.len(), 2, "{push}");
    assert!(
        lines[0].starts_with("pushdeploy: error: ")
            && lines[0].contains("$TMP/www/.pushdeploy")
            && lines[0].to_lowercase().contains("not a directory"),
        "{push}"
    );
    assert!(lines[1].starts_with("pushdeploy: hint: "), "{push}");
    fs::remove_file(&state).expect("remove the file");
    fs::rename(&kept, &state).expect("move the state back");
    env.assert_live_unchanged(&before);
}

#[test]
fn read_only_target_fails_with_what_to_do() {
    let mut env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env, "ro", "size=4m") else { return };
    env.target = disk.dir.join("www");
    env.init(&[]);
    env.write("index.html", "v1\n");
    let v1 = env.commit_all("v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    let before = env.live_site();
    let _ = env.command("mount").args(["-o", "remount,ro"]).arg(&disk.dir).success();
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    let expected = [
        "pushdeploy: error: cannot lock $TMP/ro/www/.pushdeploy/lock: Read-only file system (os \
         error 30)",
        "pushdeploy: hint: check that the target directory is writable",
    ];
    assert_eq!(push.pushdeploy_lines(), expected, "{push}");
    env.assert_live_unchanged(&before);
}

#[test]
fn deploy_in_a_repository_without_commits_says_so() {
    let env = TestEnv::new();
    let _ = env.init_cmd(&[]).success();

    let deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).failure();

    assert_eq!(deploy.code(), Some(2));
    let expected = [
        "pushdeploy: error: the branch \"main\" has no commits in $TMP/site.git/ yet",
        "pushdeploy: hint: push it first: git push production main",
    ];
    assert_eq!(deploy.pushdeploy_lines(), expected, "{deploy}");
    assert_eq!(names(&env.target), BTreeSet::new(), "the failed deploy wrote into the target");
}

#[test]
fn force_push_of_an_older_commit_deploys_it() {
    let (env, v1, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    env.write("new.html", "new\n");
    let v2 = env.commit_all("v2");
    env.push().assert_live(&v2, "refs/heads/main", "green");

    let push = env.push_ref(&format!("+{v1}:refs/heads/main"));

    push.assert_live(&v1, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&v1);
    env.assert_no_idle_slot();
}

#[test]
fn commit_with_an_empty_tree_fails_at_verify() {
    let (env, v1, before) = TestEnv::with_live_site();
    let _ = env.git().args(["switch", "--quiet", "--orphan", "nothing"]).success();
    let _ = env.git().args(["commit", "--quiet", "--allow-empty", "-m", "nothing"]).success();

    let push = env.push_ref("+nothing:main");

    let expected = format!(
        "pushdeploy: failed at verify: the release is empty; the live site is unchanged (blue, \
         {}); push a commit that has files in it",
        short(&v1)
    );
    assert_eq!(push.final_line(), expected, "{push}");
    env.assert_live_unchanged(&before);
}

/// What one deploy used.
struct Measured {
    /// The deploy's stderr, with the temp dir spelled `$TMP`.
    stderr: String,
    /// Peak resident set size of the deploy and its children, as `/usr/bin/time` reports it:
    /// this counts the pages of files it maps, which the kernel can drop at any time.
    peak_rss: u64,
    /// Peak anonymous memory (heap, stacks) of the deploy and its children, sampled.
    peak_anon: u64,
}

/// Runs `pushdeploy deploy --repo BARE REV` under `/usr/bin/time -v`, sampling the anonymous
/// memory of its process tree meanwhile; asserts it succeeded.
#[track_caller]
fn deploy_measured(env: &TestEnv, rev: &str) -> Measured {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "GNU time is missing: apt-get install time (.ci/run does)"
    );
    let report = env.root.join("time-report.txt");
    let stderr = env.root.join("deploy-stderr.txt");
    let script = "exec /usr/bin/time -v -o \"$0\" \"$1\" deploy --repo \"$2\" \"$3\" 2>\"$4\"";
    let mut time = env
        .command("sh")
        .args(["-c", script])
        .arg(&report)
        .arg(BIN)
        .arg(&env.bare)
        .arg(rev)
        .arg(&stderr)
        .spawn();
    let mut peak_anon = 0;
    let status = loop {
        if let Some(status) = time.try_wait().expect("poll the deploy") {
            break status;
        }
        let anon: u64 = descendants(time.id()).iter().map(|pid| anon_bytes(*pid)).sum();
        peak_anon = peak_anon.max(anon);
        thread::sleep(Duration::from_millis(2));
    };
    let report = fs::read_to_string(&report).expect("read the report of time");
    let stderr = fs::read_to_string(&stderr)
        .expect("read the deploy's stderr")
        .replace(&env.root.to_string_lossy()[..], "$TMP");
    assert!(
        status.success(),
        "the deploy failed ({status}; peak anonymous memory {}):\n{stderr}\n{report}",
        mib(peak_anon)
    );
    let peak_rss = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the report of time:\n{report}"))
        * 1024;
    Measured { stderr, peak_rss, peak_anon }
}

/// Returns the processes below `pid`, from `/proc/PID/task/*/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else { continue };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|pid| pid.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Returns a process's anonymous resident memory (`RssAnon`), 0 once it is gone.
fn anon_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kb| kb.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Returns a size in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Asserts the live release's `path` holds the blob `path` has in `rev`, with mode 0644.
#[track_caller]
fn assert_live_file_is_blob(env: &TestEnv, path: &str, rev: &str) {
    let live = env.live_dir().join(path);
    let hashed = env.git_in(&env.bare).args(["hash-object"]).arg(&live).success();
    let blob = env.git_in(&env.bare).args(["rev-parse", &format!("{rev}:{path}")]).success();
    assert_eq!(hashed.stdout.trim(), blob.stdout.trim(), "{path} differs from its blob");
    let mode = fs::metadata(&live).expect("stat the live file").mode() & 0o7777;
    assert_eq!(mode, 0o644, "{path} has mode {mode:o}");
}

/// Git options that store rather than compress: incompressible bytes stay quick to handle.
const STORE: [&str; 6] =
    ["-c", "core.compression=0", "-c", "core.looseCompression=0", "-c", "pack.compression=0"];

/// The most memory a deploy of a 200 MB file may use.
const MEMORY_LIMIT: u64 = 100 << 20;

/// Returns an environment whose branch `big` (which does not deploy, so that the deploy can be
/// measured on its own) adds a 200 MB file of pseudo-random bytes to the live site; and the
/// branch's commit.
fn env_with_200_mb_branch() -> (TestEnv, String) {
    let (env, _, _) = TestEnv::with_live_site();
    write_pseudo_random(&env.work.join("big.bin"), 200_000_000);
    let _ = env.git().args(STORE).args(["add", "big.bin"]).success();
    let _ = env.git().args(["commit", "--quiet", "-m", "big"]).success();
    let commit = env.rev_parse("HEAD");
    let _ =
        env.git().args(STORE).args(["push", "--quiet", "origin", "HEAD:refs/heads/big"]).success();
    (env, commit)
}

#[test]
fn file_of_200_mb_deploys_with_bounded_memory() {
    let (env, commit) = env_with_200_mb_branch();

    let deploy = deploy_measured(&env, "big");

    let live = format!("pushdeploy: live: {} (big) in green", short(&commit));
    assert!(
        deploy.stderr.lines().last().is_some_and(|line| line.starts_with(&live)),
        "{}",
        deploy.stderr
    );
    assert_live_file_is_blob(&env, "big.bin", "big");
    assert_eq!(names(&env.live_dir()), set(&["big.bin", "css", "index.html"]));
    println!(
        "200 MB file, loose object: peak RSS {} (as /usr/bin/time counts it, with mapped file \
         pages), peak anonymous memory {}",
        mib(deploy.peak_rss),
        mib(deploy.peak_anon)
    );
    assert!(deploy.peak_anon < MEMORY_LIMIT, "peak anonymous memory {}", mib(deploy.peak_anon));
}

// Regression: a packed blob over 16 MiB failed with `Bad file descriptor` (its first bytes were
// read back from the write-only release file), and `git cat-file` read it whole below
// core.bigFileThreshold.
#[test]
fn packed_file_of_200_mb_deploys_with_bounded_memory() {
    let (env, commit) = env_with_200_mb_branch();
    // A push of 100 objects or more stays packed on the server; so does everything after gc.
    let _ = env.git_in(&env.bare).args(STORE).args(["repack", "-a", "-d", "-q"]).success();

    let deploy = deploy_measured(&env, "big");

    let live = format!("pushdeploy: live: {} (big) in green", short(&commit));
    assert!(
        deploy.stderr.lines().last().is_some_and(|line| line.starts_with(&live)),
        "{}",
        deploy.stderr
    );
    assert_live_file_is_blob(&env, "big.bin", "big");
    println!(
        "200 MB file, packed: peak RSS {}, peak anonymous memory {}",
        mib(deploy.peak_rss),
        mib(deploy.peak_anon)
    );
    assert!(deploy.peak_anon < MEMORY_LIMIT, "peak anonymous memory {}", mib(deploy.peak_anon));
}

#[test]
fn hundred_thousand_files_deploy() {
    const FILES: usize = 100_000;
    const DIRS: usize = 100;
    let (env, _, _) = TestEnv::with_live_site();
    // `git fast-import` makes the commit straight from a stream: writing 100,000 files into
    // the work tree and `git add`ing them would take most of the time of this test.
    let head = env.rev_parse("HEAD");
    let message = "100,000 files";
    let mut stream = format!(
        "commit refs/heads/main\ncommitter Test Committer <committer@example.com> 981173106 +0000\n\
         data {}\n{message}\nfrom {head}\n",
        message.len()
    );
    let mut expected = env.archive_tree(&head);
    expected.insert("files".into(), Entry::Dir { mode: 0o755 });
    for dir in 0..DIRS {
        expected.insert(format!("files/d{dir:02}").into(), Entry::Dir { mode: 0o755 });
    }
    for i in 0..FILES {
        let path = format!("files/d{:02}/f{i:06}.txt", i % DIRS);
        let contents = format!("file {i}\n");
        stream.push_str(&format!("M 100644 inline {path}\ndata {}\n{contents}\n", contents.len()));
        expected.insert(path.into(), Entry::File { mode: 0o644, contents: contents.into_bytes() });
    }
    let _ = env.git().args(["fast-import", "--quiet"]).stdin(stream).success();
    let commit = env.rev_parse("main");

    let timer = Instant::now();
    let push = env.git().args(["push", "origin", "main"]).success();
    let took = timer.elapsed();

    push.assert_live(&commit, "refs/heads/main", "green");
    let wrote = push
        .pushdeploy_lines()
        .into_iter()
        .find(|line| line.starts_with("pushdeploy: wrote "))
        .unwrap_or_else(|| panic!("no `wrote` line\n{push}"));
    assert!(wrote.starts_with("pushdeploy: wrote 100,00"), "{wrote}");
    println!("100,000 files: push and deploy took {took:?}; {wrote}; {}", push.final_line());
    assert_trees_equal(&expected, &env.snapshot_tree(env.live_dir()));
    env.assert_no_idle_slot();
}

#[test]
fn submodule_entry_deploys_as_an_empty_directory_with_a_warning() {
    let (env, v1, _) = TestEnv::with_live_site();
    let _ = env
        .git()
        .args(["update-index", "--add", "--cacheinfo", &format!("160000,{v1},vendor/theme")])
        .success();
    let _ = env.git().args(["commit", "--quiet", "-m", "submodule"]).success();
    let commit = env.rev_parse("HEAD");

    let push = env.push();

    push.assert_live(&commit, "refs/heads/main", "green");
    let warning = format!(
        "pushdeploy: warning: submodule vendor/theme (commit {}) is not deployed: its directory \
         is empty, as `git archive` makes it; vendor its files into the repository to deploy them",
        short(&v1)
    );
    assert!(push.pushdeploy_lines().contains(&warning), "no line {warning:?}\n{push}");
    env.assert_live_equals_archive(&commit);
}

#[test]
fn lfs_pointer_deploys_as_is_with_a_warning() {
    let (env, _, _) = TestEnv::with_live_site();
    let pointer = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 123\n",
        "4d7a".repeat(16)
    );
    env.write("images/hero.png", &pointer);
    let commit = env.commit_all("lfs pointer");

    let push = env.push();

    push.assert_live(&commit, "refs/heads/main", "green");
    let warning = "pushdeploy: warning: images/hero.png is a Git LFS pointer: it is deployed as \
                   the pointer text, since pushdeploy does not fetch LFS objects; commit the file \
                   itself to deploy it";
    assert!(push.pushdeploy_lines().iter().any(|line| line == warning), "{push}");
    env.assert_live_equals_archive(&commit);
}

// ---------------------------------------------------------------------------------------------
// 7. Permissions

/// Returns `tree` with every permission bit `umask` clears cleared.
fn masked(tree: &Tree, umask: u32) -> Tree {
    tree.iter()
        .map(|(path, entry)| {
            let entry = match entry {
                Entry::File { mode, contents } => {
                    Entry::File { mode: mode & !umask, contents: contents.clone() }
                }
                Entry::Dir { mode } => Entry::Dir { mode: mode & !umask },
                link => link.clone(),
            };
            (path.clone(), entry)
        })
        .collect()
}

/// Returns the permission bits of `path`.
#[track_caller]
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode()
        & 0o7777
}

#[test]
fn umask_027_makes_files_0640_and_directories_0750() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&format!("{}umask = \"027\"\n", env.base_config()));
    // `css/style.css` is unchanged: it must not be hard-linked from the 0644 release.
    env.write("index.html", "v2\n");
    env.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    let v2 = env.commit_all("v2");

    env.push().assert_live(&v2, "refs/heads/main", "green");

    let live = env.live_dir();
    assert_trees_equal(&masked(&env.archive_tree(&v2), 0o027), &env.snapshot_tree(&live));
    assert_eq!(mode_of(&live), 0o750, "the slot itself");
    assert_eq!(mode_of(&live.join("css/style.css")), 0o640);
    assert_eq!(mode_of(&live.join("bin/run.sh")), 0o750);
    assert_eq!(mode_of(&live.join("bin")), 0o750);

    // The build runs with the umask too.
    env.write_config(&format!(
        "{}umask = \"027\"\n\n[build]\ncommand = 'mkdir gen && echo built > gen/out.txt'\n",
        env.base_config()
    ));
    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");

    env.push().assert_live(&v3, "refs/heads/main", "blue");

    let live = env.live_dir();
    assert_eq!(mode_of(&live.join("gen")), 0o750);
    assert_eq!(mode_of(&live.join("gen/out.txt")), 0o640);
    assert_eq!(mode_of(&live.join("index.html")), 0o640);
}

#[test]
fn default_umask_makes_files_0644_and_directories_and_executables_0755() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    env.write("deep/er/page.html", "page\n");
    env.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    let v2 = env.commit_all("v2");
    let _ = env.push_ref("HEAD:refs/heads/staging");

    // Whatever umask the caller has, the release follows the configuration's (022).
    let deploy = env
        .command("sh")
        .args(["-c", "umask 077 && exec \"$0\" deploy --repo \"$1\" staging", BIN])
        .arg(&env.bare)
        .success();

    deploy.assert_live(&v2, "staging", "green");
    env.assert_live_equals_archive(&v2);
    let live = env.live_dir();
    assert_eq!(mode_of(&live), 0o755, "the slot itself");
    for (path, mode) in [
        ("index.html", 0o644),
        ("css/style.css", 0o644),
        ("deep", 0o755),
        ("deep/er", 0o755),
        ("deep/er/page.html", 0o644),
        ("bin", 0o755),
        ("bin/run.sh", 0o755),
    ] {
        assert_eq!(mode_of(&live.join(path)), mode, "{path}");
    }
}

#[test]
fn world_writable_target_is_warned_about() {
    let (env, _, _) = TestEnv::with_live_site();
    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");

    let push = env.push();

    push.assert_live(&v2, "refs/heads/main", "green");
    let warning = "pushdeploy: warning: target $TMP/www is writable by every user, who could \
                   replace the site; run `chmod o-w $TMP/www`";
    assert_eq!(push.pushdeploy_lines().first().map(String::as_str), Some(warning), "{push}");

    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");
    let push = env.push();
    push.assert_live(&v3, "refs/heads/main", "blue");
    assert!(!push.stderr.contains("writable by every user"), "{push}");
}
