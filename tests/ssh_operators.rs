//! The server quickstart as a new user walks it, through a real sshd with `UsePAM no` and
//! Debian's key rules: `install.sh --git-user NAME --key FILE --site` makes a user that can log
//! in with that key, a push over SSH deploys, and `ssh NAME@server status|log|show SITE` read
//! the site through git-shell's `git-shell-commands/`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::ssh::{Sshd, make_traversable, require_ssh_setup};
use crate::support::install::{build_release, install_sh};
use crate::support::{TestEnv, short};

/// Deletes a user install.sh created for the test; an sshd session may take a moment to end.
struct RemoveUserOnDrop(String);

impl Drop for RemoveUserOnDrop {
    fn drop(&mut self) {
        for _ in 0..50 {
            let status = Command::new("userdel")
                .arg(&self.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok_and(|status| status.success()) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not delete the test user {0}; run `userdel {0}`", self.0);
    }
}

/// Returns the mode bits and owner of `path`.
fn mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (meta.permissions().mode() & 0o7777, meta.uid())
}

#[test]
fn install_sh_user_pushes_over_sshd_without_pam_and_reads_its_site_from_the_laptop() {
    if !require_ssh_setup() {
        return;
    }
    let env = TestEnv::new();
    make_traversable(&env.root);
    build_release(&env);
    let name = format!("pdop{}", std::process::id());
    let _remove_user = RemoveUserOnDrop(name.clone());
    let client_key = env.root.join("client_key");
    let _ = env
        .command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f"])
        .arg(&client_key)
        .success();
    let repos = env.root.join("git");
    let prefix = env.root.join("prefix");

    let install = install_sh(&env, &prefix)
        .args(["--git-user", &name, "--key"])
        .arg(client_key.with_extension("pub"))
        .args(["--site", "example.com", "--target"])
        .arg(&env.target)
        .arg("--repos")
        .arg(&repos)
        .success();

    let user = nix::unistd::User::from_name(&name).ok().flatten().expect("the user exists");
    let uid = user.uid.as_raw();
    let shadow = env.command("getent").args(["shadow", &name]).success().stdout;
    assert_eq!(shadow.split(':').nth(1), Some("*"), "unlocked, no password: {shadow}");
    assert_eq!(mode_and_owner(&repos.join(".ssh")), (0o700, uid), "{install}");
    let keys = repos.join(".ssh/authorized_keys");
    assert_eq!(mode_and_owner(&keys), (0o600, uid));
    let public_key = fs::read_to_string(client_key.with_extension("pub")).expect("read the key");
    assert_eq!(fs::read_to_string(&keys).expect("read authorized_keys"), public_key);
    for command in ["status", "log", "show", "no-interactive-login"] {
        assert_eq!(mode_and_owner(&repos.join("git-shell-commands").join(command)), (0o755, 0));
    }
    // Run again: nothing is added twice.
    let again = install_sh(&env, &prefix)
        .args(["--git-user", &name, "--key"])
        .arg(client_key.with_extension("pub"))
        .success();
    assert_eq!(fs::read_to_string(&keys).expect("read authorized_keys"), public_key, "{again}");

    let sshd_dir = env.root.join("sshd");
    fs::create_dir(&sshd_dir).expect("mkdir sshd");
    let sshd = Sshd::start_with_home_keys(&env, &sshd_dir, &name, false);
    let port = sshd.port;
    let ssh = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p {port}",
        client_key.display(),
    );
    let remote = |args: &[&str]| {
        let mut command =
            env.command("sh").arg("-c").arg(format!("{ssh} {name}@127.0.0.1 \"$@\"")).arg("ssh");
        command = command.args(args);
        command.output()
    };
    let url = format!("ssh://{name}@127.0.0.1:{}{}/example.com.git", sshd.port, repos.display());
    let _ = env.git_in(&env.root).args(["init", "--quiet", "-b", "main"]).arg(&env.work).success();
    let _ = env.git().args(["remote", "add", "production", &url]).success();
    env.write("index.html", "<p>from the laptop</p>\n");
    let commit = env.commit_all("first");

    let push = env.git().env("GIT_SSH_COMMAND", &ssh).args(["push", "production", "main"]).output();

    assert!(push.status.success(), "{push}\n{}", sshd.logs());
    push.assert_live(&commit, "refs/heads/main", "blue");

    let status = remote(&["status", "example.com"]);
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines.get(1), Some(&"slot:   blue"), "{status}");
    assert!(
        lines.get(2).is_some_and(|line| line.starts_with(&format!("commit: {}", &commit[..7]))),
        "{status}"
    );
    assert_eq!(lines.get(3), Some(&"ref:    refs/heads/main"), "{status}");
    let json: Value = serde_json::from_str(&remote(&["status", "example.com", "--json"]).stdout)
        .expect("status --json over SSH prints JSON");
    assert_eq!(
        (json["slot"].as_str(), json["commit"].as_str()),
        (Some("blue"), Some(commit.as_str()))
    );
    let log = remote(&["log", "example.com", "-n", "1"]);
    assert!(
        log.stdout.contains(&format!(
            "  #1    {}  live    blue   refs/heads/main  (push by {name}@127.0.0.1;",
            short(&commit)
        )),
        "{log}"
    );
    let shown = remote(&["show", "example.com", "last"]);
    let pushed: String = push
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("remote: "))
        .map(|line| format!("{}\n", line.trim_end()))
        .collect();
    assert_eq!(shown.stdout, pushed, "{shown}");

    // Read-only, and only this user's sites.
    let refused = [
        (
            &["status", "example.com", "--repo", "/etc"][..],
            "pushdeploy: error: '--repo' is not an argument of status; usage: ssh NAME@HOST status SITE [--json]",
        ),
        (
            &["status", "../etc"][..],
            "pushdeploy: error: '../etc' is not a site name; usage: ssh NAME@HOST status SITE [--json]",
        ),
        (
            &["log", "other"][..],
            "pushdeploy: error: no site 'other' here (no other.git of this user with a pushdeploy.toml); usage: ssh NAME@HOST log SITE [-n N] [--json]",
        ),
        (&["deploy", "example.com"][..], "fatal: unrecognized command 'deploy example.com'"),
    ];
    for (args, said) in refused {
        let output = remote(args);
        assert_ne!(output.code(), Some(0), "{output}");
        assert_eq!(output.stderr.trim_end().replace(&name, "NAME"), said, "{output}");
    }
    let login = remote(&[]);
    assert_eq!(login.code(), Some(128), "{login}");
    assert!(login.stderr.starts_with("pushdeploy: this login only pushes and reads: "), "{login}");
    drop(sshd);

    // Debian's default, UsePAM yes, lets the same user in too.
    let pam_dir = env.root.join("sshd-pam");
    fs::create_dir(&pam_dir).expect("mkdir sshd-pam");
    let sshd = Sshd::start_with_home_keys(&env, &pam_dir, &name, true);
    let ssh = ssh.replace(&format!("-p {}", port), &format!("-p {}", sshd.port));
    let url = format!("ssh://{name}@127.0.0.1:{}{}/example.com.git", sshd.port, repos.display());
    let _ = env.git().args(["remote", "set-url", "production", &url]).success();
    env.write("index.html", "<p>through PAM</p>\n");
    let second = env.commit_all("second");
    let push = env.git().env("GIT_SSH_COMMAND", &ssh).args(["push", "production", "main"]).output();
    assert!(push.status.success(), "{push}\n{}", sshd.logs());
    push.assert_live(&second, "refs/heads/main", "green");
}
