//! Hostile trees: symlink chains, loops and paths through links are refused; nothing written out.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::support::target::{names, refusal, set};
use crate::support::{LINK, LiveSite, Output, TestEnv, Tree, assert_trees_equal};

/// A directory beside the target that hostile trees aim their links at. A deploy that wrote
/// through such a link would change it, or leave something new beside the target.
struct Sentinel {
    dir: PathBuf,
    before: Tree,
    root_names: BTreeSet<String>,
}

impl Sentinel {
    fn new(env: &TestEnv) -> Sentinel {
        let dir = env.root.join("outside");
        fs::create_dir(&dir).expect("create the sentinel directory");
        fs::write(dir.join("keep.txt"), "keep\n").expect("write the sentinel file");
        Sentinel { before: env.snapshot_tree(&dir), root_names: names(&env.root), dir }
    }

    /// Asserts the deploy ended refused for `why` with `live` still served unchanged, and
    /// nothing written outside.
    #[track_caller]
    fn assert_refused(
        &self,
        env: &TestEnv,
        push: &Output,
        why: &str,
        live: &str,
        before: &LiveSite,
    ) {
        assert_eq!(push.final_line(), refusal(why, "blue", live), "{push}");
        env.assert_live_unchanged(before);
        self.assert_untouched(env);
    }

    /// Asserts nothing was written outside the live slot: not into the sentinel directory,
    /// not beside the target, not into the target beside the slots.
    #[track_caller]
    fn assert_untouched(&self, env: &TestEnv) {
        assert_trees_equal(&self.before, &env.snapshot_tree(&self.dir));
        assert_eq!(names(&env.root), self.root_names, "something appeared beside the target");
        let slot = env.live_slot();
        assert_eq!(names(&env.target), set(&[".pushdeploy", &slot, LINK]), "target holds more");
    }
}

#[test]
fn symlink_chain_leading_out_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    // `a` names a sibling; only followed through `b` does it leave the release.
    env.symlink("a", "b");
    env.symlink("b", "../..");
    env.commit_all("two-link chain");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused a: symlink to b leads out of the release",
        &live,
        &before,
    );

    // Three links, each of which alone stays inside the release: `sub/hop3` is the release
    // root, so `sub/hop2` (lexically `sub`) is the target directory.
    env.remove("a");
    env.remove("b");
    env.write("sub/page.html", "page\n");
    env.symlink("hop1", "sub/hop2");
    env.symlink("sub/hop2", "hop3/..");
    env.symlink("sub/hop3", "..");
    env.commit_all("three-link chain");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused hop1: symlink to sub/hop2 leads out of the release",
        &live,
        &before,
    );
}

#[test]
fn symlink_to_directory_with_a_path_through_it_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    let evil = env.hash_blob(b"evil\n");
    let through = env.hash_tree(&[("100644", b"x.txt", &evil)]);
    let css = env.hash_blob(b"body {}\n");
    let inside = env.hash_tree(&[("100644", b"style.css", &css)]);
    let absolute = sentinel.dir.to_string_lossy().into_owned();
    // Git's tools cannot make an entry `d/x.txt` under a symlink `d`, but a tree may hold a
    // symlink `d` and a directory `d`: a writer that creates `d` first and then `d/x.txt`
    // writes through the link.
    for link in ["..", "../../outside", absolute.as_str(), "css"] {
        let link_blob = env.hash_blob(link.as_bytes());

        let push = env.push_crafted(&[
            ("120000", b"d", &link_blob),
            ("40000", b"d", &through),
            ("40000", b"css", &inside),
        ]);

        let why = "refused d: the tree holds two entries of this name";
        assert_eq!(push.final_line(), refusal(why, "blue", &live), "d -> {link}\n{push}");
        env.assert_live_unchanged(&before);
        sentinel.assert_untouched(&env);
    }
}

#[test]
fn symlink_loop_is_refused() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    env.symlink("loop-a", "loop-b");
    env.symlink("loop-b", "loop-a");
    env.commit_all("loop");

    let push = env.push();

    sentinel.assert_refused(
        &env,
        &push,
        "refused loop-a: symlink to loop-b is part of a symlink loop",
        &live,
        &before,
    );
}

#[test]
fn symlinks_none_refuses_even_a_link_inside_the_release() {
    let (env, live, before) = TestEnv::with_live_site();
    let sentinel = Sentinel::new(&env);
    env.write_config(&format!("{}symlinks = \"none\"\n", env.base_config()));
    env.symlink("latest.html", "index.html");
    env.commit_all("inside link");

    let push = env.push();

    sentinel.assert_refused(&env, &push, "refused latest.html: symlinks are not allowed (`symlinks = \"none\"` in the configuration)", &live, &before);

    // The same configuration deploys a tree without links.
    env.remove("latest.html");
    let plain = env.commit_all("no link");
    env.push().assert_live(&plain, "refs/heads/main", "green");
    env.assert_live_equals_archive(&plain);
}
