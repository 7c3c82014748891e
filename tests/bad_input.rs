//! Bad input: broken config, missing or read-only target, odd commits, submodules and LFS pointers.

use std::collections::BTreeSet;
use std::fs;

use crate::support::disk::SmallDisk;
use crate::support::target::{names, set};
use crate::support::{LINK, TestEnv, short, toml_str};

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
             `cache`, `env`, `git_history`, `allow_no_index` (in `comand = \"make\"`)",
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
        // The failure cannot be recorded where it happened, and the pusher is told so.
        "pushdeploy: warning: this failure is not in the history: cannot write \
         $TMP/ro/www/.pushdeploy/history.jsonl: Read-only file system (os error 30)",
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
         is empty, as `git archive` makes it; to deploy its files, give it a section in \
         .gitmodules and leave `submodules = \"fetch\"` (the default) in pushdeploy.toml, or \
         vendor them into the repository",
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
