//! `install.sh`: `--site` (also as root with `--git-user`), `--demo`, and `--uninstall`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::User;

use crate::support::install::{build_release, install_sh};
use crate::support::site::{commit_version, open_temp_dir, push};
use crate::support::templates::{HUGO_TITLE, STATIC_TITLE, in_path};
use crate::support::{Cmd, LINK, TestEnv};

/// Returns the lines of install.sh's record of what it installed.
#[track_caller]
fn installed_files(prefix: &Path) -> Vec<String> {
    let manifest = prefix.join("share/pushdeploy/installed-files");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    text.lines().map(str::to_owned).collect()
}

#[test]
fn install_site_is_idempotent_and_uninstall_removes_only_what_it_installed() {
    let env = TestEnv::new();
    build_release(&env);
    let prefix = env.root.join("prefix");
    // Someone else's files in the same prefix.
    let others = [prefix.join("bin/other-tool"), prefix.join("share/other/data")];
    for path in &others {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
        fs::write(path, "not pushdeploy's\n").expect("write a foreign file");
    }
    let site_args = |command: Cmd| {
        command.args(["--site", "site", "--target"]).arg(&env.target).arg("--repos").arg(&env.root)
    };

    let first = site_args(install_sh(&env, &prefix)).success();

    let bin = prefix.join("bin/pushdeploy");
    assert!(bin.is_file(), "{} was not installed\n{first}", bin.display());
    let hook = fs::read_to_string(env.bare.join("hooks/post-receive")).expect("read the hook");
    assert!(
        hook.contains(&*bin.to_string_lossy()),
        "the hook does not run the installed binary:\n{hook}"
    );
    let stderr = first.normalized_stderr();
    assert!(
        stderr.lines().any(|line| line.starts_with("install.sh: site site: push to ssh://")
            && line.ends_with(
                "$TMP/site.git, serve $TMP/www/public_html (see site-templates/servers/)"
            )),
        "{first}"
    );
    let recorded = [bin.to_string_lossy().into_owned(), format!("site:{}", env.bare.display())];
    assert_eq!(installed_files(&prefix), recorded);

    // Again: nothing changes, nothing is recorded twice.
    let config = fs::read(env.bare.join("pushdeploy.toml")).expect("read the config");
    let second = site_args(install_sh(&env, &prefix)).success();
    assert_eq!(installed_files(&prefix), recorded, "{second}");
    assert_eq!(fs::read(env.bare.join("pushdeploy.toml")).expect("read the config"), config);

    // The site it set up deploys.
    env.clone_work();
    let a = commit_version(&env, "a");
    push(&env, &[]).assert_live(&a, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&a);
    let before = env.live_site();

    let uninstall = install_sh(&env, &prefix).arg("--uninstall").success();

    assert!(!bin.exists(), "{} is still installed\n{uninstall}", bin.display());
    assert!(!prefix.join("share/pushdeploy").exists(), "install.sh's record is left\n{uninstall}");
    for path in &others {
        assert!(path.is_file(), "{} was removed\n{uninstall}", path.display());
    }
    let said = uninstall.normalized_stderr();
    for line in [
        "install.sh: removed $TMP/prefix/bin/pushdeploy",
        "install.sh: left in place: $TMP/site.git and its target (remove them by hand if you want)",
    ] {
        assert!(said.lines().any(|said| said == line), "no line {line:?}\n{uninstall}");
    }
    assert!(env.bare.join("pushdeploy.toml").is_file(), "the site's repository was touched");
    env.assert_live_unchanged(&before);
}

/// Deletes a system user when dropped (one install.sh created for a test).
struct RemoveUserOnDrop(String);

impl Drop for RemoveUserOnDrop {
    fn drop(&mut self) {
        let status = Command::new("userdel").arg(&self.0).stderr(Stdio::null()).status();
        if !status.is_ok_and(|status| status.success()) {
            eprintln!("warning: could not delete the test user {0}; run `userdel {0}`", self.0);
        }
    }
}

// As root with --git-user, install.sh creates REPOS/NAME.git (empty, owned by the user) before
// running `pushdeploy init` on it as that user, and init refuses an existing empty directory.
#[test]
fn install_git_user_owns_the_site_and_uninstall_leaves_the_user() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("install.sh --git-user needs root");
        return;
    }
    let env = TestEnv::new();
    // The user reaches the prefix and its repositories through the temp dir.
    open_temp_dir(&env);
    build_release(&env);
    let prefix = env.root.join("prefix");
    let repos = env.root.join("git");
    let name = format!("pdinst{}", std::process::id());
    let _remove_user = RemoveUserOnDrop(name.clone());

    let install = install_sh(&env, &prefix)
        .args(["--git-user", &name, "--site", "example.com", "--target"])
        .arg(&env.target)
        .arg("--repos")
        .arg(&repos)
        .success();

    let user = User::from_name(&name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("install.sh created no user {name}\n{install}"));
    assert!(user.shell.ends_with("git-shell"), "login shell {}", user.shell.display());
    assert_eq!(user.dir, repos);
    let repo = repos.join("example.com.git");
    for path in
        [&repo, &repo.join("pushdeploy.toml"), &repo.join("hooks/post-receive"), &env.target]
    {
        let owner =
            fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).uid();
        assert_eq!(
            owner,
            user.uid.as_raw(),
            "{} is not owned by {name}\n{install}",
            path.display()
        );
    }
    let bin = prefix.join("bin/pushdeploy");
    let recorded = [
        bin.to_string_lossy().into_owned(),
        format!("user:{name}"),
        format!("site:{}", repo.display()),
    ];
    assert_eq!(installed_files(&prefix), recorded);

    let uninstall = install_sh(&env, &prefix).arg("--uninstall").success();

    assert!(!bin.exists(), "{} is still installed\n{uninstall}", bin.display());
    let expected = format!(
        "install.sh: left in place: the user {name} (remove it with 'userdel {name}' once its repositories are gone)"
    );
    assert!(uninstall.normalized_stderr().lines().any(|line| line == expected), "{uninstall}");
    assert!(User::from_name(&name).ok().flatten().is_some(), "the user was removed");
    assert!(repo.join("pushdeploy.toml").is_file(), "the site's repository was removed");
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
