//! The site templates end to end: `new-site` and `init --template` through real pushes, a real
//! Hugo build with its build cache, the web server configs checked by the servers themselves,
//! and the README's first command, `./install.sh --demo`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::support::install::{build_release, install_sh};
use crate::support::servers::ServerKind;
use crate::support::{Entry, LINK, Output, TestEnv, Tree, assert_trees_equal, short};

/// The title of the Hugo template's site (`hugo.toml`).
const HUGO_TITLE: &str = "pushdeploy Hugo demo";

/// The heading of the static template's home page.
const STATIC_TITLE: &str = "pushdeploy static demo";

/// The path the Hugo template caches, relative to the release.
const HUGO_CACHE: &str = "resources/_gen";

/// Returns the directory of a template in the source tree.
fn template_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("site-templates").join(name)
}

/// Returns whether `program` is an executable in `PATH`.
fn in_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Returns whether a test needing Hugo can run. A missing Hugo fails the test when `CI` is set
/// (`.ci/run` installs it, so a skip there would hide a broken setup); elsewhere the test prints
/// a notice and returns early.
#[track_caller]
fn require_hugo() -> bool {
    if in_path("hugo") {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "hugo is not installed, and CI is set");
    eprintln!("notice: skipping: hugo is not installed");
    false
}

/// Runs `pushdeploy new-site TEMPLATE <work> --remote <bare>` and returns its output.
#[track_caller]
fn new_site(env: &TestEnv, template: &str) -> Output {
    env.pushdeploy()
        .args(["new-site", template])
        .arg(&env.work)
        .arg("--remote")
        .arg(&env.bare)
        .success()
}

/// Runs `git push OPTIONS... production main` from the work directory, as `new-site` says.
#[track_caller]
fn push_production(env: &TestEnv, options: &[&str]) -> Output {
    env.git().arg("push").args(options).args(["production", "main"]).success()
}

/// Starts a Hugo site the way the README does: `init --template hugo` on the server,
/// `new-site hugo` on the laptop, `git push`. Returns the push and the commit it deployed.
#[track_caller]
fn push_new_hugo_site(env: &TestEnv) -> (Output, String) {
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

/// Returns the values of `href`, `src` and `srcset` attributes in `html`, quoted or not
/// (Hugo's minifier drops the quotes), with each `srcset` candidate on its own.
fn referenced_urls(html: &str) -> Vec<&str> {
    let mut urls = Vec::new();
    for attribute in ["href=", "src=", "srcset="] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            // `data-src=` and the like are not references.
            let is_attribute = rest[..at].ends_with(|c: char| c.is_ascii_whitespace());
            let (value, after) = attribute_value(&rest[at + attribute.len()..]);
            rest = after;
            if !is_attribute {
                continue;
            }
            if attribute == "srcset=" {
                urls.extend(
                    value.split(',').filter_map(|candidate| candidate.split_whitespace().next()),
                );
            } else {
                urls.push(value);
            }
        }
    }
    urls
}

/// Splits an attribute value off the start of `text`: quoted, or unquoted up to whitespace or
/// the end of the tag. Returns the value and the rest.
fn attribute_value(text: &str) -> (&str, &str) {
    if let Some(quote) = text.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let inner = &text[1..];
        let end = inner.find(quote).unwrap_or(inner.len());
        (&inner[..end], &inner[end..])
    } else {
        let end = text.find(|c: char| c.is_ascii_whitespace() || c == '>').unwrap_or(text.len());
        (&text[..end], &text[end..])
    }
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

/// Returns the file inside `root` that `url`, referenced by the page `page`, names; `None` for
/// URLs that leave the site (`https:`, `mailto:`, `//host`) and fragments.
fn local_file(root: &Path, page: &Path, url: &str) -> Option<PathBuf> {
    let url = url.split(['#', '?']).next().unwrap_or_default();
    let has_scheme = url.split('/').next().is_some_and(|first| first.contains(':'));
    if url.is_empty() || url.starts_with("//") || has_scheme {
        return None;
    }
    let mut path = match url.strip_prefix('/') {
        Some(absolute) => root.join(absolute),
        None => page.parent().unwrap_or(root).join(url),
    };
    if url.ends_with('/') || path.is_dir() {
        path.push("index.html");
    }
    Some(path)
}

/// Asserts every local `href`, `src` and `srcset` of every HTML page under `root` names a file
/// that exists under `root`: no page of the release links to something the deploy left out.
#[track_caller]
fn assert_local_references_exist(root: &Path) {
    let mut missing = Vec::new();
    let mut pages = 0;
    for item in WalkDir::new(root).sort_by_file_name() {
        let item = item.unwrap_or_else(|e| panic!("walk {}: {e}", root.display()));
        if item.path().extension().is_none_or(|ext| ext != "html") {
            continue;
        }
        pages += 1;
        let html = fs::read_to_string(item.path())
            .unwrap_or_else(|e| panic!("read {}: {e}", item.path().display()));
        for url in referenced_urls(&html) {
            let Some(file) = local_file(root, item.path(), url) else { continue };
            if !file.is_file() {
                let page = item.path().strip_prefix(root).expect("walked path is under root");
                missing.push(format!("{}: {url}", page.display()));
            }
        }
    }
    assert!(pages > 1, "only {pages} HTML pages in {}", root.display());
    assert!(missing.is_empty(), "references to missing files:\n  {}", missing.join("\n  "));
}

/// Returns the stylesheets and scripts a page references, as files under `root`.
#[track_caller]
fn page_assets(root: &Path, page: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let page = root.join(page);
    let html = fs::read_to_string(&page).unwrap_or_else(|e| panic!("read {}: {e}", page.display()));
    let files: Vec<PathBuf> =
        referenced_urls(&html).into_iter().filter_map(|url| local_file(root, &page, url)).collect();
    let with_extension = |wanted: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|file| file.extension().is_some_and(|ext| ext == wanted))
            .cloned()
            .collect()
    };
    (with_extension("css"), with_extension("js"))
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
fn assert_fingerprinted_assets(env: &TestEnv, root: &Path, page: &str) {
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
fn read_live(env: &TestEnv, path: &str) -> String {
    let path = env.live_dir().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Returns the build cache's copy of Hugo's `resources/_gen`.
fn hugo_cache(env: &TestEnv) -> PathBuf {
    env.target.join(".pushdeploy/cache").join(HUGO_CACHE)
}

/// Returns `(inode, mtime)` of each processed image in the cache. Unchanged across a
/// deploy, they show Hugo reused the files and pushdeploy moved rather than copied them.
#[track_caller]
fn cached_image_ids(env: &TestEnv) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let images = hugo_cache(env).join("images");
    let entries =
        fs::read_dir(&images).unwrap_or_else(|e| panic!("read {}: {e}", images.display()));
    let ids: BTreeMap<_, _> = entries
        .map(|entry| {
            let entry = entry.expect("read cache entry");
            let meta = entry.metadata().expect("stat cached image");
            (entry.path(), (meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect();
    assert!(!ids.is_empty(), "no processed images in {}", images.display());
    ids
}

/// Asserts pushdeploy said `line` (after `pushdeploy: `) during the deploy.
#[track_caller]
fn assert_said(output: &Output, line: &str) {
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
    if !require_hugo() {
        return;
    }
    let env = TestEnv::new();

    let (push, commit) = push_new_hugo_site(&env);

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
    if !require_hugo() {
        return;
    }
    let env = TestEnv::new();
    let (first, _) = push_new_hugo_site(&env);
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
    if !require_hugo() {
        return;
    }
    let env = TestEnv::new();
    let (_, first) = push_new_hugo_site(&env);
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
    // Hugo names a processed image the same in public/ and in resources/_gen/.
    let image = referenced_urls(&small)
        .into_iter()
        .find_map(|url| url.strip_prefix('/').filter(|path| path.starts_with("images/")))
        .unwrap_or_else(|| panic!("no processed image on the page:\n{small}"));
    assert!(cache.join(image).is_file(), "the good build's {image} was not cached");
}

/// Returns `template` with every `@NAME@` placeholder replaced from `vars`, asserting none is
/// left (a placeholder added to a template must be added here too).
#[track_caller]
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    // Every piece between two `@`s is a candidate: Caddy's `@matcher` names are lowercase.
    let pieces: Vec<&str> = text.split('@').collect();
    let inner = pieces.get(1..pieces.len().saturating_sub(1)).unwrap_or_default();
    let leftover = inner
        .iter()
        .copied()
        .find(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
    assert!(leftover.is_none(), "placeholder @{}@ is not rendered", leftover.unwrap_or_default());
    text
}

/// Renders `site-templates/servers/NAME` into `dir` and returns the written file.
#[track_caller]
fn render_server_config(name: &str, dir: &Path, vars: &[(&str, &str)]) -> PathBuf {
    let source = template_dir("servers").join(name);
    let template =
        fs::read_to_string(&source).unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let path = dir.join(name);
    fs::write(&path, render(&template, vars))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A directory for one server's rendered configs, pid file and logs.
#[track_caller]
fn rundir(env: &TestEnv, kind: ServerKind) -> PathBuf {
    let dir = env.root.join(format!("run-{}", kind.program()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Returns the block of a server config that starts at the line beginning with `open` and
/// ends where its nesting (`{ }`, or Apache's `<Tag>` and `</Tag>`) closes, each line trimmed,
/// without comments and blank lines.
fn block_lines(text: &str, open: &str) -> Vec<String> {
    let mut block = Vec::new();
    let mut depth = 0_i32;
    for line in text.lines().map(str::trim).skip_while(|line| !line.starts_with(open)) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let opens = line.matches('{').count()
            + usize::from(line.starts_with('<') && !line.starts_with("</"));
        let closes = line.matches('}').count() + usize::from(line.starts_with("</"));
        depth +=
            i32::try_from(opens).expect("few braces") - i32::try_from(closes).expect("few braces");
        block.push(line.to_owned());
        if depth <= 0 {
            break;
        }
    }
    block
}

#[test]
fn server_configs_pass_the_servers_own_checks() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "<h1>served</h1>\n");
    let commit = env.commit_all("site");
    env.push().assert_live(&commit, "refs/heads/main", "blue");
    let target = env.target.to_string_lossy().into_owned();

    if ServerKind::Apache.require() {
        let apache = ServerKind::Apache.binary().expect("apache2 is installed");
        let dir = rundir(&env, ServerKind::Apache);
        let run = dir.to_string_lossy().into_owned();
        let vars = [
            ("TARGET", &*target),
            ("PORT", "8080"),
            ("SERVER_NAME", "localhost"),
            ("RUNDIR", &*run),
        ];
        let standalone = render_server_config("apache-standalone.conf", &dir, &vars);
        let check = env.command(&apache).arg("-t").arg("-f").arg(&standalone).success();
        assert!(check.stderr.contains("Syntax OK"), "{check}");

        // The vhost as a site would include it, under the least a server config needs.
        let vhost = render_server_config("apache-vhost.conf", &dir, &vars);
        let modules = "/usr/lib/apache2/modules";
        let wrapper = dir.join("apache-with-vhost.conf");
        let main = format!(
            "ServerRoot {run}\nServerName localhost\nListen 127.0.0.1:8080\nPidFile {run}/apache.pid\n\
             DefaultRuntimeDir {run}\nMutex file:{run} default\nErrorLog {run}/error.log\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule alias_module {modules}/mod_alias.so\n\
             LoadModule dir_module {modules}/mod_dir.so\n\
             LoadModule mime_module {modules}/mod_mime.so\n\
             TypesConfig /etc/mime.types\nInclude {}\n",
            vhost.display()
        );
        fs::write(&wrapper, main).expect("write the Apache wrapper config");
        let check = env.command(&apache).arg("-t").arg("-f").arg(&wrapper).success();
        assert!(check.stderr.contains("Syntax OK"), "{check}");
    }

    if ServerKind::Nginx.require() {
        let nginx = ServerKind::Nginx.binary().expect("nginx is installed");
        let dir = rundir(&env, ServerKind::Nginx);
        let run = dir.to_string_lossy().into_owned();
        let vars = [
            ("TARGET", &*target),
            ("PORT", "8080"),
            ("SERVER_NAME", "localhost"),
            ("RUNDIR", &*run),
        ];
        let error_log = dir.join("error.log");
        let standalone = render_server_config("nginx-standalone.conf", &dir, &vars);
        let check = env
            .command(&nginx)
            .arg("-t")
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&standalone)
            .success();
        assert!(check.stderr.contains("test is successful"), "{check}");

        let server = render_server_config("nginx.conf", &dir, &vars);
        let wrapper = dir.join("nginx-with-server.conf");
        let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .map(|kind| format!("    {kind}_temp_path {run}/{kind};\n"))
            .concat();
        let main = format!(
            "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\nhttp {{\n    \
             include /etc/nginx/mime.types;\n    access_log {run}/access.log;\n{temp_paths}    \
             include {};\n}}\n",
            server.display()
        );
        fs::write(&wrapper, main).expect("write the nginx wrapper config");
        let check = env
            .command(&nginx)
            .arg("-t")
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&wrapper)
            .success();
        assert!(check.stderr.contains("test is successful"), "{check}");
    }

    if ServerKind::Caddy.require() {
        let caddy = ServerKind::Caddy.binary().expect("caddy is installed");
        let dir = rundir(&env, ServerKind::Caddy);
        let run = dir.to_string_lossy().into_owned();
        let vars = [
            ("TARGET", &*target),
            ("PORT", "8080"),
            ("SERVER_NAME", "localhost"),
            ("RUNDIR", &*run),
        ];
        for name in ["Caddyfile.standalone", "Caddyfile"] {
            let config = render_server_config(name, &dir, &vars);
            let check = env
                .command(&caddy)
                .args(["validate", "--adapter", "caddyfile", "--config"])
                .arg(&config)
                .env("XDG_CONFIG_HOME", &dir)
                .env("XDG_DATA_HOME", &dir)
                .success();
            assert!(check.stdout.contains("Valid configuration"), "{name}\n{check}");
            assert!(!check.stderr.contains("not formatted"), "{name}: run `caddy fmt`\n{check}");
        }
    }
}

/// The zero-downtime tests run the standalone configs; they must serve the site exactly as the
/// configs users install do, so the standalone files inline the same site block.
#[test]
fn standalone_server_configs_inline_the_published_site_blocks() {
    let read = |name: &str| {
        let path = template_dir("servers").join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    assert_eq!(
        block_lines(&read("apache-standalone.conf"), "<VirtualHost"),
        block_lines(&read("apache-vhost.conf"), "<VirtualHost"),
        "apache-standalone.conf's <VirtualHost> differs from apache-vhost.conf's"
    );
    // The test server listens on loopback only.
    let nginx_standalone: Vec<String> = block_lines(&read("nginx-standalone.conf"), "server {")
        .into_iter()
        .map(|line| line.replace("listen 127.0.0.1:@PORT@;", "listen @PORT@;"))
        .collect();
    assert_eq!(
        nginx_standalone,
        block_lines(&read("nginx.conf"), "server {"),
        "nginx-standalone.conf's server block differs from nginx.conf's"
    );
    let caddy_standalone: Vec<String> =
        block_lines(&read("Caddyfile.standalone"), "http://127.0.0.1:@PORT@ {")
            .into_iter()
            .skip(1)
            .filter(|line| line != "bind 127.0.0.1")
            .collect();
    let caddy_site: Vec<String> =
        block_lines(&read("Caddyfile"), "@SERVER_NAME@ {").into_iter().skip(1).collect();
    assert_eq!(
        caddy_standalone, caddy_site,
        "Caddyfile.standalone's site differs from Caddyfile's"
    );
}

#[test]
fn install_demo_deploys_twice_and_uninstall_removes_binary() {
    let env = TestEnv::new();
    build_release(&env);
    let prefix = env.root.join("prefix");
    let demo = env.root.join("demo");
    let run = |args: &[&str]| install_sh(&env, &prefix).args(args).success();
    let hugo = in_path("hugo");
    let (title, about) =
        if hugo { (HUGO_TITLE, "about/index.html") } else { (STATIC_TITLE, "about.html") };
    let link = demo.join("www").join(LINK);

    let first = run(&["--demo", &demo.to_string_lossy()]);

    let bin = prefix.join("bin/pushdeploy");
    assert!(bin.is_file(), "{} was not installed\n{first}", bin.display());
    let stderr = first.normalized_stderr();
    assert!(
        stderr.contains("install.sh: the demo site is live in $TMP/demo/www/public_html"),
        "{first}"
    );
    assert_eq!(stderr.contains("hugo is not installed"), !hugo, "{first}");
    let index = fs::read_to_string(link.join("index.html")).expect("read the demo's index.html");
    assert!(index.contains(title), "{title:?} is not in the demo's index.html:\n{index}");
    let first_slot = fs::read_link(&link).expect("readlink the demo's link");

    let second = run(&["--demo", &demo.to_string_lossy()]);

    let second_slot = fs::read_link(&link).expect("readlink the demo's link");
    let other = |slot: &Path| -> PathBuf {
        let mut parts = slot.iter();
        let name = match parts.next().and_then(|slot| slot.to_str()) {
            Some("blue") => "green",
            Some("green") => "blue",
            _ => panic!("{} is not a slot", slot.display()),
        };
        Path::new(name).join(parts.collect::<PathBuf>())
    };
    assert_eq!(second_slot, other(&first_slot), "the second run did not flip the slot\n{second}");
    let page = fs::read_to_string(link.join(about)).expect("read the demo's about page");
    assert!(page.contains("Demo run at"), "the second run's change is not live:\n{page}");

    let uninstall = run(&["--uninstall"]);

    assert!(!bin.exists(), "{} is still installed\n{uninstall}", bin.display());
    assert!(
        uninstall.normalized_stderr().contains("removed $TMP/prefix/bin/pushdeploy"),
        "{uninstall}"
    );
}
