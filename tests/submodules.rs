//! Submodules: a gitlink that `.gitmodules` names deploys at its pinned commit, fetched from
//! its URL into a per-site cache; `submodules = "skip"` deploys it as `git archive` does.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::site::{build_table, config_with};
use crate::support::templates::in_path;
use crate::support::{Output, TestEnv};

/// Where the site's theme goes, as Hugo's quick start puts it.
const THEME_PATH: &str = "themes/mini";

/// Returns whether a test needing Hugo can run (see `templates.rs`: a missing Hugo fails under
/// CI, which installs it).
#[track_caller]
fn require_hugo() -> bool {
    if in_path("hugo") {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "hugo is not installed, and CI is set");
    eprintln!("notice: skipping: hugo is not installed");
    false
}

/// Makes a repository `name` in the temp dir holding `files`, commits them; returns its path
/// and the commit.
#[track_caller]
fn make_repo(env: &TestEnv, name: &str, files: &[(&str, &str)]) -> (PathBuf, String) {
    let dir = env.root.join(name);
    let _ = env.git_in(&env.root).args(["init", "--quiet"]).arg(&dir).success();
    let commit = commit_files(env, &dir, files, "theme");
    (dir, commit)
}

/// Writes `files` into the repository at `dir` and commits everything; returns the commit.
#[track_caller]
fn commit_files(env: &TestEnv, dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, contents) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        fs::write(&path, contents).expect("write a repository file");
    }
    let _ = env.git_in(dir).args(["add", "--all"]).success();
    let _ = env.git_in(dir).args(["commit", "--quiet", "--allow-empty", "-m", message]).success();
    env.git_in(dir).args(["rev-parse", "HEAD"]).success().stdout.trim().to_owned()
}

/// Returns a Hugo theme's files: a home page layout that says `version`.
fn theme_files(version: &str) -> Vec<(&'static str, String)> {
    let home = format!("<h1>{{{{ .Site.Title }}}}</h1><p>theme {version}</p>\n");
    vec![("layouts/index.html", home), ("theme.toml", "name = \"mini\"\n".to_owned())]
}

/// Stages a gitlink at `path` pinned at `commit` in the work clone, and its `.gitmodules`
/// section `[submodule "NAME"]` with `url`, the way `git submodule add` records them (written
/// directly, so a test can record what `git submodule add` would refuse).
#[track_caller]
fn add_gitlink(env: &TestEnv, name: &str, path: &str, url: &str, commit: &str) {
    let gitmodules = env.work.join(".gitmodules");
    for (key, value) in [("path", path), ("url", url)] {
        let key = format!("submodule.{name}.{key}");
        let _ = env.git().args(["config", "--file"]).arg(&gitmodules).args([&key, value]).success();
    }
    let cacheinfo = format!("160000,{commit},{path}");
    let _ = env.git().args(["update-index", "--add", "--cacheinfo", &cacheinfo]).success();
    // An empty directory is a submodule that is not checked out; without it `git add --all`
    // would stage the gitlink's removal.
    fs::create_dir_all(env.work.join(path)).expect("create the submodule's directory");
}

/// Inits the site with `config_extra`, pins the theme repository at `theme` (URL `url`) and
/// pushes it with `site`'s files; returns the push and the commit.
#[track_caller]
fn push_site(env: &TestEnv, url: &str, theme: &str, site: &[(&str, &str)]) -> (Output, String) {
    add_gitlink(env, THEME_PATH, THEME_PATH, url, theme);
    for (path, contents) in site {
        env.write(path, contents);
    }
    let commit = env.commit_all("site");
    (env.push(), commit)
}

/// The Hugo site's own files: its config names the theme, and it has no layouts of its own.
const HUGO_SITE: [(&str, &str); 1] = [(
    "hugo.toml",
    "title = \"Site\"\ntheme = \"mini\"\ndisableKinds = [\"taxonomy\", \"term\", \"RSS\", \"sitemap\"]\n",
)];

/// Inits a site built by Hugo (publish `public`) with the theme repository as a submodule.
#[track_caller]
fn hugo_env() -> (TestEnv, PathBuf, String) {
    let env = TestEnv::new();
    env.init(&[]);
    let build = format!("{}publish = \"public\"\n", build_table("hugo"));
    env.write_config(&config_with(&env, &build));
    let files = theme_files("v1");
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let (theme, commit) = make_repo(&env, "theme", &files);
    (env, theme, commit)
}

/// Returns the live home page.
#[track_caller]
fn home_page(env: &TestEnv) -> String {
    let path = env.live_dir().join("index.html");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}\n", path.display()))
}

/// Returns pushdeploy's line about the submodule at `path`.
#[track_caller]
fn submodule_line(output: &Output, path: &str) -> String {
    let prefix = format!("pushdeploy: submodule {path}: ");
    let lines = output.pushdeploy_lines();
    let found = lines.iter().find(|line| line.starts_with(&prefix));
    found.unwrap_or_else(|| panic!("no line starting {prefix:?}\n{output}")).clone()
}

#[test]
fn a_hugo_theme_submodule_builds_the_home_page_and_a_moved_pin_deploys_the_new_commit() {
    if !require_hugo() {
        return;
    }
    let (env, theme, v1) = hugo_env();
    let (push, first) = push_site(&env, &theme.to_string_lossy(), &v1, &HUGO_SITE);
    push.assert_live(&first, "refs/heads/main", "blue");
    let fetched = submodule_line(&push, THEME_PATH);
    let expected =
        format!("pushdeploy: submodule {THEME_PATH}: fetched {} from $TMP/theme in ", &v1[..7]);
    assert!(fetched.starts_with(&expected), "{fetched}\n{push}");
    assert!(home_page(&env).contains("<p>theme v1</p>"), "{}", home_page(&env));

    // The pin did not move: the commit is in the cache, and nothing is fetched.
    env.write("content/_index.md", "---\ntitle: home\n---\n");
    let second = env.commit_all("content");
    let push = env.push();
    push.assert_live(&second, "refs/heads/main", "green");
    let cached = format!("pushdeploy: submodule {THEME_PATH}: {} from the cache", &v1[..7]);
    assert_eq!(submodule_line(&push, THEME_PATH), cached, "{push}");

    // The pin moves to the theme's next commit: that one is fetched and deployed.
    let files = theme_files("v2");
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let v2 = commit_files(&env, &theme, &files, "theme v2");
    let cacheinfo = format!("160000,{v2},{THEME_PATH}");
    let _ = env.git().args(["update-index", "--cacheinfo", &cacheinfo]).success();
    let third = env.commit_all("theme v2");
    let push = env.push();
    push.assert_live(&third, "refs/heads/main", "blue");
    assert!(submodule_line(&push, THEME_PATH).contains(&format!("fetched {}", &v2[..7])), "{push}");
    assert!(home_page(&env).contains("<p>theme v2</p>"), "{}", home_page(&env));
}

#[test]
fn an_unreachable_or_incomplete_submodule_fails_before_the_build_and_the_live_site_stays() {
    if !require_hugo() {
        return;
    }
    let (env, theme, v1) = hugo_env();
    let (push, first) = push_site(&env, &theme.to_string_lossy(), &v1, &HUGO_SITE);
    push.assert_live(&first, "refs/heads/main", "blue");
    let live = env.live_site();

    let missing = env.root.join("gone/theme.git");
    let key = format!("submodule.{THEME_PATH}.url");
    let _ = env.git().args(["config", "--file", ".gitmodules", &key]).arg(&missing).success();
    let _ = env.commit_all("the theme moved away");
    let push = env.push();
    let line = push.assert_failed_at("materialize");
    let reason = format!(
        "pushdeploy: failed at materialize: submodule {THEME_PATH}: cannot fetch commit {v1} from $TMP/gone/theme.git: "
    );
    assert!(line.starts_with(&reason), "{line}");
    assert!(line.contains("or set `submodules = \"skip\"`"), "{line}");
    assert!(!push.normalized_stderr().contains("building:"), "the build ran\n{push}");
    env.assert_live_unchanged(&live);

    // A commit that exists only on the pusher's machine: the fetch works, the commit is not there.
    let local = env.root.join("theme-local");
    let _ = env.git_in(&env.root).arg("clone").arg(&theme).arg(&local).success();
    let unpushed = commit_files(&env, &local, &[("layouts/index.html", "local only\n")], "local");
    let _ = env.git().args(["config", "--file", ".gitmodules", &key]).arg(&theme).success();
    let cacheinfo = format!("160000,{unpushed},{THEME_PATH}");
    let _ = env.git().args(["update-index", "--cacheinfo", &cacheinfo]).success();
    let _ = env.commit_all("pin a commit the theme's repository lacks");
    let push = env.push();
    let line = push.assert_failed_at("materialize");
    let reason = format!(
        "pushdeploy: failed at materialize: submodule {THEME_PATH}: $TMP/theme has no commit {unpushed}; the live site is unchanged"
    );
    assert!(line.starts_with(&reason), "{line}");
    assert!(line.contains(&format!("push commit {} to $TMP/theme", &unpushed[..7])), "{line}");
    env.assert_live_unchanged(&live);
}

#[test]
fn skip_deploys_the_submodule_as_an_empty_directory_like_git_archive() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&format!("{}submodules = \"skip\"\n", env.base_config()));
    let (theme, v1) = make_repo(&env, "theme", &[("layouts/index.html", "theme\n")]);
    let (push, commit) =
        push_site(&env, &theme.to_string_lossy(), &v1, &[("index.html", "site\n")]);
    push.assert_live(&commit, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commit);
    let warning = format!(
        "pushdeploy: warning: submodule {THEME_PATH} (commit {}) is not deployed",
        &v1[..7]
    );
    assert!(push.pushdeploy_lines().iter().any(|line| line.starts_with(&warning)), "{push}");
    assert!(!env.target.join(".pushdeploy/submodules").exists(), "skip fetched something");
}

#[test]
fn a_relative_url_resolves_against_the_bare_repository_and_nested_submodules_deploy() {
    let env = TestEnv::new();
    env.init(&[]);
    // icons.git and theme.git sit next to site.git, as themes kept on the same server do.
    let (icons, icons_commit) = make_repo(&env, "icons-src", &[("star.svg", "<svg/>\n")]);
    let (theme_src, _) = make_repo(&env, "theme-src", &[("layouts/index.html", "theme\n")]);
    for (src, bare) in [(&icons, "icons.git"), (&theme_src, "theme.git")] {
        let _ =
            env.git_in(&env.root).args(["clone", "--quiet", "--bare"]).arg(src).arg(bare).success();
    }
    // The theme's own submodule, relative to the theme's URL: ../icons.git.
    let theme_work = env.root.join("theme-work");
    let _ = env.git_in(&env.root).arg("clone").arg("theme.git").arg(&theme_work).success();
    let gitmodules = theme_work.join(".gitmodules");
    for (key, value) in [("path", "static/icons"), ("url", "../icons.git")] {
        let key = format!("submodule.icons.{key}");
        let _ = env
            .git_in(&theme_work)
            .args(["config", "--file"])
            .arg(&gitmodules)
            .args([&key, value])
            .success();
    }
    let cacheinfo = format!("160000,{icons_commit},static/icons");
    let _ = env
        .git_in(&theme_work)
        .args(["update-index", "--add", "--cacheinfo", &cacheinfo])
        .success();
    fs::create_dir_all(theme_work.join("static/icons")).expect("create the icons directory");
    let theme_commit = commit_files(&env, &theme_work, &[], "icons");
    let _ = env.git_in(&theme_work).args(["push", "--quiet", "origin", "HEAD"]).success();

    let site = [("index.html", "site\n")];
    let (push, commit) = push_site(&env, "../theme.git", &theme_commit, &site);
    push.assert_live(&commit, "refs/heads/main", "blue");
    let line = submodule_line(&push, THEME_PATH);
    assert!(line.contains("from $TMP/theme.git in "), "{line}\n{push}");
    let nested = submodule_line(&push, &format!("{THEME_PATH}/static/icons"));
    assert!(nested.contains("from $TMP/icons.git in "), "{nested}\n{push}");

    // The release is the site's archive with each submodule's archive in its directory.
    let mut expected = env.archive_tree(&commit);
    let theme_tree = env.archive_tree_of(&env.root.join("theme.git"), &theme_commit);
    let icons_tree = env.archive_tree_of(&env.root.join("icons.git"), &icons_commit);
    for (prefix, tree) in
        [(THEME_PATH.to_owned(), theme_tree), (format!("{THEME_PATH}/static/icons"), icons_tree)]
    {
        expected
            .extend(tree.into_iter().map(|(path, entry)| (Path::new(&prefix).join(path), entry)));
    }
    crate::support::assert_trees_equal(&expected, &env.snapshot_tree(env.live_dir()));

    // No build: the next deploy hard-links the submodules' unchanged files by blob id too.
    env.write("index.html", "site v2\n");
    let next = env.commit_all("v2");
    let push = env.push();
    push.assert_live(&next, "refs/heads/main", "green");
    let wrote = push.pushdeploy_lines().into_iter().find(|line| line.contains(" wrote "));
    let wrote = wrote.unwrap_or_else(|| panic!("no `wrote` line\n{push}"));
    assert!(
        wrote.starts_with("pushdeploy: wrote 1 file and hard-linked 4 unchanged files"),
        "{wrote}"
    );
    let path = PathBuf::from("index.html");
    expected
        .insert(path, crate::support::Entry::File { mode: 0o644, contents: b"site v2\n".to_vec() });
    crate::support::assert_trees_equal(&expected, &env.snapshot_tree(env.live_dir()));
}

#[test]
fn crafted_gitmodules_cannot_write_outside_the_state_dir_or_the_release() {
    let env = TestEnv::new();
    env.init(&[]);
    let theme_files = [("layouts/index.html", "theme\n")];
    let (theme, v1) = make_repo(&env, "theme", &theme_files);
    let url = theme.to_string_lossy().into_owned();
    // A name that climbs, and a second section whose path climbs (no gitlink is there).
    add_gitlink(&env, "../../../../escaped", THEME_PATH, &url, &v1);
    let gitmodules = env.work.join(".gitmodules");
    for (key, value) in [("path", "../../outside"), ("url", url.as_str())] {
        let key = format!("submodule.climb.{key}");
        let _ = env.git().args(["config", "--file"]).arg(&gitmodules).args([&key, value]).success();
    }
    env.write("index.html", "site\n");
    let commit = env.commit_all("crafted");
    env.push().assert_live(&commit, "refs/heads/main", "blue");
    let caches: Vec<String> = fs::read_dir(env.target.join(".pushdeploy/submodules"))
        .expect("the cache directory exists")
        .map(|entry| {
            entry.expect("read the cache directory").file_name().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(caches[0].starts_with("escaped-") && caches[0].ends_with(".git"), "{caches:?}");
    for outside in ["escaped", "outside", "www/escaped", "../outside"] {
        assert!(!env.root.join(outside).exists(), "{outside} was written");
    }
    assert!(env.live_dir().join(THEME_PATH).join("layouts/index.html").is_file());

    // A theme symlink is judged where it lands: inside the release it passes, out of it fails.
    let ok = commit_symlink(&env, &theme, "site-index", "../../index.html");
    env.push().assert_live(&ok, "refs/heads/main", "green");
    let live = env.live_site();
    let _ = commit_symlink(&env, &theme, "escape", "../../../etc");
    let line = env.push().assert_failed_at("materialize");
    let refused = format!(
        "pushdeploy: failed at materialize: refused {THEME_PATH}/escape: symlink to ../../../etc leads out of the release"
    );
    assert!(line.starts_with(&refused), "{line}");
    env.assert_live_unchanged(&live);
}

/// Commits a symlink `name -> target` in the theme repository at `theme`, pins the site's
/// submodule to it and commits the site; returns the site's commit.
#[track_caller]
fn commit_symlink(env: &TestEnv, theme: &Path, name: &str, target: &str) -> String {
    std::os::unix::fs::symlink(target, theme.join(name)).expect("symlink in the theme");
    let pinned = commit_files(env, theme, &[], name);
    let cacheinfo = format!("160000,{pinned},{THEME_PATH}");
    let _ = env.git().args(["update-index", "--cacheinfo", &cacheinfo]).success();
    env.commit_all(name)
}

#[test]
fn urls_git_would_run_or_read_as_options_are_refused_and_a_planted_cache_dir_too() {
    let env = TestEnv::new();
    env.init(&[]);
    let (theme, v1) = make_repo(&env, "theme", &[("layouts/index.html", "theme\n")]);
    env.write("index.html", "site\n");
    let first = env.commit_all("site");
    env.push().assert_live(&first, "refs/heads/main", "blue");
    let live = env.live_site();
    let pwned = env.root.join("pwned");
    let ext = format!("ext::sh -c touch% {}", pwned.display());
    for (url, why) in
        [(ext.as_str(), "the `ext::` and `fd::` transports"), ("-uhack", "starts with `-`")]
    {
        add_gitlink(&env, THEME_PATH, THEME_PATH, url, &v1);
        let _ = env.commit_all("crafted URL");
        let line = env.push().assert_failed_at("materialize");
        let refused =
            format!("pushdeploy: failed at materialize: submodule {THEME_PATH}: refused its URL ");
        assert!(line.starts_with(&refused) && line.contains(why), "{line}");
        assert!(!pwned.exists(), "the ext:: command ran");
        env.assert_live_unchanged(&live);
    }

    // A cache directory that is a symlink is refused, never fetched into.
    let elsewhere = env.root.join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir elsewhere");
    std::os::unix::fs::symlink(&elsewhere, env.target.join(".pushdeploy/submodules"))
        .expect("plant the symlink");
    add_gitlink(&env, THEME_PATH, THEME_PATH, &theme.to_string_lossy(), &v1);
    let _ = env.commit_all("a good URL");
    let push = env.push();
    let refused = "$TMP/www/.pushdeploy/submodules is a symlink, not a directory";
    assert!(push.normalized_stderr().contains(refused), "{push}");
    assert_eq!(fs::read_dir(&elsewhere).expect("read elsewhere").count(), 0, "wrote through it");
    env.assert_live_unchanged(&live);
}
