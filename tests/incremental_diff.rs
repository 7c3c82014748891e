//! Work proportional to the change: with `[retire] keep_previous`, the release kept in the idle
//! slot is brought to the new commit by applying the tree diff (the diff route); without it,
//! the old release is removed after the push is over. Every release must still be exactly
//! `git archive` of its commit, whatever route it took and whatever was killed on the way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::site::deploy_cmd;
use crate::support::target::assert_no_leftovers;
use crate::support::{Entry, Output, TestEnv, assert_trees_equal, short};

/// One change to the work clone.
type Step = Box<dyn Fn(&TestEnv)>;

/// Writes a site of `dirs` directories of `files` pages each, plus a home page.
fn write_pages(env: &TestEnv, dirs: usize, files: usize, version: &str) {
    for dir in 0..dirs {
        for page in 0..files {
            env.write(format!("pages/{dir:03}/page-{page}.html"), format!("<p>page {page}</p>\n"));
        }
    }
    env.write("index.html", format!("<h1>{version}</h1>\n"));
}

/// Returns the pids of the `pushdeploy reap` processes started for this environment's
/// repository.
fn reapers(env: &TestEnv) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let repo = env.bare.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
            let ours = args.len() == 4
                && args[0].ends_with(b"pushdeploy")
                && args[1..3] == [b"reap".as_slice(), b"--repo"]
                && args[3].strip_suffix(b"/").unwrap_or(args[3]) == repo;
            ours.then_some(pid)
        })
        .collect()
}

/// Returns how many entries a directory holds (0 when it is gone).
fn entries_in(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[test]
fn a_detached_removal_killed_half_way_is_finished_by_the_next_deploy() {
    let env = TestEnv::new();
    env.init(&[]);
    write_pages(&env, 100, 25, "v1");
    let v1 = env.commit_all("v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    assert_no_leftovers(&env, "after v1");

    // Hold the trash's lock, so that the remover the next deploy starts waits for it.
    let lock = env.target.join(".pushdeploy/trash.lock");
    let ready = env.root.join("lock-held");
    // `-o`: the lock is flock(1)'s own, released when it is killed, not its command's.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sh", "-c", "touch \"$0\"; exec sleep 30"])
        .arg(&ready)
        .spawn()
        .expect("run flock (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }

    env.write("index.html", "<h1>v2</h1>\n");
    let v2 = env.commit_all("v2");
    let push = env.push();
    // The push is over while the old release still waits in the trash.
    push.assert_live(&v2, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v2);
    env.assert_no_idle_slot();
    let trash = env.target.join(".pushdeploy/trash");
    assert_eq!(entries_in(&trash), 1, "the retired release waits in the trash\n{push}");
    let retired = fs::read_dir(&trash).unwrap().next().unwrap().unwrap().path().join("pages");
    let reaper = loop {
        match reapers(&env).as_slice() {
            [pid] => break *pid,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            found => panic!("expected one `pushdeploy reap`, found {found:?}\n{push}"),
        }
    };

    // Let it start, and kill it once it has removed some of the tree, not all.
    let full = entries_in(&retired);
    let _ = holder.kill();
    let _ = holder.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while entries_in(&retired) == full && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    let killed = Command::new("kill").args(["-9", &reaper.to_string()]).status();
    assert!(killed.is_ok_and(|status| status.success()), "kill the remover");
    let left = entries_in(&retired);
    assert!(0 < left && left < full, "killed half-way: {left} of {full} entries left");

    // The next deploy finishes the removal, and its release is right.
    env.write("index.html", "<h1>v3</h1>\n");
    let v3 = env.commit_all("v3");
    let push = env.push();
    push.assert_live(&v3, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&v3);
    assert_no_leftovers(&env, "after v3");
}

/// Writes `pushdeploy.toml` with `[retire] keep_previous = true`.
fn keep_previous(env: &TestEnv) {
    env.write_config(&format!("{}\n[retire]\nkeep_previous = true\n", env.base_config()));
}

/// Returns the line a deploy prints when it applies the diff to the release kept in `slot`,
/// up to its counts.
fn diff_route(kept_commit: &str, slot: &str) -> String {
    format!(
        "pushdeploy: applied the changes since {} to the release kept in {slot}: ",
        short(kept_commit)
    )
}

/// Pushes the work clone's HEAD with `keep_previous`; asserts the new release equals its
/// archive, the release it replaced is kept unchanged, and the push took the diff route from
/// `kept` (the commit the idle slot held) when it is given. Returns the push's output.
#[track_caller]
fn push_keeping(env: &TestEnv, message: &str, kept: Option<&str>) -> (String, Output) {
    let commit = env.commit_all(message);
    let first = fs::symlink_metadata(env.link_path()).is_err();
    let replaced = (!first).then(|| env.live_site());
    let slot = if first { "blue" } else { env.idle_slot() };
    let push = env.push();
    push.assert_live(&commit, "refs/heads/main", slot);
    env.assert_live_equals_archive(&commit);
    if let Some(replaced) = replaced {
        let old = env.snapshot_tree(env.target.join(&replaced.link_target));
        assert_trees_equal(&replaced.tree, &old);
    }
    if let Some(kept) = kept {
        let line = diff_route(kept, slot);
        let lines = push.pushdeploy_lines();
        assert!(
            lines.iter().any(|printed| printed.starts_with(&line)),
            "{message}: no `{line}`\n{push}"
        );
        assert!(!lines.iter().any(|printed| printed.starts_with("pushdeploy: wrote ")), "{push}");
    }
    (commit, push)
}

/// A site of `dirs` directories of `files` pages with `keep_previous`, pushed as v1 then v2
/// (a new index page): green serves v2, blue keeps v1. Returns the two commits.
fn kept_v1_live_v2(dirs: usize, files: usize) -> (TestEnv, String, String) {
    let env = TestEnv::new();
    env.init(&[]);
    keep_previous(&env);
    write_pages(&env, dirs, files, "v1");
    let (v1, _) = push_keeping(&env, "v1", None);
    env.write("index.html", "<h1>v2</h1>\n");
    let (v2, _) = push_keeping(&env, "v2", None);
    (env, v1, v2)
}

#[test]
fn every_kind_of_change_takes_the_diff_route_and_equals_git_archive() {
    let env = TestEnv::new();
    env.init(&[]);
    keep_previous(&env);
    write_pages(&env, 4, 30, "v1");
    env.write("about.html", "<p>about</p>\n");
    env.write_exec("bin/tool.sh", "#!/bin/sh\necho tool\n");
    env.write("dir-becomes-file/inner.html", "inner\n");
    env.write("dir-becomes-file/deeper/more.html", "more\n");
    env.write("file-becomes-dir", "a file\n");
    env.write("becomes-link.html", "a file for now\n");
    env.symlink("link-becomes-file.html", "index.html");
    env.symlink("link-retargeted.html", "index.html");
    // Two full routes: the first deploy, then into the empty other slot.
    let (mut kept, _) = push_keeping(&env, "first", None);
    env.write("index.html", "<h1>v2</h1>\n");
    let (mut live, _) = push_keeping(&env, "second", None);

    let steps: Vec<(&str, Step)> = vec![
        (
            "modify and add",
            Box::new(|env| {
                env.write("index.html", "<h1>home, changed</h1>\n");
                env.write("new.html", "new\n");
                env.write("new-dir/sub/new.html", "new in a new directory\n");
            }),
        ),
        (
            "delete and rename",
            Box::new(|env| {
                env.remove("about.html");
                let _ = env
                    .git()
                    .args(["mv", "pages/000/page-0.html", "pages/000/renamed.html"])
                    .success();
                let _ = env.git().args(["mv", "pages/001", "pages/renamed-dir"]).success();
            }),
        ),
        (
            "file to symlink, symlink to file, symlink retargeted",
            Box::new(|env| {
                env.remove("becomes-link.html");
                env.symlink("becomes-link.html", "index.html");
                env.remove("link-becomes-file.html");
                env.write("link-becomes-file.html", "a file now\n");
                env.remove("link-retargeted.html");
                env.symlink("link-retargeted.html", "new.html");
            }),
        ),
        (
            "executable bit on and off",
            Box::new(|env| {
                let path = env.work.join("pages/002/page-1.html");
                fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
                let path = env.work.join("bin/tool.sh");
                fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
            }),
        ),
        (
            "directory replaced by a file, and a file by a directory",
            Box::new(|env| {
                env.remove("dir-becomes-file");
                env.write("dir-becomes-file", "now a file\n");
                env.remove("file-becomes-dir");
                env.write("file-becomes-dir/inner.html", "now a directory\n");
            }),
        ),
        (
            "everything back the other way",
            Box::new(|env| {
                env.remove("dir-becomes-file");
                env.write("dir-becomes-file/inner.html", "inner again\n");
                env.remove("file-becomes-dir");
                env.write("file-becomes-dir", "a file again\n");
                env.remove("becomes-link.html");
                env.write("becomes-link.html", "a file again\n");
                env.remove("new-dir");
            }),
        ),
    ];
    for (name, change) in steps {
        change(&env);
        let (commit, _) = push_keeping(&env, name, Some(&kept));
        (kept, live) = (live, commit);
    }
}

#[test]
fn a_hand_edit_in_the_kept_release_forces_the_full_route() {
    let (env, v1, _) = kept_v1_live_v2(4, 30);
    env.write("index.html", "<h1>v3</h1>\n");
    let _ = push_keeping(&env, "v3", Some(&v1));

    // Green keeps v2. Its files share inodes with the live release, so an edit in place would
    // change both; an editor writes a new file and renames it over the old one.
    let edited = env.target.join("green/pages/003/page-3.html");
    let temp = env.target.join("green/pages/003/.page-3.html.swp");
    fs::write(&temp, "<p>PAGE 3</p>\n").unwrap();
    fs::rename(&temp, &edited).unwrap();
    env.write("index.html", "<h1>v4</h1>\n");
    let (v4, push) = push_keeping(&env, "v4", None);
    // The rename changed the directory too, which comes first in tree order.
    let line = "pushdeploy: the release kept in green is not reused: pages/003 was changed since \
                it was deployed; writing the whole tree";
    assert!(push.pushdeploy_lines().contains(&line.to_owned()), "{push}");

    // Blue keeps v3, but the file the edit replaced in green shared its inode with blue's:
    // its ctime moved, so the route is not asserted. Green keeps v4, written by the full route
    // and untouched since: the diff route again.
    env.write("index.html", "<h1>v5</h1>\n");
    let _ = push_keeping(&env, "v5", None);
    env.write("index.html", "<h1>v6</h1>\n");
    let _ = push_keeping(&env, "v6", Some(&v4));

    // A file added by hand to the release blue keeps (v5).
    fs::write(env.target.join("blue/pages/002/added-by-hand.html"), "hand\n").unwrap();
    env.write("index.html", "<h1>v7</h1>\n");
    let (_, push) = push_keeping(&env, "v7", None);
    let line = "pushdeploy: the release kept in blue is not reused: pages/002 was changed since \
                it was deployed; writing the whole tree";
    assert!(push.pushdeploy_lines().contains(&line.to_owned()), "{push}");
}

/// Regression guard: the kept release's entries are looked up from their directory, opened
/// once per directory, so a directory swapped for a symlink to a copy of itself (the same
/// inodes under it) must still be caught, and never looked through.
#[test]
fn a_directory_of_the_kept_release_swapped_for_a_symlink_forces_the_full_route() {
    let (env, _, _) = kept_v1_live_v2(4, 30);
    // Blue keeps v1: its pages/001 moves aside, a symlink takes its place.
    let pages = env.target.join("blue/pages");
    fs::rename(pages.join("001"), pages.join(".moved-001")).unwrap();
    std::os::unix::fs::symlink(".moved-001", pages.join("001")).unwrap();
    env.write("index.html", "<h1>v3</h1>\n");
    let (_, push) = push_keeping(&env, "v3", None);
    let line = "pushdeploy: the release kept in blue is not reused: pages was changed since it \
                was deployed; writing the whole tree";
    assert!(push.pushdeploy_lines().contains(&line.to_owned()), "{push}");
}

#[test]
fn sigkill_while_applying_a_diff_leaves_the_live_release_and_the_next_deploy_right() {
    let (env, _, _) = kept_v1_live_v2(40, 50);
    let live = env.live_site();

    // v3 changes every page: blue (which keeps v1) gets 2,001 files rewritten.
    for dir in 0..40 {
        for page in 0..50 {
            env.write(format!("pages/{dir:03}/page-{page}.html"), format!("<p>v3 {page}</p>\n"));
        }
    }
    let v3 = env.commit_all("v3");
    // Its objects reach the repository through a branch that does not deploy.
    let _ = env.push_ref("HEAD:refs/heads/staging");
    let mut deploy = deploy_cmd(&env, &v3).spawn();
    // Its index goes just before the diff is applied: kill the deploy then.
    let index = env.target.join(".pushdeploy/releases/blue.index");
    let deadline = Instant::now() + Duration::from_secs(60);
    while index.exists() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    let _ = deploy.kill();
    let _ = deploy.wait();

    assert_eq!(env.link_target(), live.link_target, "the link moved");
    assert_trees_equal(&live.tree, &env.snapshot_tree(env.live_dir()));
    let blue = env.snapshot_tree(env.target.join("blue"));
    let rewritten = blue
        .iter()
        .filter(|(_, entry)| matches!(entry, Entry::File { contents, .. } if contents.starts_with(b"<p>v3")))
        .count();
    assert!(rewritten < 2000, "killed before the diff was applied whole: {rewritten} rewritten");

    let push = env.push();
    push.assert_live(&v3, "refs/heads/main", "blue");
    let line = "pushdeploy: the release kept in blue is not reused: it has no record (a deploy \
                into it was interrupted); writing the whole tree";
    assert!(push.pushdeploy_lines().contains(&line.to_owned()), "{push}");
    env.assert_live_equals_archive(&v3);
    assert_trees_equal(&live.tree, &env.snapshot_tree(env.target.join("green")));
}

#[test]
fn after_a_rollback_with_keep_previous_the_next_deploy_takes_the_diff_route() {
    let (env, _, v2) = kept_v1_live_v2(4, 30);
    env.write("index.html", "<h1>v3</h1>\n");
    let (v3, _) = push_keeping(&env, "v3", None);

    // Back to v2 (green), instantly; blue keeps v3.
    let back = env.pushdeploy().args(["rollback", "--repo"]).arg(&env.bare).success();
    back.assert_live(&v2, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v2);

    // The next deploy brings v3 to v4 in blue: a few files, not the whole tree.
    env.write("index.html", "<h1>v4</h1>\n");
    env.write("pages/001/page-1.html", "<p>v4</p>\n");
    let (_, push) = push_keeping(&env, "v4", Some(&v3));
    let line = diff_route(&v3, "blue") + "wrote 2 files, removed 0";
    assert!(push.pushdeploy_lines().iter().any(|l| l.starts_with(&line)), "{push}");
}

/// Regression: the diff route no longer reads the kept release's commit tree, so an index
/// that does not stand for that tree (here: `export-ignore` left a file out) must not be
/// diffed, or the file would stay missing once the rule is gone.
#[test]
fn a_release_written_with_gitattributes_rules_is_not_diffed() {
    let env = TestEnv::new();
    env.init(&[]);
    keep_previous(&env);
    write_pages(&env, 2, 10, "v1");
    env.write("secret.txt", "left out of the release\n");
    env.write(".gitattributes", "secret.txt export-ignore\n");
    let _ = push_keeping(&env, "v1", None);
    env.write("index.html", "<h1>v2</h1>\n");
    let _ = push_keeping(&env, "v2", None);

    // v3 drops the rule: blue keeps v1, written without secret.txt.
    env.remove(".gitattributes");
    env.write("index.html", "<h1>v3</h1>\n");
    let (v3, push) = push_keeping(&env, "v3", None);
    let line = "pushdeploy: the release kept in blue is not reused: its index does not say the \
                release is exactly its commit (written by an earlier pushdeploy, or with \
                `.gitattributes` rules or submodules); writing the whole tree";
    assert!(push.pushdeploy_lines().contains(&line.to_owned()), "{push}");
    assert!(env.live_dir().join("secret.txt").is_file(), "{push}");

    // v3's own release is exact again: the next deploy after it diffs it.
    env.write("index.html", "<h1>v4</h1>\n");
    let _ = push_keeping(&env, "v4", None);
    env.write("index.html", "<h1>v5</h1>\n");
    let _ = push_keeping(&env, "v5", Some(&v3));
}
