//! What Hugo sites need from a deploy, with real Hugo: Debian's Hugo still builds the
//! template, Hugo's cache is the target's own (not one shared by every user in `$TMPDIR`),
//! and `[build] git_history` gives `enableGitInfo` the commits' dates.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::html::assert_local_references_exist;
use crate::support::hugo::{Hugo, Which};
use crate::support::site::{build_table, config_with};
use crate::support::user::TestUser;
use crate::support::{TestEnv, toml_str};
use crate::templates::{
    assert_fingerprinted_assets, push_new_hugo_site, push_production, read_live,
};

/// Author and committer dates of the commits the git-history tests make.
const FIRST_DATE: &str = "2021-03-04T05:06:07Z";
const SECOND_DATE: &str = "2022-08-09T10:11:12Z";

/// Commits everything in the work clone with `date` as author and committer date.
#[track_caller]
fn commit_at(env: &TestEnv, message: &str, date: &str) -> String {
    let _ = env.git().args(["add", "--all"]).success();
    let commit = env.git().args(["commit", "--quiet", "-m", message]);
    let _ = commit.env("GIT_AUTHOR_DATE", date).env("GIT_COMMITTER_DATE", date).success();
    env.rev_parse("HEAD")
}

/// Returns the author date git gives `path`'s last change at `rev`, as Hugo formats it.
#[track_caller]
fn last_change(env: &TestEnv, rev: &str, path: &str) -> (String, String) {
    let log = env.git().args(["log", "-1", "--format=%H %aI", rev, "--", path]).success();
    let (hash, date) = log.stdout.trim().split_once(' ').expect("git log printed a commit");
    (hash.to_owned(), date.replace("+00:00", "Z"))
}

/// Asserts the live page at `page` says it last changed at `date` in `hash`, as the Hugo
/// template's `single.html` prints `.Lastmod` and `.GitInfo`.
#[track_caller]
fn assert_last_changed(env: &TestEnv, page: &str, (hash, date): &(String, String)) {
    let html = read_live(env, page);
    let line = html
        .split("Last changed")
        .nth(1)
        .unwrap_or_else(|| panic!("{page} shows no git info:\n{html}"));
    // Minified, the attribute loses its quotes.
    let time = line.split("datetime=").nth(1).unwrap_or_default().trim_start_matches('"');
    assert!(time.starts_with(date.as_str()), "{page}: not {date}:\n{line}");
    let shown = line.split("<code>").nth(1).and_then(|rest| rest.split("</code>").next());
    assert!(shown.is_some_and(|short| hash.starts_with(short)), "{page}: not {hash}:\n{line}");
}

/// Pushes the Hugo template with `enableGitInfo = true` and `[build] git_history = true`,
/// then two commits with fixed dates, and checks each page's date is its last commit's;
/// then deploys the first commit again, whose pages' dates are older.
#[track_caller]
fn assert_git_info_gives_commit_dates(hugo: &Hugo) {
    let env = hugo.env();
    let _ = push_new_hugo_site(&env);
    let config = fs::read_to_string(env.bare.join("pushdeploy.toml")).expect("read the config");
    env.write_config(&config.replacen("[build]\n", "[build]\ngit_history = true\n", 1));
    let site = fs::read_to_string(env.work.join("hugo.toml")).expect("read hugo.toml");
    env.write("hugo.toml", format!("enableGitInfo = true\n{site}"));
    let about = fs::read_to_string(env.work.join("content/about.md")).expect("read about.md");
    env.write("content/about.md", format!("{about}\nChanged in the first commit.\n"));
    let first = commit_at(&env, "first", FIRST_DATE);
    let post = "content/posts/first-deploy.md";
    let text = fs::read_to_string(env.work.join(post)).expect("read the post");
    env.write(post, format!("{text}\nChanged in the second commit.\n"));
    let second = commit_at(&env, "second", SECOND_DATE);

    let push = push_production(&env, &[]);

    push.assert_live(&second, "refs/heads/main", "green");
    hugo.assert_built(&push);
    assert_last_changed(&env, "about/index.html", &(first.clone(), FIRST_DATE.to_owned()));
    assert_last_changed(&env, "posts/first-deploy/index.html", &(second, SECOND_DATE.into()));
    let untouched = last_change(&env, "HEAD", "content/posts/build-cache.md");
    assert_last_changed(&env, "posts/build-cache/index.html", &untouched);
    assert!(!env.target.join("green/.git").exists(), "the release kept its .git link");

    // An older commit, not the branch tip, is what the build's git sees as HEAD.
    let deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).arg(&first);

    deploy.success().assert_live(&first, &first, "blue");
    let before = last_change(&env, &first, post);
    assert_last_changed(&env, "posts/first-deploy/index.html", &before);
    assert_last_changed(&env, "about/index.html", &(first, FIRST_DATE.to_owned()));
}

#[test]
fn hugo_git_info_gives_each_page_its_last_commits_date_with_git_history() {
    let Some(hugo) = Hugo::require(Which::Current) else { return };
    assert_git_info_gives_commit_dates(&hugo);
}

// Debian 12 ships Hugo 0.111, which still runs many sites; `enableGitInfo` made it fail
// with `not a git repository`, since a release has no `.git`.
#[test]
fn debians_hugo_builds_the_template_and_git_info() {
    let Some(hugo) = Hugo::require(Which::Debian) else { return };
    let env = hugo.env();

    let (push, _) = push_new_hugo_site(&env);

    hugo.assert_built(&push);
    assert_fingerprinted_assets(&env, &env.live_dir(), "index.html");
    assert_local_references_exist(&env.live_dir());
    drop(env);
    assert_git_info_gives_commit_dates(&hugo);
}

#[test]
fn build_with_git_history_sees_the_release_commit_and_leaves_the_repository_alone() {
    for mode in ["post-receive", "pre-receive"] {
        let env = TestEnv::new();
        env.init(&["--mode", mode]);
        // What the build's git sees, and what it does: a commit and a tag, which must land
        // in the build's own git directory, never in the repository.
        let build = "mkdir -p public && git log --format='%H %cI' > public/index.html && \
                     git -c user.name=b -c user.email=b@localhost commit -q --allow-empty -m b && \
                     git tag from-the-build && echo \"$HUGO_CACHEDIR\" > public/cachedir.txt";
        let own_cache = env.root.join("my-hugo-cache");
        let table = format!(
            "{}git_history = true\npublish = \"public\"\n[build.env]\nHUGO_CACHEDIR = {}\n",
            build_table(build),
            toml_str(&own_cache.to_string_lossy())
        );
        env.write_config(&config_with(&env, &table));
        env.write("README.md", "one\n");
        let first = commit_at(&env, "first", FIRST_DATE);
        env.write("README.md", "two\n");
        let second = commit_at(&env, "second", SECOND_DATE);

        env.push().assert_live(&second, "refs/heads/main", "blue");

        let history = format!("{second} {SECOND_DATE}\n{first} {FIRST_DATE}\n");
        assert_eq!(read_live(&env, "index.html"), history, "{mode}");
        assert_eq!(read_live(&env, "cachedir.txt"), format!("{}\n", own_cache.display()));
        let tags = env.git_in(&env.bare).args(["tag", "--list"]).success();
        assert_eq!(tags.stdout, "", "{mode}: the build tagged the repository");
        let main = env.git_in(&env.bare).args(["rev-parse", "main"]).success();
        assert_eq!(main.stdout.trim(), second, "{mode}: the build moved the branch");
        assert!(!env.target.join("blue/.git").exists(), "{mode}: the .git link stayed");
    }
}

// Hugo's default cache is `$TMPDIR/hugo_cache/<directory name>`, and that name is `blue` or
// `green` for every site: after a build as root (the demo), Debian's Hugo failed every build
// of another user in the other slot with `mkdir /tmp/hugo_cache/green: permission denied`.
#[test]
fn hugo_builds_of_two_users_on_one_machine_do_not_collide() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("a second user needs root");
        return;
    }
    for which in [Which::Debian, Which::Current] {
        if let Some(hugo) = Hugo::require(which) {
            assert_two_users_do_not_collide(&hugo);
        }
    }
}

/// Deploys the Hugo template as root, then twice (blue, green) as another user, all with
/// one `TMPDIR` as they would share /tmp, and checks each build kept its cache in its target.
#[track_caller]
fn assert_two_users_do_not_collide(hugo: &Hugo) {
    let shared = tempfile::tempdir().expect("create the shared TMPDIR");
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let root_site = hugo.env().with_env("TMPDIR", shared.path());
    let user = TestUser::create(&root_site, "pdhugo");
    let user_site = hugo.env().with_env("TMPDIR", shared.path()).owned_by(user.uid, user.gid);

    let _ = push_new_hugo_site(&root_site);
    let (first, _) = push_new_hugo_site(&user_site);
    user_site.write("content/posts/third.md", "---\ntitle: \"Third\"\n---\n\nThird post.\n");
    let second = user_site.commit_all("third post");
    let push = push_production(&user_site, &[]);

    push.assert_live(&second, "refs/heads/main", "green");
    hugo.assert_built(&first);
    hugo.assert_built(&push);
    assert!(read_live(&user_site, "posts/third/index.html").contains("Third post."));
    for (env, uid) in [(&root_site, 0), (&user_site, user.uid)] {
        let cache = env.target.join(".pushdeploy/tool-cache/hugo");
        let meta = fs::symlink_metadata(&cache).expect("the target has Hugo's cache");
        assert!(meta.is_dir() && meta.uid() == uid, "{} is not {uid}'s", cache.display());
    }
    let left: Vec<_> = fs::read_dir(shared.path()).expect("read TMPDIR").flatten().collect();
    assert!(left.is_empty(), "Hugo {} wrote into the shared TMPDIR: {left:?}", hugo.version);
}
