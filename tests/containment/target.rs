//! Containment: target. What someone else planted in the target (a symlinked state directory,
//! slot directories pushdeploy did not make), targets that would let a deploy write where it
//! must not (`/`, a home directory, the repository), and a umask that lets every user write.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::support::{LINK, Output, TestEnv, Tree, assert_trees_equal, toml_str};

/// Returns the names in a directory, sorted.
#[track_caller]
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Returns the permission bits of `path`.
#[track_caller]
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode()
        & 0o7777
}

/// Runs `pushdeploy doctor --repo BARE`; returns its exit code and its lines, with the temp
/// dir written `$TMP`.
#[track_caller]
fn doctor(env: &TestEnv) -> (Option<i32>, Vec<String>) {
    let output = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).output();
    let root = env.root.to_string_lossy();
    (output.code(), output.stdout.lines().map(|line| line.replace(&*root, "$TMP")).collect())
}

/// Commits `index.html` saying `version`; returns the commit.
#[track_caller]
fn commit_version(env: &TestEnv, version: &str) -> String {
    env.write("index.html", format!("{version}\n"));
    env.commit_all(version)
}

/// A directory outside the target holding files a deploy must never touch.
struct Outside {
    dir: PathBuf,
    before: Tree,
}

impl Outside {
    /// Makes `ROOT/outside` with a file at the top and in each state subdirectory's name, so a
    /// deploy that followed a link into it would find something to delete or overwrite.
    fn new(env: &TestEnv) -> Outside {
        let dir = env.root.join("outside");
        for sub in ["", "trash", "releases", "parked", "cache", "slots"] {
            fs::create_dir_all(dir.join(sub)).expect("create the outside directory");
            fs::write(dir.join(sub).join("keep.txt"), "keep\n").expect("write a sentinel file");
        }
        Outside { before: env.snapshot_tree(&dir), dir }
    }

    #[track_caller]
    fn assert_untouched(&self, env: &TestEnv, context: &str) {
        let after = env.snapshot_tree(&self.dir);
        assert!(after == self.before, "{context}: the outside directory changed");
        assert_trees_equal(&self.before, &after);
    }
}

#[test]
fn symlinked_state_directory_is_refused_and_what_it_points_at_is_untouched() {
    // A `TARGET/.pushdeploy` symlink was followed: the deploy emptied `trash/` in the directory
    // it pointed at and wrote its lock, history and records there.
    let (env, _, before) = TestEnv::with_live_site();
    let outside = Outside::new(&env);
    let state = env.target.join(".pushdeploy");
    let kept = env.root.join("state-kept");
    fs::rename(&state, &kept).expect("move the state directory away");
    std::os::unix::fs::symlink(&outside.dir, &state).expect("plant the symlink");
    commit_version(&env, "v2");

    let push = env.push();

    assert_eq!(
        push.pushdeploy_lines(),
        [
            "pushdeploy: error: cannot set up pushdeploy's state directory: $TMP/www/.pushdeploy \
             is a symlink, not a directory; pushdeploy does not follow it",
            "pushdeploy: hint: move $TMP/www/.pushdeploy away, and pushdeploy makes a real \
             directory there at the next deploy (or put back the one that was there)",
        ],
        "{push}"
    );
    outside.assert_untouched(&env, ".pushdeploy -> outside");
    let (code, lines) = doctor(&env);
    assert_eq!(code, Some(3), "{lines:#?}");
    let problem = "problem  $TMP/www/.pushdeploy is a symlink, not a directory; pushdeploy does \
                   not follow it; move $TMP/www/.pushdeploy away, and pushdeploy makes a real \
                   directory there at the next deploy (or put back the one that was there)";
    assert!(lines.iter().any(|line| line == problem), "no {problem:?} in {lines:#?}");
    outside.assert_untouched(&env, "doctor");
    fs::remove_file(&state).expect("remove the symlink");
    fs::rename(&kept, &state).expect("put the state directory back");
    env.assert_live_unchanged(&before);

    // The same for each directory pushdeploy makes inside it.
    for sub in ["trash", "releases", "parked", "cache", "slots"] {
        let path = state.join(sub);
        let aside = env.root.join(format!("{sub}-kept"));
        if fs::symlink_metadata(&path).is_ok() {
            fs::rename(&path, &aside).expect("move the subdirectory away");
        }
        std::os::unix::fs::symlink(outside.dir.join(sub), &path).expect("plant the symlink");
        commit_version(&env, &format!("v2 with {sub}"));

        let push = env.push();

        assert_eq!(
            push.pushdeploy_lines(),
            [
                format!(
                    "pushdeploy: error: cannot set up pushdeploy's state directory: \
                     $TMP/www/.pushdeploy/{sub} is a symlink, not a directory; pushdeploy does \
                     not follow it"
                ),
                format!(
                    "pushdeploy: hint: move $TMP/www/.pushdeploy/{sub} away, and pushdeploy \
                     makes a real directory there at the next deploy (or put back the one that \
                     was there)"
                ),
            ],
            "{sub}\n{push}"
        );
        outside.assert_untouched(&env, sub);
        env.assert_live_unchanged(&before);
        fs::remove_file(&path).expect("remove the symlink");
        if fs::symlink_metadata(&aside).is_ok() {
            fs::rename(&aside, &path).expect("put the subdirectory back");
        }
    }

    let v3 = commit_version(&env, "v3");
    env.push().assert_live(&v3, "refs/heads/main", "green");
    outside.assert_untouched(&env, "after a normal deploy");
}

/// Returns the one entry of `target` named `SLOT.moved-aside-<UTC time>`, checking the time's
/// shape.
#[track_caller]
fn moved_aside(target: &Path, slot: &str) -> String {
    let prefix = format!("{slot}.moved-aside-");
    let found: Vec<String> =
        names(target).into_iter().filter(|name| name.starts_with(&prefix)).collect();
    assert_eq!(found.len(), 1, "{slot}: {found:?} in {:?}", names(target));
    let stamp = &found[0][prefix.len()..];
    assert!(
        stamp.len() == 16
            && stamp.ends_with('Z')
            && stamp.chars().nth(8) == Some('T')
            && stamp.chars().filter(char::is_ascii_digit).count() == 14,
        "{stamp:?} is not a time such as 20260102T030405Z"
    );
    found[0].clone()
}

/// Asserts the deploy said, in one line, that it moved `slot` aside to `moved`.
#[track_caller]
fn assert_said_moved(push: &Output, slot: &str, moved: &str) {
    let line = format!(
        "pushdeploy: moved $TMP/www/{slot} aside to $TMP/www/{moved}: pushdeploy did not create \
         it, and deletes only what it created"
    );
    assert!(push.pushdeploy_lines().contains(&line), "no line {line:?}\n{push}");
}

#[test]
fn slot_directories_pushdeploy_did_not_create_are_moved_aside_not_deleted() {
    // A target that already held `blue/` and `green/` had both deleted by the first two deploys,
    // without a word.
    let env = TestEnv::new();
    for slot in ["blue", "green"] {
        fs::create_dir_all(env.target.join(slot).join("sub")).expect("create a foreign slot");
        fs::write(env.target.join(slot).join("sub/mine.txt"), format!("{slot} is mine\n"))
            .expect("write a file in it");
    }
    let blue = env.snapshot_tree(env.target.join("blue"));
    let green = env.snapshot_tree(env.target.join("green"));
    env.init(&[]);

    let v1 = commit_version(&env, "v1");
    let push = env.push();
    push.assert_live(&v1, "refs/heads/main", "blue");
    let blue_aside = moved_aside(&env.target, "blue");
    assert_said_moved(&push, "blue", &blue_aside);

    let v2 = commit_version(&env, "v2");
    let push = env.push();
    push.assert_live(&v2, "refs/heads/main", "green");
    let green_aside = moved_aside(&env.target, "green");
    assert_said_moved(&push, "green", &green_aside);
    assert_trees_equal(&blue, &env.snapshot_tree(env.target.join(&blue_aside)));
    assert_trees_equal(&green, &env.snapshot_tree(env.target.join(&green_aside)));

    // From here on both slots are pushdeploy's own: retired as before, nothing more moved.
    for (version, slot) in [("v3", "blue"), ("v4", "green"), ("v5", "blue")] {
        let commit = commit_version(&env, version);
        let push = env.push();
        push.assert_live(&commit, "refs/heads/main", slot);
        assert!(!push.stderr.contains("moved"), "{push}");
        env.assert_live_equals_archive(&commit);
        env.assert_no_idle_slot();
        let expected: BTreeSet<String> =
            [".pushdeploy", slot, LINK, &blue_aside, &green_aside].map(str::to_owned).into();
        assert_eq!(names(&env.target), expected, "{version}");
    }
    assert_trees_equal(&blue, &env.snapshot_tree(env.target.join(&blue_aside)));
    assert_trees_equal(&green, &env.snapshot_tree(env.target.join(&green_aside)));
}

#[test]
fn live_slot_set_up_by_hand_is_moved_aside_at_retire_not_deleted() {
    // A hand-made `public_html -> blue` that pushdeploy took over had `blue/` deleted by the
    // retire step of the first deploy.
    let env = TestEnv::new();
    fs::create_dir_all(env.target.join("blue")).expect("create the hand-made release");
    fs::write(env.target.join("blue/index.html"), "by hand\n").expect("write its page");
    std::os::unix::fs::symlink("blue", env.target.join(LINK)).expect("link it");
    let blue = env.snapshot_tree(env.target.join("blue"));
    env.init(&[]);

    let v1 = commit_version(&env, "v1");
    let push = env.push();

    push.assert_live(&v1, "refs/heads/main", "green");
    let aside = moved_aside(&env.target, "blue");
    assert_said_moved(&push, "blue", &aside);
    assert_trees_equal(&blue, &env.snapshot_tree(env.target.join(&aside)));
    env.assert_live_equals_archive(&v1);

    let v2 = commit_version(&env, "v2");
    env.push().assert_live(&v2, "refs/heads/main", "blue");
    let v3 = commit_version(&env, "v3");
    env.push().assert_live(&v3, "refs/heads/main", "green");
    env.assert_no_idle_slot();
    assert_trees_equal(&blue, &env.snapshot_tree(env.target.join(&aside)));
}

/// The targets init must refuse, each with the reason its error gives.
fn traps(env: &TestEnv) -> Vec<(PathBuf, String)> {
    let home = env.root.join("home");
    vec![
        (PathBuf::from("/"), "/ is the root directory".to_owned()),
        (PathBuf::from("/tmp/.."), "/tmp/.. is the root directory".to_owned()),
        (home.clone(), "$TMP/home is the home directory of this user".to_owned()),
        (env.bare.clone(), "$TMP/site.git is the repository itself".to_owned()),
        (
            env.bare.join("www"),
            "$TMP/site.git/www is inside the repository $TMP/site.git".to_owned(),
        ),
    ]
}

/// Returns the error of a refused `target`.
fn target_error(reason: &str) -> String {
    format!(
        "`target`: {reason}; give the site a directory of its own, such as /srv/www/example.com"
    )
}

#[test]
fn targets_that_are_root_home_or_the_repository_are_refused_by_init_deploy_and_doctor() {
    // `init --target /`, `--target $HOME`, the repository or a directory inside it were accepted
    // silently, and `doctor` said "no problems found".
    let env = TestEnv::new();
    for (target, reason) in traps(&env) {
        let init = env.pushdeploy().arg("init").arg(&env.bare).arg("--target").arg(&target);

        let init = init.failure();

        assert_eq!(init.code(), Some(2), "{}\n{init}", target.display());
        assert_eq!(
            init.pushdeploy_lines(),
            [
                format!("pushdeploy: error: invalid option: {}", target_error(&reason)),
                "pushdeploy: hint: see `pushdeploy init --help`".to_owned(),
            ],
            "{init}"
        );
        assert!(!env.bare.exists(), "{}: init created the repository", target.display());
    }
    // A repository inside the target where pushdeploy would write (a slot, the link, its
    // state) would be moved aside or replaced by a deploy.
    for name in ["blue", "green", LINK, ".pushdeploy"] {
        let repo = env.target.join(name);
        let init = env.pushdeploy().arg("init").arg(&repo).arg("--target").arg(&env.target);

        let init = init.failure();

        assert_eq!(init.code(), Some(2), "{name}\n{init}");
        let reason = format!(
            "$TMP/www holds the repository $TMP/www/{name} at `{name}`, a name pushdeploy \
             writes to; move the repository elsewhere or choose another target"
        );
        assert_eq!(
            init.pushdeploy_lines().first(),
            Some(&format!("pushdeploy: error: invalid option: `target`: {reason}")),
            "{init}"
        );
        assert!(!repo.exists(), "{name}: init created the repository");
    }

    // A hand-edited configuration fails every deploy and doctor with the same error.
    env.init(&[]);
    let v1 = commit_version(&env, "v1");
    env.push().assert_live(&v1, "refs/heads/main", "blue");
    let before = env.live_site();
    for (target, reason) in traps(&env) {
        let config = env.base_config().replace(
            &format!("target = {}", toml_str(&env.target.to_string_lossy())),
            &format!("target = {}", toml_str(&target.to_string_lossy())),
        );
        env.write_config(&config);
        commit_version(&env, &format!("to {}", target.display()));

        let push = env.push();

        let error = format!("$TMP/site.git/pushdeploy.toml: line 2: {}", target_error(&reason));
        assert_eq!(
            push.pushdeploy_lines(),
            [
                format!("pushdeploy: error: {error}"),
                "pushdeploy: hint: fix $TMP/site.git/pushdeploy.toml and try again".to_owned(),
            ],
            "{push}"
        );
        env.assert_live_unchanged(&before);
        let (code, lines) = doctor(&env);
        assert_eq!(code, Some(3), "{lines:#?}");
        let problem = format!("problem  {error}; fix $TMP/site.git/pushdeploy.toml and try again");
        assert!(lines.contains(&problem), "no {problem:?} in {lines:#?}");
        assert_eq!(lines.last().map(String::as_str), Some("1 problem to fix"), "{lines:#?}");
    }
    for path in ["/blue", "/green", "/.pushdeploy"] {
        assert!(fs::symlink_metadata(path).is_err(), "{path} exists");
    }
    env.write_config(&env.base_config());
    let v2 = commit_version(&env, "v2");
    env.push().assert_live(&v2, "refs/heads/main", "green");
}

#[test]
fn repository_inside_the_target_under_its_own_name_is_allowed_and_left_alone() {
    // The counterpart of the trap above: pushdeploy writes only blue/, green/, the link and
    // .pushdeploy/ in the target, so a repository beside them is safe, and a non-empty target is
    // fine since nothing pushdeploy did not create is ever deleted.
    let mut env = TestEnv::new();
    env.bare = env.target.join("site.git");
    fs::create_dir_all(&env.target).expect("create the target");
    fs::write(env.target.join("README.txt"), "the operator's notes\n").expect("write a file");
    env.init(&[]);
    for (version, slot) in [("v1", "blue"), ("v2", "green"), ("v3", "blue")] {
        let commit = commit_version(&env, version);
        env.push().assert_live(&commit, "refs/heads/main", slot);
    }
    let expected: BTreeSet<String> =
        [".pushdeploy", "blue", LINK, "README.txt", "site.git"].map(str::to_owned).into();
    assert_eq!(names(&env.target), expected);
    let fsck = env.git_in(&env.bare).args(["fsck", "--no-progress"]).success();
    assert_eq!(fsck.stdout, "", "{fsck}");
    assert_eq!(
        fs::read_to_string(env.target.join("README.txt")).unwrap(),
        "the operator's notes\n"
    );
}

#[test]
fn umask_that_lets_every_user_write_is_refused_unless_the_config_says_so() {
    // `umask = "000"` published world-writable releases without a word.
    let env = TestEnv::new();
    let refused = "`umask`: \"000\" lets every user write into the releases; use a umask that \
                   keeps others from writing, such as \"022\", or add `world_writable = true` if \
                   every user of this machine may change the site";
    let init = env.init_cmd(&["--umask", "000"]).failure();
    assert_eq!(init.code(), Some(2), "{init}");
    assert_eq!(
        init.pushdeploy_lines(),
        [
            format!("pushdeploy: error: invalid option: {refused}"),
            "pushdeploy: hint: see `pushdeploy init --help`".to_owned(),
        ],
        "{init}"
    );
    assert!(!env.bare.exists(), "init created the repository");

    // Asked for explicitly: allowed, warned about at each deploy and by doctor, and done.
    env.init(&["--umask", "000", "--world-writable"]);
    let config = fs::read_to_string(env.bare.join("pushdeploy.toml")).expect("read the config");
    assert!(config.contains("umask = \"000\"\nworld_writable = true\n"), "{config}");
    let warning = "pushdeploy: warning: umask 000 with `world_writable = true` in \
                   $TMP/site.git/pushdeploy.toml: every user of this machine can change the \
                   releases";
    for (version, slot) in [("v1", "blue"), ("v2", "green")] {
        env.write_exec("bin/run.sh", "#!/bin/sh\n");
        let commit = commit_version(&env, version);
        let push = env.push();
        push.assert_live(&commit, "refs/heads/main", slot);
        let lines = push.pushdeploy_lines();
        assert_eq!(lines.iter().filter(|line| *line == warning).count(), 1, "{push}");
        let live = env.live_dir();
        assert_eq!(mode_of(&live), 0o777, "the slot itself");
        assert_eq!(mode_of(&live.join("index.html")), 0o666);
        assert_eq!(mode_of(&live.join("bin")), 0o777);
        assert_eq!(mode_of(&live.join("bin/run.sh")), 0o777);
    }
    let (code, lines) = doctor(&env);
    assert_eq!(code, Some(0), "{lines:#?}");
    let line = "warning  umask 000 with `world_writable = true`: every user of this machine can \
                change the releases; remove `world_writable` and use a umask such as \"022\" \
                unless that is what you want";
    assert!(lines.iter().any(|l| l == line), "no {line:?} in {lines:#?}");

    // Without the key the same umask fails the deploy at the config, and doctor says so.
    let before = env.live_site();
    let text = config.replace("world_writable = true\n", "");
    env.write_config(&text);
    commit_version(&env, "v3");
    let push = env.push();
    let line = text.lines().position(|line| line.starts_with("umask")).unwrap() + 1;
    let error = format!("$TMP/site.git/pushdeploy.toml: line {line}: {refused}");
    assert_eq!(
        push.pushdeploy_lines(),
        [
            format!("pushdeploy: error: {error}"),
            "pushdeploy: hint: fix $TMP/site.git/pushdeploy.toml and try again".to_owned(),
        ],
        "{push}"
    );
    env.assert_live_unchanged(&before);
    let (code, lines) = doctor(&env);
    assert_eq!(code, Some(3), "{lines:#?}");
    let problem = format!("problem  {error}; fix $TMP/site.git/pushdeploy.toml and try again");
    assert!(lines.contains(&problem), "no {problem:?} in {lines:#?}");
}
