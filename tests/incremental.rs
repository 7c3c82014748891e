//! Incremental deploys: files unchanged since the live release are hard-linked from it, and
//! the result must still be exactly `git archive` of the commit, whatever happened in between.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Output, TestEnv};

/// Enough files that the parallel writers are used.
const FILES: usize = 120;

fn write_site(env: &TestEnv) {
    for i in 0..FILES {
        env.write(format!("pages/{:02}/page-{i}.html", i % 10), format!("<p>page {i}</p>\n"));
    }
    env.write("index.html", "<h1>home</h1>\n");
    env.write("about.html", "<p>about</p>\n");
    env.write_exec("bin/tool.sh", "#!/bin/sh\necho tool\n");
}

/// Pushes, asserts the live release equals the commit's archive, and returns the push output.
#[track_caller]
fn push_and_check(env: &TestEnv, message: &str) -> Output {
    let commit = env.commit_all(message);
    let push = env.push();
    let slot = env.idle_slot();
    push.assert_live(&commit, "refs/heads/main", if slot == "blue" { "green" } else { "blue" });
    env.assert_live_equals_archive(&commit);
    env.assert_no_idle_slot();
    push
}

/// Returns how many files the deploy says it hard-linked.
#[track_caller]
fn linked(push: &Output) -> usize {
    let line = push
        .pushdeploy_lines()
        .into_iter()
        .find(|line| line.starts_with("pushdeploy: wrote "))
        .unwrap_or_else(|| panic!("no `wrote` line\n{push}"));
    line.split(" and hard-linked ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map_or(0, |n| n.replace(',', "").parse().expect("a count"))
}

/// One change to the work clone.
type Step = Box<dyn Fn(&TestEnv)>;

#[test]
fn incremental_deploys_equal_git_archive_through_every_kind_of_change() {
    let env = TestEnv::new();
    env.init(&[]);
    write_site(&env);
    env.write("dir-becomes-file/inner.html", "inner\n");
    env.write("file-becomes-dir", "a file\n");
    env.write("becomes-link.html", "a file for now\n");
    let first = push_and_check(&env, "first");
    assert_eq!(linked(&first), 0, "nothing to link from on the first deploy\n{first}");

    let steps: Vec<(&str, Step)> = vec![
        (
            "modify and add",
            Box::new(|env| {
                env.write("index.html", "<h1>home, changed</h1>\n");
                env.write("new.html", "new\n");
            }),
        ),
        (
            "delete and rename",
            Box::new(|env| {
                env.remove("about.html");
                let _ = env
                    .git()
                    .args(["mv", "pages/00/page-0.html", "pages/00/renamed.html"])
                    .success();
            }),
        ),
        (
            "file to symlink",
            Box::new(|env| {
                env.remove("becomes-link.html");
                env.symlink("becomes-link.html", "index.html");
            }),
        ),
        (
            "symlink back to file",
            Box::new(|env| {
                env.remove("becomes-link.html");
                env.write("becomes-link.html", "a file again\n");
            }),
        ),
        (
            "executable bit on",
            Box::new(|env| {
                let path = env.work.join("pages/01/page-1.html");
                fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
            }),
        ),
        (
            "executable bit off",
            Box::new(|env| {
                let path = env.work.join("pages/01/page-1.html");
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
    ];
    for (name, change) in steps {
        change(&env);
        let push = push_and_check(&env, name);
        // Everything but the few changed paths comes from the live release.
        assert!(linked(&push) >= FILES - 2, "step {name:?} wrote what it could link\n{push}");
    }
}

#[test]
fn hand_edits_in_the_live_release_are_not_carried_into_the_next() {
    let env = TestEnv::new();
    env.init(&[]);
    write_site(&env);
    let _ = push_and_check(&env, "first");
    env.write("new.html", "second\n");
    let _ = push_and_check(&env, "second"); // the live release now shares inodes with nothing

    let live = env.live_dir();
    // An edit that changes the size.
    fs::write(live.join("index.html"), "<h1>defaced</h1> and longer\n").unwrap();
    // An edit that keeps the size and puts the old mtime back: only ctime can tell.
    let same_size = live.join("pages/03/page-3.html");
    let mtime = fs::metadata(&same_size).unwrap().modified().unwrap();
    fs::write(&same_size, "<p>PAGE 3</p>\n").unwrap();
    let file = fs::File::options().write(true).open(&same_size).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    // A mode change alone.
    fs::set_permissions(live.join("about.html"), fs::Permissions::from_mode(0o600)).unwrap();

    env.write("new.html", "third\n");
    let push = push_and_check(&env, "third");
    assert!(linked(&push) >= FILES - 3, "untouched files were still linked\n{push}");
}

#[test]
fn a_build_writing_into_files_never_changes_the_live_release() {
    let env = TestEnv::new();
    env.init(&[]);
    write_site(&env);
    // Deployed without a build, so the live release has an index and could lend its inodes.
    let _ = push_and_check(&env, "first");
    let before = env.live_site();

    env.write_config(&format!(
        "{}\n[build]\ncommand = 'echo appended >> index.html; : > about.html; \
         chmod 777 bin/tool.sh; exit 1'\n",
        env.base_config()
    ));
    env.write("new.html", "second\n");
    env.commit_all("second");
    let push = env.push();

    push.assert_failed_at("build");
    env.assert_live_unchanged(&before);
    // The same, spelled out for the file the build appended to.
    let index = fs::read_to_string(env.live_dir().join("index.html")).unwrap();
    assert_eq!(index, "<h1>home</h1>\n");
}

/// Returns the paths of the files the live release's index lists.
fn indexed_files(env: &TestEnv) -> Vec<String> {
    let index = env.target.join(format!(".pushdeploy/releases/{}.index", env.live_slot()));
    let bytes = fs::read(&index).unwrap_or_else(|e| panic!("read {}: {e}", index.display()));
    let body = &bytes[bytes.iter().position(|&b| b == b'\n').expect("a header") + 1..];
    let mut files: Vec<String> = body
        .split(|&b| b == 0)
        .filter(|record| !record.is_empty() && !record.starts_with(b"- "))
        .map(|record| {
            String::from_utf8_lossy(record.splitn(7, |&b| b == b' ').nth(6).expect("a path")).into()
        })
        .collect();
    files.sort();
    files
}

/// Returns the paths of the regular files of the live release.
fn live_files(env: &TestEnv) -> Vec<String> {
    let live = env.live_dir();
    let mut files: Vec<String> = walkdir::WalkDir::new(&live)
        .into_iter()
        .map(|entry| entry.expect("walk the live release"))
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            entry
                .path()
                .strip_prefix(&live)
                .expect("under the release")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_linked_switch_indexes_exactly_its_own_files() {
    // The new index is built from the live release's: files the commit removed must leave it.
    let env = TestEnv::new();
    env.init(&[]);
    write_site(&env);
    let _ = push_and_check(&env, "first");
    assert_eq!(indexed_files(&env), live_files(&env));
    env.remove("about.html");
    env.remove("pages/03/page-3.html");
    env.write("index.html", "<h1>home, again</h1>\n");
    env.write("new.html", "<p>new</p>\n");
    let second = push_and_check(&env, "second");
    assert_eq!(linked(&second), FILES + 1 - 1, "{second}");
    assert_eq!(indexed_files(&env), live_files(&env));
}
