//! Running the build: `sh -c COMMAND` in the new release, in its own process group, its output
//! streamed line by line to the pusher, stopped whole at the timeout.
//!
//! "Whole" means every process the build started, not only its process group: a child that
//! calls `setsid` (or double-forks) leaves the group, and would otherwise outlive the deploy
//! and write into the release after it went live. pushdeploy makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so every orphan of the build is re-parented to pushdeploy
//! instead of init, and when the build stage ends it kills and reaps every child it has
//! (see [`stop_leftovers`]). A subreaper was chosen over a cgroup: creating a cgroup needs a
//! delegated subtree (systemd `Delegate=`, or root), which the git user that runs the hook
//! usually lacks, while a subreaper needs no privilege and catches the same processes. What
//! neither catches is work handed to another daemon (`systemd-run --user`, `at`, `ssh
//! localhost`): the build runs as the git user and can do what that user can do.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tracing::instrument;

use crate::report;

/// The longest line passed on at once; a longer one is cut into pieces of this size.
const MAX_LINE: u64 = 64 * 1024;
/// How long to wait for the build's pipes to close after its process group is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to keep killing and reaping what the build left before giving up on it: a process
/// in uninterruptible sleep (state D, a hung NFS mount) dies only when the kernel lets it, and
/// must not hold the deploy (and its lock) forever.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The variable that marks every process of one build, so that the next deploy can find those
/// that left the build's process group when pushdeploy itself was killed.
const BUILD_ID_VAR: &str = "PUSHDEPLOY_BUILD_ID";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start `sh -c {command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` {status}")]
    Failed { command: String, status: String, code: Option<i32> },
    #[error("`{command}` did not finish within {}; it and its child processes were killed", humantime::format_duration(*.timeout))]
    TimedOut { command: String, timeout: Duration },
    #[error(
        "cannot make pushdeploy a child subreaper, so processes `{command}` starts could outlive it: {source}"
    )]
    Subreaper { command: String, source: Errno },
    #[error("`{command}` left processes that did not die within {} of SIGKILL (pids {}; stuck in the kernel?), so the release is not published; see `ps -o pid,stat,wchan:32 -p {}`", humantime::format_duration(SWEEP_TIMEOUT), pid_list(.pids, ", "), pid_list(.pids, ","))]
    Survivors { command: String, pids: Vec<Pid> },
}

/// The shell's exit status for a command it did not find.
const NOT_FOUND: i32 = 127;

impl Error {
    /// Returns what status 127 means, for a build that ended with it: the shell found no
    /// such command in the build's PATH (`env`, then pushdeploy's), named with `config`.
    pub fn not_found_hint(&self, env: &[(String, String)], config: &Path) -> Option<String> {
        let Error::Failed { code: Some(NOT_FOUND), .. } = self else { return None };
        let path = super::program::build_path(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Some(format!(
            "status 127 means a command was not found: check PATH in [build.env] of {} (the hook's PATH is {})",
            report::escape_path(config),
            report::escape_path(Path::new(&path))
        ))
    }
}

fn pid_list(pids: &[Pid], separator: &str) -> String {
    pids.iter().map(|pid| pid.to_string()).collect::<Vec<_>>().join(separator)
}

/// One build to run.
pub struct Build<'a> {
    pub command: &'a str,
    pub dir: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Where the build's process group id and build id are kept while it runs, so that if
    /// pushdeploy itself is killed the next deploy can stop the orphaned build (see
    /// [`stop_orphans`]).
    pub pgid_file: &'a Path,
}

/// Runs the build to completion, streaming its output. Whatever the outcome, no process the
/// build started is left running when this returns (or it fails with [`Error::Survivors`]),
/// whatever the processes did to their session or group, so nothing can write into the release
/// after it goes live.
#[instrument(skip_all)]
pub fn run(build: &Build<'_>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Spawn { command: report::escape(build.command), source })?;
    runtime.block_on(run_async(build))
}

async fn run_async(build: &Build<'_>) -> Result<(), Error> {
    // Orphans of the build (a `setsid` child whose parent exited, a double fork) are
    // re-parented to us instead of init, so that `stop_leftovers` finds and kills them.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|source| Error::Subreaper { command: report::escape(build.command), source })?;
    // None are expected (the `git cat-file` of materialize is waited for, `pushdeploy reap`
    // starts after the switch), but a child pushdeploy started for itself is not the build's.
    let own = children();
    let build_id = new_build_id();

    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(build.command)
        .current_dir(build.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // A hook runs with GIT_DIR and friends pointing at the bare repository; a build that runs
    // `git` must not act on it.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            command.env_remove(key);
        }
    }
    command.envs(build.env.iter().map(|(k, v)| (k, v)));
    command.env(BUILD_ID_VAR, &build_id);
    // The id is on record before the build can start anything: a pushdeploy killed right after
    // the spawn leaves the next deploy a way to find the build (the group follows below).
    let _ = std::fs::write(build.pgid_file, format!("-\n{build_id}\n"));
    let mut child = command
        .spawn()
        .map_err(|source| Error::Spawn { command: report::escape(build.command), source })?;
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(group) = group {
        let _ = std::fs::write(build.pgid_file, format!("{group}\n{build_id}\n"));
    }
    let stdout = child.stdout.take().map(|out| tokio::spawn(pump(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(pump(err)));

    let outcome = tokio::time::timeout(build.timeout, child.wait()).await;
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    if outcome.is_err() {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    }
    let survivors = stop_leftovers(&own).await;
    // Kept while something survives, so that the next deploy stops it (see `stop_orphans`).
    if survivors.is_empty() {
        let _ = std::fs::remove_file(build.pgid_file);
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = pump.await;
        }
    })
    .await;

    // Escaped, so a command of several lines (a TOML `"""` string) keeps the message that
    // ends the deploy on one line.
    let command = report::escape(build.command);
    if !survivors.is_empty() && !matches!(outcome, Ok(Ok(_))) {
        // The build failed anyway; say what is left of it too.
        let left = Error::Survivors { command: command.clone(), pids: survivors.clone() };
        report::line(&format!("warning: {left}"));
    }
    match outcome {
        Err(_) => Err(Error::TimedOut { command, timeout: build.timeout }),
        Ok(Err(source)) => Err(Error::Spawn { command, source }),
        Ok(Ok(_)) if !survivors.is_empty() => Err(Error::Survivors { command, pids: survivors }),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => {
            Err(Error::Failed { command, status: describe(status), code: status.code() })
        }
    }
}

/// Kills and reaps every child of pushdeploy but `own`: what is left of the build's group, and
/// every orphan of the build re-parented to us as the subreaper, until none is left or
/// [`SWEEP_TIMEOUT`] passes. Returns the processes still alive then.
///
/// It loops because a process can fork between the scan and the kill: the new child is
/// re-parented to us when its parent dies, and the next round finds it.
async fn stop_leftovers(own: &[Pid]) -> Vec<Pid> {
    let deadline = Instant::now() + SWEEP_TIMEOUT;
    loop {
        let left: Vec<Pid> = children().into_iter().filter(|pid| !own.contains(pid)).collect();
        if left.is_empty() {
            return left;
        }
        for &pid in &left {
            let _ = kill(pid, Signal::SIGKILL);
            // Reaps it if it is dead by now (a zombie is still listed as our child until then);
            // only this pid, so tokio keeps the exit status of any child it waits for.
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
        if Instant::now() >= deadline {
            return children().into_iter().filter(|pid| !own.contains(pid)).collect();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Returns pushdeploy's child processes, zombies included, from the parent field of each
/// `/proc/PID/stat` (`/proc/self/task/*/children` would need CONFIG_PROC_CHILDREN).
fn children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    processes()
        .filter(|(_, proc)| proc_stat(proc).is_some_and(|fields| fields.get(1) == Some(&me)))
        .map(|(pid, _)| pid)
        .collect()
}

/// Returns every process in `/proc` with its directory there.
fn processes() -> impl Iterator<Item = (Pid, std::path::PathBuf)> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
        Some((Pid::from_raw(pid), entry.path()))
    })
}

/// Returns the fields of `/proc/PID/stat` after the command name (state, ppid, pgrp, ...).
fn proc_stat(proc: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    // The command name is in parentheses and may hold spaces and parentheses itself.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Returns a random id for one build, from the kernel's random source (the time and pid when
/// that cannot be read: unique, if guessable, which only a process of the same user could use).
fn new_build_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    match random {
        Ok(()) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            format!("{}-{nanos}", std::process::id())
        }
    }
}

/// Stops what is left of a build whose pushdeploy died (SIGKILL, power loss spares nothing to
/// stop): the processes of the recorded group that still work under `target`, and every
/// process of this user whose environment carries the recorded build id, which also finds
/// those that left the group (`setsid`). The check of the working directory keeps a recycled
/// group id from hitting an unrelated process; the build id is 128 random bits, which nothing
/// else carries. A build process that exec'd with a cleared environment and left the group is
/// not found.
pub fn stop_orphans(pgid_file: &Path, target: &Path) {
    let Ok(text) = std::fs::read_to_string(pgid_file) else { return };
    let mut lines = text.lines();
    let group = lines.next().and_then(|line| line.trim().parse::<i32>().ok()).filter(|&g| g > 1);
    let marker = lines
        .next()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| format!("{BUILD_ID_VAR}={id}"));
    let uid = nix::unistd::getuid().as_raw();
    let me = Pid::this();
    // Live (not zombie) processes that belong to the orphaned build, and whether any of them is
    // in the recorded group.
    let members = || -> Vec<(Pid, bool)> {
        processes()
            .filter(|(pid, _)| *pid != me)
            .filter_map(|(pid, proc)| {
                let fields = proc_stat(&proc)?;
                if fields.first().map(String::as_str) == Some("Z") {
                    return None;
                }
                let in_group = group.is_some_and(|group| fields.get(2) == Some(&group.to_string()))
                    && std::fs::read_link(proc.join("cwd"))
                        .is_ok_and(|cwd| cwd.starts_with(target));
                let marked = marker.as_ref().is_some_and(|marker| {
                    std::fs::metadata(&proc).is_ok_and(|meta| meta.uid() == uid)
                        && std::fs::read(proc.join("environ")).is_ok_and(|environ| {
                            environ.split(|&byte| byte == 0).any(|entry| entry == marker.as_bytes())
                        })
                });
                (in_group || marked).then_some((pid, in_group))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = members();
        if found.is_empty() || Instant::now() >= deadline {
            break;
        }
        if let Some(group) = group.filter(|_| found.iter().any(|(_, in_group)| *in_group)) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        for (pid, _) in found {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(pgid_file);
}

async fn pump(stream: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                report::build_output(text.strip_suffix(b"\r").unwrap_or(text));
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        _ => status.to_string(),
    }
}
