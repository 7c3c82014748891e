//! What scripts and shells read: `status --json`, the badge of the last deploy, shell
//! completions and the man page generated from the command line's own definitions.

use std::fs;

use serde_json::Value;

use crate::support::site::{
    BUILD_FAILS_ON_MARKER, build_table, commit_failing_version, commit_version, config_with, push,
};
use crate::support::{TestEnv, short};

#[test]
fn status_json_and_badge_follow_the_last_deploy() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, &build_table(BUILD_FAILS_ON_MARKER)));
    let badge = || env.pushdeploy().args(["badge", "--repo"]).arg(&env.bare).success().stdout;
    assert!(badge().contains("<title>deploy: no deploys</title>"), "{}", badge());
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");

    let status = env.pushdeploy().args(["status", "--json", "--repo"]).arg(&env.bare).success();
    let json: Value = serde_json::from_str(&status.stdout).expect("status --json prints JSON");
    assert_eq!(json["slot"], "blue");
    assert_eq!(json["commit"], a.as_str());
    assert_eq!(json["ref"], "refs/heads/main");
    assert_eq!(json["path"], env.target.join("blue").to_string_lossy().as_ref());
    let live = badge();
    assert!(live.contains(&format!("<title>deploy: live {}</title>", short(&a))), "{live}");
    assert!(live.contains("fill=\"#4c1\""), "{live}");

    let b = commit_failing_version(&env, "b");
    push(&env, &[]).assert_failed_at("build");
    // An ignored push does not change it.
    let _ = env.git().args(["push", "origin", "main:other"]).success();
    let failed = badge();
    assert!(failed.contains(&format!("<title>deploy: failed {}</title>", short(&b))), "{failed}");
    assert!(failed.contains("fill=\"#e05d44\""), "{failed}");
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let env = TestEnv::new();
    let script = env.root.join("pushdeploy.bash");
    let generated = env.pushdeploy().args(["completions", "bash"]).success();
    fs::write(&script, &generated.stdout).expect("write the completion script");
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
             COMP_POINT=${{#COMP_LINE}}; \
             _pushdeploy pushdeploy \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        env.command("bash").arg("-c").arg(program).success().stdout
    };

    assert_eq!(complete("pushdeploy sh", 1), "show\n");
    assert_eq!(complete("pushdeploy co", 1), "completions\n");
    let flags = complete("pushdeploy log --", 2);
    for flag in ["--repo", "--json", "--max-count", "--full"] {
        assert!(flags.lines().any(|line| line == flag), "{flag} is not offered: {flags}");
    }
    for shell in ["zsh", "fish"] {
        let script = env.pushdeploy().args(["completions", shell]).success().stdout;
        assert!(script.contains("show") && script.contains("rollback"), "{shell}: {script}");
    }
}

#[test]
fn man_page_renders_with_man() {
    let env = TestEnv::new();
    let page = env.root.join("pushdeploy.1");
    let roff = env.pushdeploy().arg("man").success();
    fs::write(&page, &roff.stdout).expect("write the man page");
    assert!(roff.stdout.contains(".TH pushdeploy 1"), "{roff}");

    let rendered = env
        .command("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .success();

    let text = rendered.stdout;
    assert!(text.contains("pushdeploy - Zero-downtime deploys of a site on `git push`"), "{text}");
    for command in ["pushdeploy-show(1)", "pushdeploy-log(1)", "pushdeploy-completions(1)"] {
        assert!(text.contains(command), "{command} is not listed:\n{text}");
    }
}
