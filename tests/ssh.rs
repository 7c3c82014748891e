//! A real `git push production main` over SSH: Debian's `sshd` on a loopback port with a
//! throwaway host key and key-only auth, a system user whose login shell is `git-shell`, and
//! the hook installed by `pushdeploy init` running as that user.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{BIN, Output, TestEnv, short};

/// Debian's `openssh-server` daemon. sshd must be started by its absolute path (it re-executes
/// itself for each connection).
const SSHD: &str = "/usr/sbin/sshd";
/// Where sshd insists on its privilege separation directory.
const PRIVSEP_DIR: &str = "/run/sshd";
/// How long sshd may take to send its banner.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Start attempts, each on a new port, for when another process took the port meanwhile.
const START_ATTEMPTS: usize = 3;

/// Returns Debian's `git-shell` (the login shell of the SSH user).
fn git_shell() -> Option<PathBuf> {
    ["/usr/bin/git-shell", "/usr/local/bin/git-shell"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0))
}

/// Returns whether this machine can run the SSH test: sshd and git-shell installed, and root
/// (to create the user). Without them the test fails when `CI` is set (`.ci/run` installs
/// `openssh-server` and runs as root) and is skipped with a notice elsewhere.
#[track_caller]
pub(crate) fn require_ssh_setup() -> bool {
    let missing = if !Path::new(SSHD).is_file() {
        Some(format!("{SSHD} is not installed (apt-get install openssh-server)"))
    } else if git_shell().is_none() {
        Some("git-shell is not installed (apt-get install git)".to_owned())
    } else if !nix::unistd::geteuid().is_root() {
        Some("the SSH test creates a system user, which needs root".to_owned())
    } else {
        None
    };
    let Some(missing) = missing else { return true };
    crate::support::skip(&missing);
    false
}

/// A system user created for one test, whose login shell is `git-shell`; deleted on drop.
struct SystemUser {
    name: String,
    uid: u32,
}

impl SystemUser {
    /// Creates `pdtest<pid>` with `home` as home directory (created, owned by the user).
    #[track_caller]
    fn create(env: &TestEnv, home: &Path) -> SystemUser {
        let name = format!("pdtest{}", std::process::id());
        // Only a killed earlier run of this process id can have left it behind.
        if nix::unistd::User::from_name(&name).ok().flatten().is_some() {
            let _ = env.command("userdel").arg(&name).success();
        }
        let shell = git_shell().expect("git-shell was checked");
        let _ = env
            .command("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .arg("--shell")
            .arg(&shell)
            .arg("--home-dir")
            .arg(home)
            // `*`, not useradd's locked `!`: without PAM, sshd refuses locked accounts even
            // for key authentication.
            .args(["--password", "*"])
            .arg(&name)
            .success();
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("useradd created no user {name}"));
        let user = SystemUser { name, uid: user.uid.as_raw() };
        fs::create_dir_all(home).expect("create the SSH user's home");
        user.chown(env, home);
        user
    }

    /// Gives `path` and everything under it to this user.
    #[track_caller]
    fn chown(&self, env: &TestEnv, path: &Path) {
        let owner = format!("{0}:{0}", self.name);
        let _ = env.command("chown").arg("-R").arg(owner).arg(path).success();
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        // An sshd session of the user may take a moment to exit.
        for _ in 0..50 {
            let status = Command::new("userdel")
                .arg(&self.name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok_and(|status| status.success()) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not delete the test user {}; run `userdel {0}`", self.name);
    }
}

/// A running sshd; dropping it stops its process group.
pub(crate) struct Sshd {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd on a free loopback port, admitting only `user` with the keys in
    /// `dir/authorized_keys/<user>`, with its host key, config, pid file and log in `dir`.
    #[track_caller]
    fn start(env: &TestEnv, dir: &Path, user: &str) -> Sshd {
        Sshd::start_with(env, dir, user, None)
    }

    /// Starts sshd as [`Sshd::start`] does, but with Debian's own key rules: the user's
    /// `~/.ssh/authorized_keys` and `StrictModes yes` (owners and modes of the home, `.ssh`
    /// and the file are checked); with `use_pam`, Debian's default `UsePAM yes`.
    #[track_caller]
    pub(crate) fn start_with_home_keys(
        env: &TestEnv,
        dir: &Path,
        user: &str,
        use_pam: bool,
    ) -> Sshd {
        Sshd::start_with(env, dir, user, Some(use_pam))
    }

    #[track_caller]
    fn start_with(env: &TestEnv, dir: &Path, user: &str, home_keys: Option<bool>) -> Sshd {
        let host_key = dir.join("host_key");
        let _ = env
            .command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "pushdeploy test host", "-f"])
            .arg(&host_key)
            .success();
        fs::create_dir_all(PRIVSEP_DIR).expect("create sshd's privilege separation directory");
        let log = dir.join("sshd.log");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let config = dir.join("sshd_config");
            let mut text = sshd_config(dir, &host_key, port, user);
            if let Some(use_pam) = home_keys {
                let pam = if use_pam { "UsePAM yes" } else { "UsePAM no" };
                text = text
                    .lines()
                    .filter(|line| !line.starts_with("AuthorizedKeysFile "))
                    .map(|line| match line {
                        "StrictModes no" => "StrictModes yes",
                        "UsePAM no" => pam,
                        line => line,
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
            }
            fs::write(&config, text).expect("write sshd_config");
            let log_file = fs::File::create(&log).expect("create sshd.log");
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log file"))
                .stderr(log_file)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {SSHD}: {e}"));
            let mut sshd = Sshd { child, port, log: log.clone() };
            match sshd.wait_until_ready() {
                Ok(()) => return sshd,
                Err(status) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "sshd exited at start ({status}) on port {port}, retrying:\n{}",
                        sshd.logs()
                    );
                }
                Err(status) => panic!("sshd exited at start ({status})\n{}", sshd.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits for the SSH banner; returns sshd's exit status if it exited instead.
    #[track_caller]
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for sshd") {
                return Err(status.to_string());
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not greet on port {} within {READY_TIMEOUT:?}\n{}",
                self.port,
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns sshd's log, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- sshd log {} ---\n{text}", self.log.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Returns the daemon's config: loopback only, this user only, public keys only.
fn sshd_config(dir: &Path, host_key: &Path, port: u16, user: &str) -> String {
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {keys}/%u\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PermitRootLogin no\n\
         AllowUsers {user}\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        keys = dir.join("authorized_keys").display(),
    )
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Makes `path` searchable and readable by everyone, so the SSH user can reach what is below.
#[track_caller]
pub(crate) fn make_traversable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", path.display()));
}

/// Asserts the pusher's raw stderr has a `remote: ` line starting with `start`.
#[track_caller]
fn assert_remote_line(push: &Output, start: &str) {
    let wanted = format!("remote: {start}");
    assert!(
        push.stderr.lines().any(|line| line.starts_with(&wanted)),
        "no line starting {wanted:?}\n{push}"
    );
}

/// Runs `init` with a copy of the binary that the SSH user can reach (the hook runs the binary
/// `init` ran as, and the build directory may be out of that user's reach).
fn init_with_a_reachable_binary(env: &TestEnv) {
    let bin_dir = env.root.join("bin");
    fs::create_dir(&bin_dir).expect("create bin dir");
    make_traversable(&bin_dir);
    let pushdeploy = bin_dir.join("pushdeploy");
    fs::copy(BIN, &pushdeploy).expect("copy the pushdeploy binary");
    make_traversable(&pushdeploy);
    let _ = env
        .command(&pushdeploy)
        .arg("init")
        .arg(&env.bare)
        .arg("--target")
        .arg(&env.target)
        .success();
    env.clone_work();
    let hook = fs::read_to_string(env.bare.join("hooks/post-receive")).expect("read the hook");
    assert!(hook.contains(&*pushdeploy.to_string_lossy()), "the hook runs another binary:\n{hook}");
}

/// Makes a client key and authorizes it in `authorized_keys`; returns the private key's path.
fn authorize_a_new_key(env: &TestEnv, authorized_keys: &Path) -> PathBuf {
    let client_key = env.root.join("client_key");
    let _ = env
        .command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pushdeploy test client", "-f"])
        .arg(&client_key)
        .success();
    let public_key = fs::read(client_key.with_extension("pub")).expect("read client_key.pub");
    fs::write(authorized_keys, public_key).expect("write authorized_keys");
    client_key
}

#[test]
fn git_push_over_ssh_deploys_as_the_git_shell_user() {
    if !require_ssh_setup() {
        return;
    }
    let env = TestEnv::new();
    make_traversable(&env.root);
    init_with_a_reachable_binary(&env);

    let user = SystemUser::create(&env, &env.root.join("ssh-home"));
    user.chown(&env, &env.bare);
    user.chown(&env, &env.target);
    let sshd_dir = env.root.join("sshd");
    let keys_dir = sshd_dir.join("authorized_keys");
    fs::create_dir_all(&keys_dir).expect("create authorized_keys dir");
    make_traversable(&sshd_dir);
    make_traversable(&keys_dir);
    let client_key = authorize_a_new_key(&env, &keys_dir.join(&user.name));
    let sshd = Sshd::start(&env, &sshd_dir, &user.name);

    let ssh_command = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p {}",
        client_key.display(),
        sshd.port
    );
    let url = format!("ssh://{}@127.0.0.1:{}{}", user.name, sshd.port, env.bare.display());
    let _ = env.git().args(["remote", "add", "production", &url]).success();
    let git_push =
        || env.git().env("GIT_SSH_COMMAND", &ssh_command).args(["push", "production", "main"]);

    let mut commits = Vec::new();
    for (round, slot) in ["blue", "green"].into_iter().enumerate() {
        env.write("index.html", format!("<p>over ssh, round {round}</p>\n"));
        env.write_exec("bin/tool.sh", format!("#!/bin/sh\necho {round}\n"));
        let commit = env.commit_all(&format!("round {round}"));

        let push = git_push().success();

        let label = format!("{} (refs/heads/main)", short(&commit));
        assert_remote_line(&push, &format!("pushdeploy: deploying {label} into {slot}"));
        assert_remote_line(&push, "pushdeploy: wrote ");
        assert_remote_line(&push, &format!("pushdeploy: live: {label} in {slot}: "));
        push.assert_live(&commit, "refs/heads/main", slot);
        let live = env.live_dir();
        assert_eq!(live, env.target.join(slot));
        let owner = fs::metadata(&live).expect("stat the live release").uid();
        assert_eq!(owner, user.uid, "the deploy did not run as the SSH user");
        commits.push(commit);
    }
    drop(sshd);

    // Back to root, whose git and libgit2 refuse repositories other users own.
    let _ =
        env.command("chown").args(["-R", "root:root"]).arg(&env.bare).arg(&env.target).success();
    env.assert_live_equals_archive(&commits[1]);
    env.assert_no_idle_slot();
    let log = env.pushdeploy().args(["log", "--json", "--repo"]).arg(&env.bare).success();
    let entries: Vec<Value> = serde_json::from_str(&log.stdout).expect("log --json prints JSON");
    let pushed: Vec<(&str, &str)> = entries
        .iter()
        .map(|entry| {
            (entry["commit"].as_str().unwrap_or(""), entry["pusher"].as_str().unwrap_or(""))
        })
        .collect();
    let pusher = format!("{}@127.0.0.1", user.name);
    assert_eq!(
        pushed,
        [(commits[1].as_str(), pusher.as_str()), (commits[0].as_str(), pusher.as_str())],
        "{log}"
    );
}
