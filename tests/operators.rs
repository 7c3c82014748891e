//! What a pusher who is stuck is told: a push of the wrong branch, a misspelt deploy branch,
//! a build command that is not installed; and what `doctor` says about the last two.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::site::{build_table, commit_version, config_with};
use crate::support::{TestEnv, short, toml_str};

/// Runs `pushdeploy doctor --repo BARE`; returns its exit code and lines, the temp dir `$TMP`.
#[track_caller]
fn doctor(env: &TestEnv) -> (Option<i32>, Vec<String>) {
    let output = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).output();
    let root = env.root.to_string_lossy();
    let lines = output.stdout.lines().map(|line| line.replace(&*root, "$TMP")).collect();
    (output.code(), lines)
}

#[test]
fn push_of_another_branch_says_the_command_that_deploys_it() {
    let (env, _, before) = TestEnv::with_live_site();
    let _ = env.git().args(["switch", "--quiet", "-c", "master"]).success();
    let master = commit_version(&env, "on master");

    let push = env.push_ref("master");

    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: ignored refs/heads/master: only pushes to the branch \"main\" deploy",
            "pushdeploy: hint: to deploy it, push it as main: git push <remote> master:main, \
             or set branch = \"master\" in $TMP/site.git/pushdeploy.toml",
        ],
        "{push}"
    );
    env.assert_live_unchanged(&before);

    // The command works as said (the remote of this clone is `origin`).
    env.push_ref("master:main").assert_live(&master, "refs/heads/main", "green");

    // Two other branches, or a tag: no single command to give.
    let _ = env.git().args(["branch", "second"]).success();
    let _ = env.git().args(["tag", "v1"]).success();
    let before = env.live_site();
    for refspecs in [&["HEAD:refs/heads/third", "second"][..], &["v1"]] {
        let push = env.git().args(["push", "origin"]).args(refspecs).success();
        let lines = push.pushdeploy_lines();
        assert!(lines.iter().all(|line| line.starts_with("pushdeploy: ignored ")), "{push}");
        assert_eq!(lines.len(), refspecs.len(), "{push}");
    }
    env.assert_live_unchanged(&before);
}

#[test]
fn misspelt_deploy_branch_is_named_at_the_push_and_by_doctor() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&env.base_config().replace("branch = \"main\"", "branch = \"mian\""));
    let v1 = commit_version(&env, "v1");

    let push = env.push();

    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: ignored refs/heads/main: only pushes to the branch \"mian\" deploy",
            "pushdeploy: hint: the deploy branch \"mian\" does not exist in $TMP/site.git: \
             check branch = in pushdeploy.toml, or push main as mian: git push <remote> main:mian",
        ],
        "{push}"
    );
    assert!(!env.link_path().exists(), "an ignored push deployed");
    // Of two branches, the hint names the missing one alone.
    let push =
        env.git().args(["push", "origin", "HEAD:refs/heads/a", "HEAD:refs/heads/b"]).success();
    assert_eq!(
        push.final_line(),
        "pushdeploy: hint: the deploy branch \"mian\" does not exist in $TMP/site.git: \
         check branch = in pushdeploy.toml",
        "{push}"
    );

    // init, run again with the typo on the command line, warns too (the config it would
    // write differs: --force).
    let init = env.init_cmd(&["--branch", "mian", "--force"]).success();
    let warning = "pushdeploy: warning: the branch \"mian\" does not exist in $TMP/site.git/, which has other branches: pushes of those are ignored; check --branch (or branch = in pushdeploy.toml)";
    assert!(init.normalized_stderr().lines().any(|line| line == warning), "{init}");

    let (code, lines) = doctor(&env);
    assert_eq!(code, Some(3), "{lines:#?}");
    let problem = "problem  the deploy branch \"mian\" does not exist in $TMP/site.git, so every \
                   push is ignored; check branch = in $TMP/site.git/pushdeploy.toml";
    assert!(lines.iter().any(|line| line == problem), "{lines:#?}");

    // Fixed: doctor says the branch exists, and the next push deploys.
    env.write_config(&env.base_config());
    let (_, lines) = doctor(&env);
    assert!(
        lines.iter().any(|line| line == "ok       the deploy branch \"main\" exists"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|line| line.contains("does not exist")), "{lines:#?}");
    let _ = env.git().args(["commit", "--quiet", "--allow-empty", "-m", "v2"]).success();
    let v2 = env.rev_parse("HEAD");
    env.push().assert_live(&v2, "refs/heads/main", "blue");
    assert_ne!(v1, v2);
}

#[test]
fn build_command_not_found_says_check_path_and_doctor_names_it() {
    let (env, v1, before) = TestEnv::with_live_site();
    let tools = env.root.join("tools");
    let config = |path: &str| {
        let env_table = format!("[build.env]\nPATH = {}\n", toml_str(path));
        config_with(&env, &format!("{}{env_table}", build_table("sitegen --minify")))
    };
    env.write_config(&config("/usr/bin:/bin"));
    commit_version(&env, "v2");

    let push = env.push();

    let expected = format!(
        "pushdeploy: failed at build: `sitegen --minify` exited with status 127; the live site is \
         unchanged (blue, {}); fix the build and push again (its output is above); status 127 \
         means a command was not found: check PATH in [build.env] of \
         $TMP/site.git/pushdeploy.toml (the hook's PATH is /usr/bin:/bin)",
        short(&v1)
    );
    assert_eq!(push.final_line(), expected, "{push}");
    assert!(push.stderr.contains("not found"), "the shell's own message is kept\n{push}");
    env.assert_live_unchanged(&before);

    let (code, lines) = doctor(&env);
    assert_eq!(code, Some(3), "{lines:#?}");
    let problem = "problem  the build command's program `sitegen` is not found in the build's \
                   PATH (/usr/bin:/bin); install it, or set PATH in [build.env] of \
                   $TMP/site.git/pushdeploy.toml to include its directory";
    assert!(lines.iter().any(|line| line == problem), "{lines:#?}");

    // Installed where [build.env] PATH looks: doctor finds it and the build runs it.
    fs::create_dir(&tools).expect("create tools dir");
    let tool = tools.join("sitegen");
    fs::write(&tool, "#!/bin/sh\necho built > built.txt\n").expect("write tool");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod tool");
    env.write_config(&config(&format!("{}:/usr/bin:/bin", tools.display())));
    let (code, lines) = doctor(&env);
    let found = "ok       the build runs $TMP/tools/sitegen";
    assert!(lines.iter().any(|line| line == found), "{lines:#?}");
    assert!(!lines.iter().any(|line| line.contains("sitegen` is not found")), "{lines:#?}");
    assert_eq!(code, Some(0), "{lines:#?}");
    let v3 = commit_version(&env, "v3");
    env.push().assert_live(&v3, "refs/heads/main", "green");
    assert_eq!(
        fs::read_to_string(env.link_path().join("built.txt")).ok().as_deref(),
        Some("built\n")
    );
}
