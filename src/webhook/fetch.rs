//! Bringing a pushed branch from the hosted repository into the bare one: `git fetch` with the
//! configured URL, run without a shell, without the caller's `GIT_*` environment, without any
//! prompt, and killed (with everything it started) at the timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::report::escape;

/// What the variables a fetch keeps from the server's environment: where programs are, whose
/// home holds the SSH keys and git config that authenticate to the hosted repository.
const KEPT: [&str; 3] = ["PATH", "HOME", "USER"];

/// Fetches `branch` (validated: see `delivery::is_plain_branch_name`) from `url` into
/// `refs/heads/<branch>` of `repo`, forced: the hosted repository is the truth, and a
/// force-push there deploys as one here would. An `Err` says why it failed, in one line.
pub async fn fetch_branch(
    repo: &Path,
    url: &str,
    branch: &str,
    timeout: Duration,
) -> Result<(), String> {
    let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
    let mut command = git_command(repo);
    command
        .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options"])
        .arg(url)
        .arg(&refspec);
    run(command, timeout).await
}

/// Tells whether `branch` exists in the hosted repository (`git ls-remote`): a delivery that
/// says a branch was deleted is believed only once the hosted repository agrees.
pub async fn remote_has_branch(
    repo: &Path,
    url: &str,
    branch: &str,
    timeout: Duration,
) -> Result<bool, String> {
    let mut command = git_command(repo);
    command
        .args(["ls-remote", "--heads", "--end-of-options"])
        .arg(url)
        .arg(format!("refs/heads/{branch}"));
    command.stdout(Stdio::piped());
    let output = spawn_and_wait(command, timeout).await?;
    Ok(!output.stdout.is_empty())
}

/// Deletes `refs/heads/<branch>` from the bare repository, as a push deleting it would.
pub async fn delete_branch(repo: &Path, branch: &str, timeout: Duration) -> Result<(), String> {
    let mut command = git_command(repo);
    command.args(["update-ref", "-d", "--end-of-options"]).arg(format!("refs/heads/{branch}"));
    run(command, timeout).await
}

/// Returns `git --git-dir REPO` with a clean environment and no way to prompt.
fn git_command(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.env_clear();
    for key in KEPT {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command
        .env("LC_ALL", "C")
        // Nobody is there to type a password: fail instead of waiting for one.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        // `ext::` runs a command of the URL's choosing; the admin's config never needs it.
        .args(["-c", "protocol.ext.allow=never"])
        .arg("--git-dir")
        .arg(repo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills the transport helpers (ssh,
        // git-remote-https) along with git.
        .process_group(0)
        .kill_on_drop(true);
    command
}

async fn run(command: Command, timeout: Duration) -> Result<(), String> {
    spawn_and_wait(command, timeout).await.map(drop)
}

async fn spawn_and_wait(
    mut command: Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let child = command.spawn().map_err(|err| format!("cannot run git: {err}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(output),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
            Err(format!("git {}: {}", output.status, escape(last.trim())))
        }
        Ok(Err(err)) => Err(format!("cannot wait for git: {err}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Err(format!("git did not finish within {}", humantime::format_duration(timeout)))
        }
    }
}
