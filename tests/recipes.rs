//! The README's recipes for builds that install dependencies, run for real: npm (`npm ci`,
//! a Vite site from the npm registry) and pip (MkDocs from PyPI in a venv kept in the build
//! cache). Each deploys more than once, so the second deploy runs on what the first cached,
//! in the other slot.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::site::config_with;
use crate::support::{Output, TestEnv};
use crate::templates::read_live;

/// README's npm recipe, verbatim.
const NPM_RECIPE: &str = r#"[build]
command = "npm ci --prefer-offline --no-audit --no-fund && npm run build"
publish = "dist"

[build.env]
PATH = "/usr/local/bin:/usr/bin:/bin"
"#;

/// README's pip recipe, verbatim.
const PIP_RECIPE: &str = r#"[build]
command = """
{ .venv/bin/python -c '' 2>/dev/null || python3 -m venv --clear .venv; } &&
.venv/bin/python -m pip install --quiet --requirement requirements.txt &&
.venv/bin/python -m mkdocs build --strict
"""
publish = "site"
cache = [".venv"]

[build.env]
PATH = "/usr/local/bin:/usr/bin:/bin"
"#;

/// The `PATH` both recipes give the build, as a hook started by `sshd` would have it.
const RECIPE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A small Vite 6 site with its lock file (Vite 6 runs on Debian 12's Node 18 as well as on
/// Node 20 and 22; Vite 7 needs Node 20.19).
const VITE_SITE: [(&str, &str); 5] = [
    ("package.json", include_str!("support/recipes/vite/package.json")),
    ("package-lock.json", include_str!("support/recipes/vite/package-lock.json")),
    ("index.html", include_str!("support/recipes/vite/index.html")),
    ("src/main.js", include_str!("support/recipes/vite/src/main.js")),
    ("src/style.css", include_str!("support/recipes/vite/src/style.css")),
];

/// A MkDocs site whose `requirements.txt` pins MkDocs and everything it pulls in.
const MKDOCS_SITE: [(&str, &str); 3] = [
    ("requirements.txt", include_str!("support/recipes/mkdocs/requirements.txt")),
    ("mkdocs.yml", include_str!("support/recipes/mkdocs/mkdocs.yml")),
    ("docs/index.md", include_str!("support/recipes/mkdocs/docs/index.md")),
];

/// Says whether `program args` runs with the recipes' `PATH`. A missing tool fails the test
/// when `CI` is set (`.ci/run` installs it, so a skip there would hide a broken setup);
/// elsewhere the test prints a notice and skips.
#[track_caller]
fn tool_runs(program: &str, args: &[&str], install: &str) -> bool {
    let runs = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{program} {}", args.join(" ")))
        .env("PATH", RECIPE_PATH)
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        let missing = format!("`{program}` does not run with PATH={RECIPE_PATH} ({install})");
        assert!(std::env::var_os("CI").is_none(), "{missing}, and CI is set");
        eprintln!("notice: skipping: {missing}");
    }
    runs
}

/// Asserts README.md holds `recipe` verbatim, so the recipe users copy is the one tested.
#[track_caller]
fn assert_in_readme(recipe: &str) {
    let readme = include_str!("../README.md");
    assert!(readme.contains(recipe), "README.md lacks this recipe verbatim:\n{recipe}");
}

/// Pushes `main` and returns the output and the push's wall time in seconds.
#[track_caller]
fn timed_push(env: &TestEnv) -> (Output, f64) {
    let start = Instant::now();
    let push = env.push();
    (push, start.elapsed().as_secs_f64())
}

/// Returns the build's duration as pushdeploy reported it (`pushdeploy: built in 0.41 s`).
#[track_caller]
fn build_seconds(push: &Output) -> f64 {
    let lines = push.pushdeploy_lines();
    let built = lines.iter().find_map(|line| line.strip_prefix("pushdeploy: built in "));
    let seconds = built.and_then(|rest| rest.strip_suffix(" s")).and_then(|s| s.parse().ok());
    seconds.unwrap_or_else(|| panic!("no `built in` line\n{push}"))
}

/// Returns the contents of the one file in the live `assets/` whose name ends with `suffix`.
#[track_caller]
fn live_asset(env: &TestEnv, suffix: &str) -> String {
    let assets = env.live_dir().join("assets");
    let found: Vec<_> = fs::read_dir(&assets)
        .unwrap_or_else(|e| panic!("read {}: {e}", assets.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "not one *{suffix} in {}: {found:?}", assets.display());
    fs::read_to_string(&found[0]).expect("read the asset")
}

/// Asserts the build left nothing in the git user's home: the tools' caches are the target's.
#[track_caller]
fn assert_home_untouched(env: &TestEnv) {
    let home = env.root.join("home");
    let left: Vec<_> = fs::read_dir(&home).expect("read HOME").flatten().collect();
    assert!(left.is_empty(), "the build wrote into the git user's home: {left:?}");
}

/// Asserts the target's cache directory of `tool` holds something.
#[track_caller]
fn assert_tool_cache_filled(env: &TestEnv, tool: &str) {
    let dir = env.target.join(".pushdeploy/tool-cache").join(tool);
    let entries = fs::read_dir(&dir).map(|dir| dir.count()).unwrap_or(0);
    assert!(entries > 0, "{} is empty: the build did not use it", dir.display());
}

// `cache = ["node_modules"]` did nothing for a Vite site (`npm ci` deletes node_modules), and
// npm kept its downloads in the git user's home. The recipe keeps npm's cache in the target
// (`npm_config_cache`), and the second deploy runs with npm offline to prove it is enough.
#[test]
fn npm_recipe_builds_a_vite_site_and_the_second_deploy_runs_from_the_targets_npm_cache() {
    if !tool_runs("npm", &["--version"], "apt-get install nodejs npm") {
        return;
    }
    assert_in_readme(NPM_RECIPE);
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, NPM_RECIPE));
    for (path, text) in VITE_SITE {
        env.write(path, text);
    }
    env.write("src/message.js", "export const message = 'Hello from the first commit';\n");
    let first = env.commit_all("a Vite site");

    let (push, first_secs) = timed_push(&env);

    push.assert_live(&first, "refs/heads/main", "blue");
    let page = read_live(&env, "index.html");
    assert!(page.contains("<script type=\"module\" crossorigin src=\"/assets/index-"), "{page}");
    assert!(live_asset(&env, ".js").contains("Hello from the first commit"));
    assert!(live_asset(&env, ".css").contains("#0a5c36"));
    assert_tool_cache_filled(&env, "npm");
    let first_build = build_seconds(&push);

    // Offline, npm fails on anything its cache lacks.
    env.write_config(&config_with(&env, &format!("{NPM_RECIPE}npm_config_offline = \"true\"\n")));
    env.write("src/message.js", "export const message = 'Hello from the second commit';\n");
    let second = env.commit_all("second message");

    let (push, second_secs) = timed_push(&env);

    push.assert_live(&second, "refs/heads/main", "green");
    assert!(live_asset(&env, ".js").contains("Hello from the second commit"));
    assert!(!env.live_dir().join("node_modules").exists(), "node_modules is served");
    assert_home_untouched(&env);
    eprintln!(
        "recipe timing: npm/Vite: first deploy {first_secs:.2} s (build {first_build:.2} s), \
         second, from npm's cache {second_secs:.2} s (build {:.2} s)",
        build_seconds(&push)
    );
}

/// Returns the inode of the cached venv's `pyvenv.cfg`: the same one after a deploy means the
/// deploy reused the venv rather than making a new one.
#[track_caller]
fn cached_venv_inode(env: &TestEnv) -> u64 {
    let cfg = env.target.join(".pushdeploy/cache/.venv/pyvenv.cfg");
    fs::symlink_metadata(&cfg).unwrap_or_else(|e| panic!("{}: {e}", cfg.display())).ino()
}

/// Asserts the live site is MkDocs' build of `docs/index.md` saying `text`.
#[track_caller]
fn assert_mkdocs_live(env: &TestEnv, text: &str) {
    let page = read_live(env, "index.html");
    assert!(page.contains("MkDocs version : 1.6.1"), "{page}");
    assert!(page.contains(&format!("<p>{text}</p>")), "not {text:?}:\n{page}");
    assert!(Path::new(&env.live_dir().join("search/search_index.json")).is_file());
}

// A venv cached with `cache = [".venv"]` broke every other deploy: its scripts start with
// `#!TARGET/blue/.venv/bin/python`, and the next build runs in green. The recipe runs only
// `.venv/bin/python -m ...`, which finds its venv from where it is, in either slot.
#[test]
fn pip_recipe_builds_mkdocs_in_a_venv_that_survives_switching_slots() {
    if !tool_runs("python3", &["-m", "venv", "--help"], "apt-get install python3 python3-venv") {
        return;
    }
    assert_in_readme(PIP_RECIPE);
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, PIP_RECIPE));
    for (path, text) in MKDOCS_SITE {
        env.write(path, text);
    }
    let mut times = Vec::new();
    let mut venv = None;
    for (round, slot) in ["blue", "green", "blue"].into_iter().enumerate() {
        let text = format!("Deploy number {}.", round + 1);
        env.write("docs/index.md", format!("# The MkDocs recipe\n\n{text}\n"));
        let commit = env.commit_all(&text);

        let (push, secs) = timed_push(&env);

        push.assert_live(&commit, "refs/heads/main", slot);
        assert_mkdocs_live(&env, &text);
        assert!(!env.live_dir().join(".venv").exists(), "the venv is served");
        let inode = cached_venv_inode(&env);
        assert!(venv.is_none_or(|kept| kept == inode), "deploy {} made a new venv", round + 1);
        venv = Some(inode);
        times.push(format!("{secs:.2} s (build {:.2} s)", build_seconds(&push)));
    }
    assert_home_untouched(&env);
    eprintln!("recipe timing: pip/MkDocs: deploys into blue, green, blue: {}", times.join(", "));
}

// The pip recipe's command has several lines (a TOML `"""` string). When such a build failed,
// the line that ends the deploy stopped at the command's first newline, and the rest of it, the
// exit status and the hint came on lines of their own.
#[test]
fn failing_build_command_of_several_lines_ends_the_deploy_with_one_line() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&config_with(&env, "[build]\ncommand = \"\"\"\ntrue &&\nfalse\n\"\"\"\n"));
    env.write("index.html", "v1\n");
    let _ = env.commit_all("v1");

    let push = env.push();

    let line = push.assert_failed_at("build");
    let expected = "pushdeploy: failed at build: `true &&\\nfalse\\n` exited with status 1; \
                    the live site is unchanged";
    assert!(line.starts_with(expected), "{line:?}\n{push}");
}
