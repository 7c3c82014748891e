//! The site templates end to end: `new-site` and `init --template` pushed, a real build with
//! current Hugo (`tests/hugo.rs` builds with Debian's too).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::html::{assert_local_references_exist, page_assets, referenced_urls};
use crate::support::hugo::{Hugo, Which};
use crate::support::templates::{HUGO_TITLE, STATIC_TITLE, template_dir};
use crate::support::{Entry, Output, TestEnv, Tree, assert_trees_equal, short};

/// The path the Hugo template caches, relative to the release.
const HUGO_CACHE: &str = "resources/_gen";

/// Runs `pushdeploy new-site TEMPLATE <work> --remote <bare>` and returns its output.
#[track_caller]
pub(crate) fn new_site(env: &TestEnv, template: &str) -> Output {
    env.pushdeploy()
        .args(["new-site", template])
        .arg(&env.work)
        .arg("--remote")
        .arg(&env.bare)
        .success()
}

/// Runs `git push OPTIONS... production main` from the work directory, as `new-site` says.
#[track_caller]
pub(crate) fn push_production(env: &TestEnv, options: &[&str]) -> Output {
    env.git().arg("push").args(options).args(["production", "main"]).success()
}

/// Starts a Hugo site the way the README does: `init --template hugo` on the server,
/// `new-site hugo` on the laptop, `git push`. Returns the push and the commit it deployed.
#[track_caller]
pub(crate) fn push_new_hugo_site(env: &TestEnv) -> (Output, String) {
    let _ = env.init_cmd(&["--template", "hugo"]).success();
    let _ = new_site(env, "hugo");
    let commit = env.rev_parse("HEAD");
    let push = push_production(env, &[]);
    push.assert_live(&commit, "refs/heads/main", "blue");
    (push, commit)
}

/// Returns the `pushdeploy.toml` that `init` wrote, parsed.
#[track_caller]
fn read_config(env: &TestEnv) -> toml::Table {
    let path = env.bare.join("pushdeploy.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{} is not TOML: {e}\n{text}", path.display()))
}

/// Returns the file contents of `tree` by path, ignoring directories and modes.
fn file_contents(tree: &Tree) -> BTreeMap<&Path, &[u8]> {
    tree.iter()
        .filter_map(|(path, entry)| match entry {
            Entry::File { contents, .. } => Some((path.as_path(), contents.as_slice())),
            _ => None,
        })
        .collect()
}

/// The checks below are only as good as this parser: it must see every reference the
/// templates make, minified or not, and nothing else.
#[test]
fn referenced_urls_reads_quoted_unquoted_and_srcset_values() {
    let html = r#"<link rel=stylesheet href=/css/a.1234abcd.css integrity=x>
        <a class=brand href=/>home</a><a href="/posts/" data-href="/no">posts</a>
        <img src='/i/s.jpg' srcset="/i/s.jpg 480w, /i/m.jpg 800w" alt="src=/no">"#;

    assert_eq!(
        referenced_urls(html),
        ["/css/a.1234abcd.css", "/", "/posts/", "/i/s.jpg", "/i/s.jpg", "/i/m.jpg"]
    );
}

/// Asserts the fingerprint in `file`'s name (a dot-separated part of 8 or more hex digits,
/// as in `app.fe281a74.css` or Hugo's `main.min.<sha256>.css`) is a prefix of the SHA-256 of
/// its bytes: the name changes whenever the content does, which is what lets browsers cache
/// it forever.
#[track_caller]
fn assert_fingerprinted(env: &TestEnv, file: &Path) {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let fingerprint = name
        .split('.')
        .find(|part| part.len() >= 8 && part.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("{name} has no fingerprint in its name"));
    let output = env.command("sha256sum").arg(file).success();
    let digest = output.stdout.split_whitespace().next().unwrap_or_default();
    assert!(
        digest.starts_with(&fingerprint.to_ascii_lowercase()),
        "{name}: fingerprint {fingerprint} is not its content's SHA-256 {digest}"
    );
}

/// Asserts a page references at least one stylesheet and one script, and that each is live
/// and fingerprinted.
#[track_caller]
pub(crate) fn assert_fingerprinted_assets(env: &TestEnv, root: &Path, page: &str) {
    let (css, js) = page_assets(root, page);
    assert!(!css.is_empty(), "{page} references no stylesheet");
    assert!(!js.is_empty(), "{page} references no script");
    for file in css.iter().chain(&js) {
        assert!(file.is_file(), "{page} references {}, which is not live", file.display());
        assert_fingerprinted(env, file);
    }
}

/// Reads a file of the live release.
#[track_caller]
pub(crate) fn read_live(env: &TestEnv, path: &str) -> String {
    let path = env.live_dir().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Returns the build cache's copy of Hugo's `resources/_gen`.
fn hugo_cache(env: &TestEnv) -> PathBuf {
    env.target.join(".pushdeploy/cache").join(HUGO_CACHE)
}

/// Returns `(inode, mtime)` of each processed image in the cache (Hugo 0.111 keeps them in
/// `images/`, current Hugo in `images/<path they are published at>`). Unchanged across a
/// deploy, they show Hugo reused the files and pushdeploy moved rather than copied them.
#[track_caller]
fn cached_image_ids(env: &TestEnv) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let images = hugo_cache(env).join("images");
    let ids: BTreeMap<_, _> = walkdir::WalkDir::new(&images)
        .into_iter()
        .map(|entry| entry.unwrap_or_else(|e| panic!("read {}: {e}", images.display())))
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let meta = entry.metadata().expect("stat cached image");
            (entry.into_path(), (meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect();
    assert!(!ids.is_empty(), "no processed images in {}", images.display());
    ids
}

/// Asserts pushdeploy said `line` (after `pushdeploy: `) during the deploy.
#[track_caller]
pub(crate) fn assert_said(output: &Output, line: &str) {
    let expected = format!("pushdeploy: {line}");
    assert!(output.pushdeploy_lines().contains(&expected), "no line {expected:?}\n{output}");
}

/// Asserts pushdeploy said nothing starting with `prefix` (after `pushdeploy: `).
#[track_caller]
fn assert_not_said(output: &Output, prefix: &str) {
    let prefix = format!("pushdeploy: {prefix}");
    let found = output.pushdeploy_lines().into_iter().find(|line| line.starts_with(&prefix));
    assert!(found.is_none(), "unexpected {found:?}\n{output}");
}

#[test]
fn static_template_goes_live_with_its_fingerprinted_assets() {
    let env = TestEnv::new();
    let _ = env.init_cmd(&["--template", "static"]).success();
    let config = read_config(&env);
    assert!(!config.contains_key("build"), "the static template needs no build: {config:?}");

    let created = new_site(&env, "static");

    assert_eq!(
        created.pushdeploy_lines().last().map(String::as_str),
        Some("pushdeploy: next: git -C $TMP/work push production main"),
        "{created}"
    );
    let mut site = env.snapshot_tree(&env.work);
    site.retain(|path, _| !path.starts_with(".git"));
    let mut template = env.snapshot_tree(template_dir("static"));
    template.remove(Path::new("pushdeploy.toml.snippet"));
    assert_eq!(file_contents(&site), file_contents(&template), "new-site wrote other files");
    let commit = env.rev_parse("HEAD");

    let push = push_production(&env, &[]);

    push.assert_live(&commit, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commit);
    let live = env.live_dir();
    assert!(read_live(&env, "index.html").contains(STATIC_TITLE));
    assert!(live.join("404.html").is_file(), "the 404 page is not live");
    assert_fingerprinted_assets(&env, &live, "index.html");
    assert_local_references_exist(&live);
}

#[test]
fn hugo_template_builds_and_serves_public_with_fingerprinted_assets() {
    let Some(hugo) = Hugo::require(Which::Current) else { return };
    let env = hugo.env();

    let (push, commit) = push_new_hugo_site(&env);
    hugo.assert_built(&push);

    let config = read_config(&env);
    let build = config["build"].as_table().expect("a [build] table");
    assert_eq!(build["command"].as_str(), Some("hugo --minify"));
    assert_eq!(build["publish"].as_str(), Some("public"));
    assert_eq!(build["cache"], toml::Value::Array(vec![HUGO_CACHE.into()]));
    assert_eq!(build["env"]["HUGO_ENVIRONMENT"].as_str(), Some("production"));
    assert_said(&push, "building: hugo --minify");
    assert_eq!(env.link_target(), Path::new("blue").join("public"));
    let live = env.live_dir();
    let index = read_live(&env, "index.html");
    assert!(index.contains(&format!("<title>{HUGO_TITLE}</title>")), "no title in:\n{index}");
    assert!(live.join("posts/first-deploy/index.html").is_file(), "a post is missing");
    assert!(live.join("404.html").is_file(), "the 404 page is not live");
    assert_fingerprinted_assets(&env, &live, "index.html");
    assert_local_references_exist(&live);
    // The cache lives outside the served tree, and the link serves only what Hugo published.
    assert!(!live.join("resources").exists(), "resources/ is served");
    assert!(hugo_cache(&env).join("images").is_dir(), "the processed images were not cached");
    env.assert_no_idle_slot();
    let status = env.pushdeploy().args(["status", "--repo"]).arg(&env.bare).success();
    assert!(status.stdout.contains(short(&commit)), "{status}");
}

#[test]
fn hugo_cache_is_reused_and_push_option_no_cache_rebuilds_it() {
    let Some(hugo) = Hugo::require(Which::Current) else { return };
    let env = hugo.env();
    let (first, _) = push_new_hugo_site(&env);
    hugo.assert_built(&first);
    assert_not_said(&first, "build cache: reusing");
    let cache = hugo_cache(&env);
    let images = cached_image_ids(&env);
    let marker = cache.join("marker");
    fs::write(&marker, "left by the test\n").expect("write marker");
    let about = fs::read_to_string(env.work.join("content/about.md")).expect("read about.md");

    env.write("content/about.md", format!("{about}\nSecond deploy.\n"));
    let second = env.commit_all("second");
    let push = push_production(&env, &[]);

    push.assert_live(&second, "refs/heads/main", "green");
    assert_said(&push, &format!("build cache: reusing {HUGO_CACHE}"));
    assert!(marker.is_file(), "the cached directory was not the one moved in and saved back");
    assert_eq!(cached_image_ids(&env), images, "the processed images were made again");
    assert!(read_live(&env, "about/index.html").contains("Second deploy."));
    assert_local_references_exist(&env.live_dir());

    env.write("content/about.md", format!("{about}\nThird deploy.\n"));
    let third = env.commit_all("third");
    let push = push_production(&env, &["-o", "no-cache"]);

    push.assert_live(&third, "refs/heads/main", "blue");
    assert_said(&push, "build cache: not used for this deploy");
    assert_not_said(&push, "build cache: reusing");
    assert!(!marker.exists(), "the fresh build did not replace the cache");
    let rebuilt = cached_image_ids(&env);
    assert_eq!(rebuilt.keys().collect::<Vec<_>>(), images.keys().collect::<Vec<_>>());
    for (path, id) in &rebuilt {
        assert_ne!(Some(id), images.get(path), "{} was not processed again", path.display());
    }
    assert_local_references_exist(&env.live_dir());

    // The same from the command line; the redeploy of the same commit goes to the other slot.
    fs::write(&marker, "left by the test\n").expect("write marker");
    let deploy = env.pushdeploy().args(["deploy", "--no-cache", "--repo"]).arg(&env.bare).success();

    deploy.assert_live(&third, "refs/heads/main", "green");
    assert_said(&deploy, "build cache: not used for this deploy");
    assert!(!marker.exists(), "deploy --no-cache did not replace the cache");

    let deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success();

    deploy.assert_live(&third, "refs/heads/main", "blue");
    assert_said(&deploy, &format!("build cache: reusing {HUGO_CACHE}"));
}

#[test]
fn hugo_build_error_reaches_pusher_and_keeps_site_and_cache() {
    let Some(hugo) = Hugo::require(Which::Current) else { return };
    let env = hugo.env();
    let (push, first) = push_new_hugo_site(&env);
    hugo.assert_built(&push);
    let before = env.live_site();
    let cache_before = env.snapshot_tree(hugo_cache(&env));
    let baseof = "layouts/_default/baseof.html";
    let layout = fs::read_to_string(env.work.join(baseof)).expect("read baseof.html");
    // A page with an image size the cache does not hold: Hugo processes it (writing into
    // resources/_gen) before the broken line after the page body fails the render.
    env.write(
        "content/small.md",
        "---\ntitle: \"Small\"\n---\n\n{{< image src=\"images/hero.png\" alt=\"\" width=\"320x\" >}}\n",
    );
    env.write(baseof, format!("{layout}{{{{ .Nope.Broken }}}}\n"));
    env.commit_all("broken layout");

    let push = push_production(&env, &[]);

    let line = push.assert_failed_at("build");
    assert!(line.contains("`hugo --minify` exited with status"), "{line}");
    assert!(
        line.contains(&format!("the live site is unchanged (blue, {})", short(&first))),
        "{line}"
    );
    let hugo_error = push.stderr.lines().find(|line| {
        line.starts_with("remote: ")
            && line.contains("baseof.html")
            && line.to_ascii_lowercase().contains("error")
    });
    assert!(hugo_error.is_some(), "Hugo's error did not reach the pusher\n{push}");
    env.assert_live_unchanged(&before);
    // A failed build may cost the cache, never change it: what the failed build processed
    // (the 320px image) must not be there for the next build to pick up.
    let cache = hugo_cache(&env);
    if fs::symlink_metadata(&cache).is_ok() {
        assert_trees_equal(&cache_before, &env.snapshot_tree(&cache));
    }

    env.write(baseof, layout);
    let fixed = env.commit_all("fix the layout");
    let push = push_production(&env, &[]);

    push.assert_live(&fixed, "refs/heads/main", "green");
    let small = read_live(&env, "small/index.html");
    assert!(small.contains("width=320"), "the 320px image is not on the page:\n{small}");
    assert_local_references_exist(&env.live_dir());
    // Hugo gives a processed image the same file name in public/ and in resources/_gen/.
    let image = referenced_urls(&small)
        .into_iter()
        .find_map(|url| url.strip_prefix("/images/").map(str::to_owned))
        .unwrap_or_else(|| panic!("no processed image on the page:\n{small}"));
    let cached = cached_image_ids(&env);
    let found = cached.keys().any(|path| path.file_name() == Some(image.as_ref()));
    assert!(found, "the good build's {image} was not cached in {}", cache.display());
}
