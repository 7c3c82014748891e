//! Running `systemctl`, `journalctl` and the proxy's programs as root on behalf of the git
//! user; the sudoers rules that allow exactly those command lines are in [`super::sudo_rules`].
//!
//! A deploy runs as the git user, who owns the target and the repository; the app's instances
//! are system units, which only root may start and stop. `init --app` (run as root) writes a
//! sudoers drop-in ([`super::sudo_rules::rules`]) that lets the git user run, as root and without a password,
//! exactly the command lines pushdeploy runs, and nothing else: each is listed with all its
//! arguments, so the git user can neither name another unit nor add an argument.
//!
//! Why sudo: polkit would let `systemctl` run unprivileged, but that `systemctl` talks to
//! systemd over the D-Bus system bus and asks polkitd, and many minimal servers (and the
//! tests' namespace) have neither, while root's `systemctl` talks to PID 1 over
//! `/run/systemd/private`. User units with lingering cannot do it either: they run as the git
//! user, and the app's `User=` must be another user, which a user manager cannot switch to.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a program of the rules is looked for, in this order. sudo compares the path it runs
/// with the rule's (or the files behind them), so the rules and [`command`] use the same one.
const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// Returns a command that runs `program` as root: directly when this process is root, else as
/// `sudo -n /usr/bin/PROGRAM`, which never prompts (`-n` fails at once when the rules do not
/// allow the command line). Whoever runs a new command line through it adds it to `sudo_rules::lines`.
pub fn command(program: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("sudo");
    command.arg("-n").arg(program_path(program));
    command
}

/// Returns the absolute path of a system program: the first of [`SYSTEM_DIRS`] that has it
/// (`/usr/bin/systemctl`, or `/bin/systemctl` on a system without merged `/usr`).
pub fn program_path(program: &str) -> PathBuf {
    SYSTEM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| Path::new(SYSTEM_DIRS[0]).join(program))
}

/// The hint for a failure that sudo's refusal caused (see [`explain`]).
pub const REFUSED_HINT: &str =
    "as root, run `pushdeploy init --app` again (it writes the sudo rules), then push again";

/// Tells whether a failure's message is sudo refusing one of pushdeploy's command lines.
pub fn is_refusal(message: &str) -> bool {
    message.contains("sudo:") && message.contains("a password is required")
}

/// Adds what to do to sudo's refusal of a command line (`sudo: a password is required`, as
/// `-n` has it): one of pushdeploy's own refused means the drop-in is missing or out of date.
/// Any other message is returned as it is.
pub fn explain(message: String) -> String {
    if !(message.starts_with("sudo:") && message.contains("a password is required")) {
        return message;
    }
    format!(
        "{message} (the git user's sudo rules do not allow it: run `pushdeploy init --app` again \
         as root, which writes them to /etc/sudoers.d/pushdeploy-NAME; `sudo -l` lists them)"
    )
}
