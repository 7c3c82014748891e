//! `Systemd`: real systemd as PID 1 of a private pid + mount namespace, killed on drop.
//!
//! A normal boot runs `systemd-tmpfiles --remove` and empties the machine's shared /tmp, so
//! the boot follows DESIGN.md's recipe and adds to it: private tmpfs on `/run`, `/tmp`,
//! `/var/tmp`, `/var/log`, `/var/lib/systemd`, `/etc/systemd/system` (a copy, so `enable`
//! stays private), `/etc/sudoers.d` (empty: `init --app` writes the git user's rules there,
//! never into the machine's) and `/dev` (a few device nodes, so nothing lands in the shared devtmpfs);
//! `/proc/sys` read-only; its own UTS and cgroup namespaces over a cgroup made for it (so it
//! never migrates the machine's processes); a target with `DefaultDependencies=no`, an empty
//! `sysinit.target` and every unit `sysinit.target` wants masked (journald excepted), so
//! tmpfiles, sysusers, udev triggers and fstab mounts never run even for a unit that pulls
//! `sysinit.target` in. The test's own directory lives under the host's /tmp, which a tmpfs
//! hides inside: the script bind-mounts it back at the same path first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{Cmd, Output, TestEnv};

/// How long the manager may take to answer after the launch (it takes about 0.2 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(15);

/// The systemd binary the namespace runs as its PID 1.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// Runs inside the new namespaces as their PID 1; `$@` are host directories to keep visible.
const BOOT_SCRIPT: &str = r#"set -eu
mount --make-rprivate /
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
umount -R /sys/fs/cgroup
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir /run/pdtest-units
cp -a /etc/systemd/system/. /run/pdtest-units/
n=0
for dir in "$@"; do
  n=$((n + 1)); mkdir "/run/pdtest-bind-$n"; mount --bind "$dir" "/run/pdtest-bind-$n"
done
for dir in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dir"; done
for dir in /var/log /var/lib/systemd; do
  mkdir -p "$dir"; mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$dir"
done
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
cp -a /run/pdtest-units/. /etc/systemd/system/
rm -rf /run/pdtest-units
# sudo reads /etc/sudoers.d (where it is installed): the tests' rules stay in here.
if [ -d /etc/sudoers.d ]; then mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /etc/sudoers.d; fi
n=0
for dir in "$@"; do
  n=$((n + 1)); mkdir -p "$dir"; mount --move "/run/pdtest-bind-$n" "$dir"; rmdir "/run/pdtest-bind-$n"
done
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
units=/run/systemd/system
mkdir -p "$units" /run/systemd/system.conf.d
printf '[Unit]\nDescription=pushdeploy test target\nDefaultDependencies=no\n' >"$units/pdtest.target"
printf '[Unit]\nDescription=pushdeploy test sysinit (empty)\nDefaultDependencies=no\n' \
  >"$units/sysinit.target"
for unit in /etc/systemd/system/sysinit.target.wants/* /usr/lib/systemd/system/sysinit.target.wants/* \
  local-fs.target swap.target systemd-tmpfiles-clean.timer systemd-tmpfiles-clean.service \
  systemd-tmpfiles-setup-dev-early.service systemd-journald-audit.socket; do
  unit=${unit##*/}
  [ "$unit" = systemd-journald.service ] || [ "$unit" = '*' ] || ln -sfn /dev/null "$units/$unit"
done
printf '[Manager]\nDefaultTimeoutStartSec=20s\nDefaultTimeoutStopSec=5s\n' \
  >/run/systemd/system.conf.d/pdtest.conf
export container=pdtest
exec /lib/systemd/systemd --system --unit=pdtest.target --log-level=info --show-status=no
"#;

/// A running systemd in its own namespaces; dropping it SIGKILLs its PID 1.
pub struct Systemd {
    /// `unshare` (after `setpriv` and `sh` exec'd into it): the parent of PID 1.
    launcher: Child,
    /// PID 1 of the namespace, as the host numbers it.
    init: u32,
    /// The cgroup made for this manager (the root of its cgroup namespace).
    cgroup: PathBuf,
    /// What the boot script and `unshare` wrote.
    boot_log: PathBuf,
}

impl Systemd {
    /// Boots systemd for `env`, whose directory stays visible inside at the same path.
    /// Returns `None` (after [`super::skip`]) when not root or systemd is missing.
    #[track_caller]
    pub fn boot(env: &TestEnv) -> Option<Systemd> {
        if !nix::unistd::geteuid().is_root() {
            super::skip("booting systemd in a namespace needs root");
            return None;
        }
        if !Path::new(SYSTEMD).exists() {
            super::skip(&format!("no {SYSTEMD} (Debian's systemd package)"));
            return None;
        }
        let Some(cgroup2) = cgroup2_mount() else {
            super::skip("no cgroup2 filesystem mounted");
            return None;
        };
        let started = Instant::now();
        let cgroup = cgroup2.join(format!("pdtest-{}-{}", std::process::id(), unique()));
        fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("create {}: {e}", cgroup.display()));
        let boot_log = env.root.join("systemd-boot.log");
        let log = fs::File::create(&boot_log).expect("create systemd-boot.log");
        let mut command = Command::new("setpriv");
        // --pdeathsig and --kill-child: if this test process dies, unshare and then the
        // namespace's PID 1 (and with it everything inside) die too.
        command
            .args(["--pdeathsig", "KILL", "sh", "-c"])
            .arg(r#"echo $$ >"$1/cgroup.procs" && shift && exec "$@""#)
            .arg("sh")
            .arg(&cgroup)
            .args(["unshare", "--pid", "--kill-child", "--mount", "--mount-proc", "--uts"])
            .args(["--cgroup", "sh", "-c", BOOT_SCRIPT, "sh"])
            .arg(&env.root);
        let binary_dir = Path::new(super::BIN).parent().expect("pushdeploy's directory");
        if !binary_dir.starts_with(&env.root) {
            command.arg(binary_dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .env_remove("NOTIFY_SOCKET");
        let launcher = command.spawn().expect("start setpriv + unshare");
        let mut systemd = Systemd { launcher, init: 0, cgroup, boot_log };
        systemd.init = systemd.wait_for_init(started);
        systemd.wait_until_running(started);
        let journald = systemd.systemctl(&["start", "systemd-journald.socket"]);
        assert!(journald.status.success(), "start journald's socket\n{journald}");
        Some(systemd)
    }

    /// Returns the host's pid of the namespace's PID 1 (systemd).
    pub fn init_pid(&self) -> u32 {
        self.init
    }

    /// Returns the directory units go to, as seen inside: `/run/systemd/system`.
    pub fn unit_dir(&self) -> PathBuf {
        PathBuf::from("/run/systemd/system")
    }

    /// Returns where the test (on the host) reaches `inside`, a path inside the namespace.
    pub fn host_path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref().strip_prefix("/").unwrap_or(inside.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.init)).join(inside)
    }

    /// Writes the unit `name` into [`Systemd::unit_dir`] (then `daemon-reload` is needed).
    #[track_caller]
    pub fn write_unit(&self, name: &str, text: &str) {
        let path = self.host_path(self.unit_dir().join(name));
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs `systemctl ARGS` inside, whatever its exit status.
    #[track_caller]
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.command("systemctl").args(args).output()
    }

    /// Returns the last 200 lines of `unit`'s journal.
    #[track_caller]
    pub fn journal(&self, unit: &str) -> String {
        let output =
            self.command("journalctl").args(["-u", unit, "-n", "200", "-o", "cat"]).output();
        format!("{}{}", output.stdout, output.stderr)
    }

    /// Returns `program` run inside the namespaces with `env`'s hermetic environment, in
    /// `env.root` (a `current_dir` set on the returned command has no effect inside).
    pub fn run(&self, env: &TestEnv, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.run_in(env, &env.root, program)
    }

    /// Returns `program` run inside in directory `dir` (a path inside; `env.root` and
    /// everything under it are the same path inside as outside), as `env`'s user: entering
    /// the namespaces needs root, so the user is taken on inside (`setpriv`).
    pub fn run_in(&self, env: &TestEnv, dir: &Path, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        let command = env.root_command("nsenter").args(self.nsenter_args());
        let command = match env.user() {
            Some((uid, gid)) => command.arg("setpriv").args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ]),
            None => command,
        };
        command.arg("env").arg("--chdir").arg(dir).arg(program)
    }

    /// Returns `program` run inside, in `env.root`, as root whoever owns `env`.
    pub fn run_as_root(&self, env: &TestEnv, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        env.root_command("nsenter")
            .args(self.nsenter_args())
            .arg("env")
            .arg("--chdir")
            .arg(&env.root)
            .arg(program)
    }

    fn nsenter_args(&self) -> [String; 5] {
        // Entering the mount namespace moves the cwd to its root: `run` changes directory
        // with `env --chdir` after entering.
        ["-t".into(), self.init.to_string(), "-m".into(), "-p".into(), "--".into()]
    }

    /// Returns a command run inside, outside any `TestEnv`.
    fn command(&self, program: &str) -> Cmd {
        let mut command = Command::new("nsenter");
        command
            .args(self.nsenter_args())
            .arg(program)
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0");
        Cmd { command, stdin: None, tmp_paths: Vec::new() }
    }

    /// Waits for `unshare` to fork the namespace's PID 1; returns its host pid.
    #[track_caller]
    fn wait_for_init(&mut self, started: Instant) -> u32 {
        let pid = self.launcher.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        loop {
            let text = fs::read_to_string(&children).unwrap_or_default();
            if let Some(init) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return init;
            }
            self.assert_still_booting(started, "the namespace's PID 1 to start");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `systemctl is-system-running` names a state (`starting`, `degraded`...
    /// with the minimal target: any answer means a working manager).
    #[track_caller]
    fn wait_until_running(&mut self, started: Instant) {
        loop {
            let is_systemd = fs::read_to_string(format!("/proc/{}/comm", self.init))
                .is_ok_and(|comm| comm.trim() == "systemd");
            if is_systemd {
                let state = self.systemctl(&["is-system-running"]);
                let state = state.stdout.trim();
                let states = ["initializing", "starting", "running", "degraded", "maintenance"];
                if states.contains(&state) {
                    return;
                }
            }
            self.assert_still_booting(started, "systemctl to answer");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[track_caller]
    fn assert_still_booting(&mut self, started: Instant, waiting_for: &str) {
        if let Ok(Some(status)) = self.launcher.try_wait() {
            panic!("systemd's namespace exited ({status}) before {waiting_for}\n{}", self.logs());
        }
        if started.elapsed() > BOOT_TIMEOUT {
            panic!("no {waiting_for} after {BOOT_TIMEOUT:?}\n{}", self.logs());
        }
    }

    /// Returns the boot script's output and, while the manager runs, its journal's tail.
    pub fn logs(&self) -> String {
        let boot = fs::read_to_string(&self.boot_log).unwrap_or_default();
        let mut text = format!("--- boot log ({}) ---\n{boot}", self.boot_log.display());
        if self.init != 0 && Path::new(&format!("/proc/{}", self.init)).exists() {
            let journal = self.command("journalctl").args(["-n", "100", "--no-pager"]).output();
            text.push_str(&format!("--- journal ---\n{}{}", journal.stdout, journal.stderr));
        }
        text
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // Only the PID 1 this guard started (0 before it was found: then unshare itself).
        let victim = if self.init != 0 { self.init } else { self.launcher.id() };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        // unshare exits once its child is reaped, which the kernel does only after every
        // process in the pid namespace is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.launcher.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if matches!(self.launcher.try_wait(), Ok(None)) {
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
        remove_cgroup_tree(&self.cgroup);
    }
}

/// Removes an emptied cgroup and its children, deepest first, retrying while the kernel
/// finishes taking the last exited processes out of them.
fn remove_cgroup_tree(cgroup: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while cgroup.exists() && Instant::now() < deadline {
        let _ = remove_cgroup_dirs(cgroup);
        if cgroup.exists() {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn remove_cgroup_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_dirs(&entry.path())?;
        }
    }
    // A cgroup directory's files are not removable: rmdir takes it whole once it is empty.
    fs::remove_dir(dir)
}

/// Returns where cgroup v2 is mounted plus this process's cgroup in it.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (fields, tail) = line.split_once(" - ")?;
        let fstype = tail.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let path = mount.join(own.trim_start_matches('/'));
    path.is_dir().then_some(path)
}

/// Returns a number no other boot in this process has used.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
