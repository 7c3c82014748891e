//! An app deployed by a git user who is not root, as in production: the git user owns the
//! repository and the target, root runs `init --app`, which writes the git user's sudoers
//! drop-in (into the namespace's private `/etc/sudoers.d`, support::systemd), and every push
//! runs as the git user inside a real systemd, reaching `systemctl` and `journalctl` through
//! `sudo -n`: the instances, their journal on a failed gate, the `release` unit and its output. The git user may run exactly those command lines and nothing else; the app's user
//! can write none of the releases, the hooks or the repository.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::app::{AppSite, ENV_DIR, SUDOERS_DIR};
use crate::support::user::TestUser;
use crate::support::{BIN, TestEnv};

/// What sudo says when the rules do not allow a command line (and `-n` forbids asking).
const REFUSED: &str = "sudo: a password is required";

/// The app's `release`: fails (status 1) for a commit that has a file `fail-release`.
const RELEASE: &str = "test ! -e fail-release && echo \"migrated $PUSHDEPLOY_COMMIT\"";

#[test]
fn a_git_user_deploys_the_app_through_sudo_and_may_run_nothing_else() {
    let init = ["--app-release", RELEASE];
    let Some(site) = AppSite::with_git_user("pdperm1-", "pdgit1-", &init) else { return };
    let git = site.git_user.as_ref().expect("the git user");
    let drop_in = site.systemd.host_path(format!("{SUDOERS_DIR}/pushdeploy-www"));
    let meta = fs::metadata(&drop_in).expect("init wrote the drop-in in the namespace");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o440));
    let rules = fs::read_to_string(&drop_in).expect("read the drop-in");
    eprintln!("the drop-in init wrote:\n{rules}");
    assert!(rules.contains(&format!("\n{} ALL=(root) NOPASSWD: PUSHDEPLOY_WWW\n", git.name)));
    assert!(!Path::new("/etc/sudoers.d/pushdeploy-www").exists(), "the machine's sudoers changed");
    let listed =
        site.systemd.run_as_root(&site.env, "sudo").args(["-l", "-U", &git.name]).success();
    eprintln!("sudo -l -U {}:\n{}", git.name, listed.stdout);
    assert!(listed.stdout.contains("/usr/bin/systemctl restart pushdeploy-www@blue.service"));

    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    assert!(first.stderr.contains("health gate: pushdeploy-www@blue.service answered HTTP 200"));
    site.assert_serves(site.blue, &a);
    let b = site.commit("ok", "b");
    let started = Instant::now();
    let second = site.push();
    eprintln!("a deploy as the git user (through sudo) took {:?}", started.elapsed());
    second.assert_live(&b, "refs/heads/main", "green");
    assert!(second.stderr.contains("stopped the old instance pushdeploy-www@blue.service"));
    // The release unit ran, and its journal reached the pusher through sudo.
    assert!(second.stderr.contains(&format!("pushdeploy: release: migrated {b}")), "{second}");
    assert_eq!(site.state("blue"), "inactive");
    site.assert_serves(site.green, &b);
    let history = fs::metadata(site.env.target.join(".pushdeploy")).expect("stat the state");
    assert_eq!(history.uid(), git.uid, "the state is the git user's");

    // A crash on boot: the journal's tail reaches the pusher through sudo's journalctl rule.
    let _ = site.commit("crash", "crash");
    let started = Instant::now();
    let crash = site.push();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}\n{crash}");
    assert!(
        crash.final_line().starts_with("pushdeploy: failed at activate: health gate: "),
        "{crash}"
    );
    assert!(
        crash.stderr.contains("pushdeploy: pushdeploy-www@blue.service: ")
            && crash.stderr.contains("this commit crashes on boot"),
        "the journal's tail is not shown\n{crash}"
    );
    assert!(!crash.stderr.contains("sudo:"), "{crash}");
    site.assert_serves(site.green, &b);

    // A release that fails: how its run ended (systemctl show) reaches the pusher too.
    site.env.write("fail-release", "");
    let _ = site.commit("ok", "failing release");
    let failed = site.push();
    let line = failed.final_line();
    assert!(line.starts_with("pushdeploy: failed at release: "), "{failed}");
    assert!(line.contains("exited with status 1"), "{line}");
    assert!(!failed.stderr.contains("sudo:"), "{failed}");
    site.env.remove("fail-release");
    site.assert_serves(site.green, &b);

    assert_git_user_may_run_only_the_rules(&site);
    assert_app_user_cannot_write(&site);

    // Without the drop-in, the pusher is told what to run; the old instance keeps serving.
    fs::remove_file(&drop_in).expect("remove the drop-in");
    let _ = site.commit("ok", "c");
    let refused = site.push();
    eprintln!("a push without the drop-in:\n{}", refused.normalized_stderr());
    let line = refused.final_line();
    assert!(line.starts_with("pushdeploy: failed at release: "), "{refused}");
    assert!(line.contains("sudo: a password is required"), "{line}");
    assert!(line.contains("run `pushdeploy init --app` again as root"), "{line}");
    assert!(
        line.ends_with(
            "as root, run `pushdeploy init --app` again (it writes the sudo rules), then push again"
        ),
        "{line}"
    );
    site.assert_serves(site.green, &b);
}

/// Asserts sudo refuses the git user every command line but the drop-in's own: other units,
/// other verbs, added arguments, and journalctl for anything but one invocation.
#[track_caller]
fn assert_git_user_may_run_only_the_rules(site: &AppSite) {
    let sudo = |args: &[&str]| site.systemd.run(&site.env, "sudo").arg("-n").args(args);
    let allowed = sudo(&["systemctl", "show", "-p", "ActiveState,SubState,NRestarts"])
        .arg("pushdeploy-www@green.service")
        .success();
    assert!(allowed.stdout.contains("ActiveState=active"), "{allowed}");
    let invocation = "0123456789abcdef0123456789abcdef";
    let field = format!("_SYSTEMD_INVOCATION_ID={invocation}");
    let journal = ["journalctl", "--no-pager", "-o", "cat", "-n", "20"];
    let _ = sudo(&journal).arg(&field).success();
    let refused: &[&[&str]] = &[
        &["systemctl", "start", "ssh.service"],
        &["systemctl", "restart", "pushdeploy-other@blue.service"],
        &["systemctl", "stop", "pushdeploy-www@blue.service", "ssh.service"],
        &["systemctl", "stop", "pushdeploy-www@blue.service", "--no-block"],
        &["systemctl", "kill", "pushdeploy-www@green.service"],
        &["systemctl", "show", "-p", "ExecStart", "pushdeploy-www@green.service"],
        &["systemctl", "daemon-reload"],
        &["journalctl", "-u", "ssh.service"],
        &["journalctl", "--no-pager", "-o", "cat", "-n", "20", &field, "-u", "ssh.service"],
        &["journalctl", "--no-pager", "-o", "cat", "-n", "2000", &field],
        &["journalctl", "--no-pager", "-o", "cat", "-n", "20", "_SYSTEMD_INVOCATION_ID=x"],
        &["sh", "-c", "id"],
    ];
    for args in refused {
        let output = sudo(args).failure();
        assert!(output.stderr.contains(REFUSED), "sudo -n {args:?} was not refused\n{output}");
    }
}

/// Asserts the app's user gets `EACCES` writing the live release, the hooks, the repository
/// or the app's environment, and can write `shared/` (so the attempts did run as it).
#[track_caller]
fn assert_app_user_cannot_write(site: &AppSite) {
    let (env, user) = (&site.env, &site.user);
    let as_app_user = |script: &str, path: &Path| {
        env.root_command("setpriv")
            .args([format!("--reuid={}", user.uid), format!("--regid={}", user.gid)])
            .args(["--clear-groups", "sh", "-c", script, "sh"])
            .arg(path)
    };
    let live = env.target.join("green");
    let bare = &env.bare;
    for path in [live.join("app.py"), bare.join("hooks/post-receive"), bare.join("pushdeploy.toml")]
    {
        let output = as_app_user("printf x >>\"$1\"", &path).failure();
        assert!(output.stderr.contains("Permission denied"), "{}: {output}", path.display());
    }
    for dir in [live, env.target.clone(), bare.join("hooks"), bare.join("refs/heads"), bare.clone()]
    {
        let output = as_app_user(": >\"$1/pdtest-new\"", &dir).failure();
        assert!(output.stderr.contains("Permission denied"), "{}: {output}", dir.display());
    }
    // The environment files: the app's group may read [app.env] and the secrets, not write
    // them; the git user (whose builds run pushed code) may not even read them. Inside the
    // namespace, where they are.
    let as_user = |user: &TestUser, script: &str, name: &str| {
        let path = Path::new(ENV_DIR).join(name);
        site.systemd
            .run_as_root(env, "setpriv")
            .args([format!("--reuid={}", user.uid), format!("--regid={}", user.gid)])
            .args(["--init-groups", "sh", "-c", script, "sh"])
            .arg(path)
    };
    let _ = as_user(user, "cat \"$1\" >/dev/null", "secrets.env").success();
    for name in ["env", "secrets.env", "blue.env"] {
        let output = as_user(user, "printf x >>\"$1\"", name).failure();
        assert!(output.stderr.contains("Permission denied"), "{name}: {output}");
    }
    let git_user = site.git_user.as_ref().expect("the git user");
    for name in ["env", "secrets.env"] {
        let output = as_user(git_user, "cat \"$1\"", name).failure();
        assert!(output.stderr.contains("Permission denied"), "{name}: {output}");
    }
    let output = as_user(git_user, "ln -sf /etc/shadow \"$1\"", "blue.env").failure();
    assert!(output.stderr.contains("Permission denied"), "{output}");
    let _ = as_app_user(": >\"$1/written-by-the-app\"", &env.target.join("shared")).success();
}

/// A git user of its own, an app user, and their repository and target, set up as an operator
/// would before running `init --app` as root; the sudoers directory is the test's own.
struct Operator {
    env: TestEnv,
    app_user: TestUser,
    git_user: TestUser,
    sudoers: std::path::PathBuf,
    /// Root's, for `--env-dir` (the test's directory is the git user's).
    etc: tempfile::TempDir,
}

impl Operator {
    fn new(prefix: &str) -> Operator {
        let env = TestEnv::new();
        fs::set_permissions(&env.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
        let app_user = TestUser::create(&env, &format!("{prefix}a-"));
        let git_user = TestUser::create(&env, &format!("{prefix}g-"));
        let env = env.owned_by(git_user.uid, git_user.gid);
        let _ = env.command("git").args(["init", "--quiet", "--bare"]).arg(&env.bare).success();
        let _ = env.command("mkdir").arg(&env.target).success();
        let sudoers = env.root.join("sudoers.d");
        fs::create_dir(&sudoers).expect("create the sudoers directory");
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o755)).expect("chmod");
        let etc = tempfile::TempDir::new().expect("a directory of root's");
        Operator { env, app_user, git_user, sudoers, etc }
    }

    /// Returns `init --app` run as root with the test's unit and sudoers directories.
    fn init(&self) -> crate::support::Cmd {
        self.env
            .root_command(BIN)
            .arg("init")
            .arg(&self.env.bare)
            .arg("--target")
            .arg(&self.env.target)
            .args(["--app", "--app-command", "run", "--ports", "8001,8002", "--app-user"])
            .arg(&self.app_user.name)
            .arg("--unit-dir")
            .arg(self.env.root.join("units"))
            .arg("--sudoers-dir")
            .arg(&self.sudoers)
            .arg("--env-dir")
            .arg(self.etc.path().join("pushdeploy/www"))
    }
}

#[test]
fn init_app_writes_the_git_users_rules_checked_once_and_refuses_what_it_cannot_check() {
    if !Path::new("/usr/sbin/visudo").exists() {
        crate::support::skip("no /usr/sbin/visudo (Debian's sudo package)");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("init --app for a git user needs root");
        return;
    }
    let op = Operator::new("pdperm2");
    let drop_in = op.sudoers.join("pushdeploy-www");
    let git = &op.git_user.name;

    // visudo missing: init refuses before it writes anything at all.
    let output = op.init().env("PATH", "/nonexistent").failure();
    assert!(output.stderr.contains("visudo is not installed"), "{output}");
    assert!(!drop_in.exists() && !op.env.bare.join("pushdeploy.toml").exists());

    let output = op.init().success();
    assert!(output.stderr.contains("visudo -cf: pushdeploy-www parsed OK"), "{output}");
    let wrote = format!("wrote $TMP/sudoers.d/pushdeploy-www: the git user {git} may run");
    assert!(output.normalized_stderr().contains(&wrote), "{output}");
    let meta = fs::metadata(&drop_in).expect("stat the drop-in");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o440));
    let rules = fs::read_to_string(&drop_in).expect("read the drop-in");
    assert!(rules.ends_with(&format!("\n{git} ALL=(root) NOPASSWD: PUSHDEPLOY_WWW\n")), "{rules}");
    let visudo = op.env.root_command("visudo").arg("-cf").arg(&drop_in).success();
    assert!(visudo.stdout.contains("parsed OK"), "{visudo}");
    // What root wrote into the git user's repository follows no symlink and is readable.
    let hook = fs::symlink_metadata(op.env.bare.join("hooks/post-receive")).expect("the hook");
    assert_eq!((hook.uid(), hook.mode() & 0o7777), (0, 0o755));

    let again = op.init().success();
    assert!(
        again.normalized_stderr().contains("unchanged $TMP/sudoers.d/pushdeploy-www"),
        "{again}"
    );
    assert_eq!(fs::read_to_string(&drop_in).expect("read"), rules);

    // A drop-in of that name that init did not write stays, and init says why it stops.
    fs::write(&drop_in, "# the operator's own\n").expect("write a foreign drop-in");
    let foreign = op.init().failure();
    assert!(
        foreign.stderr.contains("exists and was not written by init for pushdeploy-www@.service"),
        "{foreign}"
    );
    assert_eq!(fs::read_to_string(&drop_in).expect("read"), "# the operator's own\n");
    fs::remove_file(&drop_in).expect("remove the foreign drop-in");

    // The app's user as the git user: refused (it would own the releases it runs).
    let same = op.init().arg("--git-user").arg(&op.app_user.name).failure();
    assert!(same.stderr.contains("is the git user, who owns the releases"), "{same}");
    assert!(!drop_in.exists());
}

#[test]
fn init_app_refuses_a_repository_the_git_user_could_not_push_to() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip("init --app for a git user needs root");
        return;
    }
    let op = Operator::new("pdperm3");
    // Root's own repository: the git user's pushes could not write its objects.
    let _ = op.env.root_command("rm").arg("-rf").arg(&op.env.bare).success();
    let _ =
        op.env.root_command("git").args(["init", "--quiet", "--bare"]).arg(&op.env.bare).success();
    let output = op.init().failure();
    let line = format!("is not a repository of the git user {}", op.git_user.name);
    assert!(output.stderr.contains(&line), "{output}");
    assert!(output.stderr.contains("runuser -u "), "{output}");
    assert!(!op.env.bare.join("pushdeploy.toml").exists());
    assert!(!op.sudoers.join("pushdeploy-www").exists());
}
