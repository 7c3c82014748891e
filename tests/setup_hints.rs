//! Where an operator setting a server up was stuck: root looking at the git user's site, a
//! target root made, a binary that moved, a configuration with several errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::site::commit_version;
use crate::support::user::TestUser;
use crate::support::{BIN, TestEnv, short};

/// Returns stderr with the temp dir as `$TMP` and the test user's name as `USER`.
fn said(output: &crate::support::Output, user: &TestUser) -> String {
    output.normalized_stderr().replace(&user.name, "USER").replace(&user.uid.to_string(), "UID")
}

#[test]
fn root_reads_the_git_users_site_and_is_told_how_to_deploy_it() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("the test makes a second user, which needs root");
        return;
    }
    let env = TestEnv::new();
    let user = TestUser::create(&env, "pdhint");
    let env = env.owned_by(user.uid, user.gid);
    env.init(&[]);
    let a = commit_version(&env, "a");
    env.push().assert_live(&a, "refs/heads/main", "blue");

    // Before: `not owned by current user`, and a hint to pass the --repo that was passed.
    let status = env.root_command(BIN).args(["status", "--repo"]).arg(&env.bare).success();
    assert!(status.stdout.contains(&format!("commit: {}", short(&a))), "{status}");
    let log = env.root_command(BIN).args(["log", "--repo"]).arg(&env.bare).success();
    assert!(log.stdout.contains(&format!("  #1    {}  live ", short(&a))), "{log}");
    let show = env.root_command(BIN).args(["show", "1", "--repo"]).arg(&env.bare).success();
    assert!(show.stdout.starts_with("pushdeploy: deploying "), "{show}");

    let doctor = env.root_command(BIN).args(["doctor", "--repo"]).arg(&env.bare).output();
    let report =
        doctor.stdout.replace(&*env.root.to_string_lossy(), "$TMP").replace(&user.name, "USER");
    assert!(
        report.contains(
            "ok       target $TMP/www is owned by USER, who owns the repository and runs the hook\n"
        ),
        "{doctor}"
    );
    assert!(
        !report.contains("not by this user"),
        "root's doctor judged the state as root's: {doctor}"
    );

    let deploy = env.root_command(BIN).args(["deploy", "--repo"]).arg(&env.bare).failure();

    assert_eq!(
        said(&deploy, &user),
        "pushdeploy: error: $TMP/site.git is owned by USER (uid UID), not by this user (root, uid 0); \
         pushdeploy acts on a repository only as its owner, who runs the deploys\n\
         pushdeploy: hint: run it as USER: sudo -u USER pushdeploy deploy --repo $TMP/site.git\n"
    );
    let elsewhere =
        env.root_command(BIN).args(["deploy", "--repo"]).arg(env.root.join("nothing")).failure();
    let hints: Vec<&str> = elsewhere.stderr.lines().filter(|line| line.contains("hint:")).collect();
    assert!(hints.iter().all(|hint| !hint.contains("pass --repo")), "{elsewhere}");
}

#[test]
fn a_target_root_made_names_its_owner_and_the_chown() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("the test makes a second user, which needs root");
        return;
    }
    let env = TestEnv::new();
    let user = TestUser::create(&env, "pdtgt");
    let env = env.owned_by(user.uid, user.gid);
    env.init(&[]);
    // Root made the target (mkdir as root): the git user cannot write in it.
    let _ = fs::remove_dir(&env.target);
    fs::create_dir(&env.target).expect("mkdir the target as root");
    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o755)).expect("chmod");
    let _ = commit_version(&env, "a");

    let push = env.push();

    // Before: "cannot set up pushdeploy's state directory: …: Permission denied", hint "move
    // away whatever is there" (nothing was there).
    assert_eq!(
        push.pushdeploy_lines()
            .join("\n")
            .replace(&user.name, "USER")
            .replace(&user.uid.to_string(), "UID"),
        "pushdeploy: error: target $TMP/www is owned by root (uid 0) and this user (USER, uid UID) cannot write in it, so pushdeploy cannot create $TMP/www/.pushdeploy\n\
         pushdeploy: hint: give it to the user that deploys: as root, `chown USER: $TMP/www`",
        "{push}"
    );
    let doctor = env.root_command(BIN).args(["doctor", "--repo"]).arg(&env.bare).output();
    let report =
        doctor.stdout.replace(&*env.root.to_string_lossy(), "$TMP").replace(&user.name, "USER");
    assert!(
        report.contains(
            "problem  target $TMP/www is owned by root, but the hook runs as USER (the repository's owner); \
             run `chown -R USER: $TMP/www` as root\n"
        ),
        "{doctor}"
    );
}

#[test]
fn init_without_target_rewrites_hooks_for_a_moved_binary_and_doctor_says_so() {
    let env = TestEnv::new();
    env.init(&["--build", "true", "--no-publish"]);
    // The operator's own comments in the configuration.
    let config = env.bare.join("pushdeploy.toml");
    let text = fs::read_to_string(&config).expect("read the config");
    fs::write(&config, format!("# the shop's site; ask Bob\n{text}")).expect("write the config");
    // The binary moves: the hook names a path that is gone.
    let moved = env.root.join("bin/pushdeploy");
    fs::create_dir_all(moved.parent().expect("a parent")).expect("mkdir bin");
    fs::copy(BIN, &moved).expect("copy the binary");
    let hook = env.bare.join("hooks/post-receive");
    let gone = env.root.join("old/pushdeploy");
    let old_hook = fs::read_to_string(&hook).expect("read the hook");
    fs::write(&hook, old_hook.replace(BIN, &gone.to_string_lossy())).expect("write the hook");

    let doctor = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).output();
    assert_eq!(doctor.code(), Some(3));
    let root = env.root.to_string_lossy();
    assert!(
        doctor.stdout.replace(&*root, "$TMP").contains(
            "problem  the hook runs $TMP/old/pushdeploy, which is missing or not executable; \
             run `pushdeploy init $TMP/site.git` with the pushdeploy the hook should run \
             (it keeps pushdeploy.toml as it is and rewrites the hooks)\n"
        ),
        "{doctor}"
    );

    // What doctor says works: the configuration is kept byte for byte, the hook rewritten.
    let kept = fs::read(&config).expect("read the config");
    let _ = env.command(&moved).arg("init").arg(&env.bare).success();
    assert_eq!(fs::read(&config).expect("read the config"), kept);
    assert!(fs::read_to_string(&hook).expect("read the hook").contains(&*moved.to_string_lossy()));
    let doctor = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).output();
    assert!(doctor.stdout.ends_with("no problems found\n"), "{doctor}");

    // With --target too: a configuration that differs only in comments is no reason to refuse.
    let _ = env
        .command(BIN)
        .arg("init")
        .arg(&env.bare)
        .arg("--target")
        .arg(&env.target)
        .args(["--build", "true", "--no-publish"])
        .success();
    assert_eq!(fs::read(&config).expect("read the config"), kept);
    assert!(fs::read_to_string(&hook).expect("read the hook").contains(BIN));
}

#[test]
fn doctor_reports_every_error_of_the_configuration() {
    let env = TestEnv::new();
    env.init(&[]);
    let config = env.bare.join("pushdeploy.toml");
    let text = fs::read_to_string(&config).expect("read the config");
    fs::write(&config, format!("{text}umask = \"000\"\nbogus = 1\nsymlinks = \"outside\"\n"))
        .expect("write");

    let doctor = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).output();

    let root = env.root.to_string_lossy();
    let lines: Vec<String> =
        doctor.stdout.lines().map(|line| line.replace(&*root, "$TMP")).collect();
    let problems: Vec<&String> = lines.iter().filter(|line| line.starts_with("problem ")).collect();
    assert_eq!(problems.len(), 3, "{doctor}");
    for wanted in [
        "`umask`: \"000\" lets every user write",
        "unknown field `bogus`",
        "unknown variant `outside`",
    ] {
        assert!(problems.iter().any(|line| line.contains(wanted)), "no {wanted:?}: {doctor}");
    }
    assert!(
        lines.contains(&"warning  the checks below read $TMP/site.git/pushdeploy.toml without the lines above; fix them, and run doctor again".to_owned()),
        "{doctor}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("ok       $TMP/site.git/hooks/post-receive is installed")),
        "{doctor}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("3 problems to fix"));
}
