//! Running the build: `sh -c COMMAND` in the new release, in its own process group, its output
//! streamed line by line to the pusher, stopped whole at the timeout.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tracing::instrument;

use crate::report;

/// The longest line passed on at once; a longer one is cut into pieces of this size.
const MAX_LINE: u64 = 64 * 1024;
/// How long to wait for the build's pipes to close after its process group is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start `sh -c {command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` {status}")]
    Failed { command: String, status: String },
    #[error("`{command}` did not finish within {}; it and its child processes were killed", humantime::format_duration(*.timeout))]
    TimedOut { command: String, timeout: Duration },
}

/// One build to run.
pub struct Build<'a> {
    pub command: &'a str,
    pub dir: &'a Path,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Where the build's process group id is kept while it runs, so that if pushdeploy itself
    /// is killed the next deploy can stop the orphaned build (see [`stop_orphans`]).
    pub pgid_file: &'a Path,
}

/// Runs the build to completion, streaming its output. Whatever the outcome, no process of the
/// build's group is left running when this returns, so nothing can write into the release after
/// it goes live.
#[instrument(skip_all)]
pub fn run(build: &Build<'_>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Spawn { command: build.command.to_owned(), source })?;
    runtime.block_on(run_async(build))
}

async fn run_async(build: &Build<'_>) -> Result<(), Error> {
    // Orphaned children of the build are re-parented to us, so we can reap them below; without
    // this they would go to init and we could not tell when they are gone.
    let _ = nix::sys::prctl::set_child_subreaper(true);

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
    let mut child = command
        .spawn()
        .map_err(|source| Error::Spawn { command: build.command.to_owned(), source })?;
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(group) = group {
        let _ = std::fs::write(build.pgid_file, group.as_raw().to_string());
    }
    let stdout = child.stdout.take().map(|out| tokio::spawn(pump(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(pump(err)));

    let outcome = tokio::time::timeout(build.timeout, child.wait()).await;
    if let Some(group) = group {
        stop_group(group).await;
        let _ = std::fs::remove_file(build.pgid_file);
    }
    if outcome.is_err() {
        let _ = child.wait().await;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = pump.await;
        }
    })
    .await;

    match outcome {
        Err(_) => {
            Err(Error::TimedOut { command: build.command.to_owned(), timeout: build.timeout })
        }
        Ok(Err(source)) => Err(Error::Spawn { command: build.command.to_owned(), source }),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => {
            Err(Error::Failed { command: build.command.to_owned(), status: describe(status) })
        }
    }
}

/// Kills every process left in the build's group and reaps them, for at most two seconds.
async fn stop_group(group: Pid) {
    let _ = killpg(group, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    let negative = Pid::from_raw(-group.as_raw());
    while Instant::now() < deadline {
        match waitpid(negative, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(5)).await,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(_) => break, // ECHILD: none of the group is left
        }
    }
}

/// Stops what is left of a build whose pushdeploy died (SIGKILL, power loss spares nothing to
/// stop): the processes of the recorded group that still work under `target`. The check of the
/// working directory keeps a recycled group id from hitting an unrelated process.
pub fn stop_orphans(pgid_file: &Path, target: &Path) {
    let Some(group) =
        std::fs::read_to_string(pgid_file).ok().and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let members = |pgid: i32| -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("stat")).ok().is_some_and(|stat| {
                    // Fields after the command name, which is in parentheses and may hold spaces.
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map_or("", |(_, rest)| rest)
                        .split_whitespace()
                        .collect();
                    fields.get(2).and_then(|pgrp| pgrp.parse::<i32>().ok()) == Some(pgid)
                        && fields.first() != Some(&"Z")
                })
            })
            .filter_map(|entry| std::fs::read_link(entry.path().join("cwd")).ok())
            .collect()
    };
    if members(group).iter().any(|cwd| cwd.starts_with(target)) {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !members(group).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
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
