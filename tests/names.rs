//! Shell syntax and control characters in ref names, messages and paths: shown escaped, never run.

use std::fs;

use crate::support::site::deploy_cmd;
use crate::support::target::{names, refusal};
use crate::support::{LINK, TestEnv, toml_str};

/// Asserts `text` holds no control character but newlines: a raw ESC, BEL or CR reaching the
/// pusher's terminal could recolour, retitle or overwrite what they read.
#[track_caller]
fn assert_no_raw_control_characters(text: &str) {
    let raw: Vec<(usize, char)> =
        text.char_indices().filter(|(_, c)| c.is_control() && *c != '\n').collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{text:?}");
}

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
