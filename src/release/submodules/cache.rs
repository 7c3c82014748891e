//! The submodule caches: one bare repository per submodule URL in
//! `TARGET/.pushdeploy/submodules/`, fetched into with the `git` binary only when the pinned
//! commit is missing.

use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::gitmodules::without_git_env;
use crate::git::{self, CommitId, Repo};
use crate::report::escape_path;

/// How long one `git fetch` may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How a pinned commit came to be in its cache.
pub enum Outcome {
    Cached,
    Fetched(Duration),
}

/// Why a pinned commit is not in its cache.
pub enum Problem {
    /// `git fetch` failed; its first error line.
    Fetch(String),
    /// The fetch worked and the commit is still not there.
    Missing,
    /// The cache itself is unusable: what is wrong with it.
    Cache(String),
}

/// Returns the cache of the repository at `url` in `dir`: a readable part from the
/// submodule's name and a fingerprint of the URL. Neither lets a `.gitmodules` name a path
/// outside `dir` (the name keeps only ASCII letters, digits, `-` and `_`).
pub fn path_for(dir: &Path, name: &str, url: &str) -> PathBuf {
    let last = name.rsplit('/').next().unwrap_or_default();
    let readable: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    let readable = if readable.is_empty() { "submodule".to_owned() } else { readable };
    let fingerprint = git::fingerprint(url.as_bytes());
    dir.join(format!("{readable}-{}.git", &fingerprint[..fingerprint.len().min(16)]))
}

/// Makes sure `commit` is in the cache at `cache` (created when missing), fetching it from
/// `url` when it is not. Returns the opened cache and how the commit got there.
pub fn ensure(cache: &Path, url: &str, commit: CommitId) -> Result<(Repo, Outcome), Problem> {
    let repo = open_cache(cache)?;
    if repo.has_commit(commit) {
        return Ok((repo, Outcome::Cached));
    }
    let started = Instant::now();
    // The commit alone first (every current server allows fetching a reachable commit by id),
    // then every branch and tag, as `git submodule update` falls back to.
    let pinned = format!("+{}:refs/pushdeploy/pinned/{}", commit.hex(), commit.hex());
    let direct = fetch(cache, url, &[&pinned]);
    let repo = open_cache(cache)?;
    if direct.is_ok() && repo.has_commit(commit) {
        return Ok((repo, Outcome::Fetched(started.elapsed())));
    }
    let all = ["+refs/heads/*:refs/pushdeploy/heads/*", "+refs/tags/*:refs/pushdeploy/tags/*"];
    let refs = fetch(cache, url, &all);
    let repo = open_cache(cache)?;
    if repo.has_commit(commit) {
        return Ok((repo, Outcome::Fetched(started.elapsed())));
    }
    match (direct, refs) {
        (_, Err(reason)) => Err(Problem::Fetch(reason)),
        _ => Err(Problem::Missing),
    }
}

/// Opens (after creating, when missing) the bare repository at `cache`, refusing a symlink or
/// anything else planted there.
fn open_cache(cache: &Path) -> Result<Repo, Problem> {
    match fs::symlink_metadata(cache) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Problem::Cache(format!(
                "{} is not a directory pushdeploy made; move it away",
                escape_path(cache)
            )));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(Problem::Cache(format!("{}: {err}", escape_path(cache)))),
    }
    Repo::open_or_init_bare(cache)
        .map(|(repo, _)| repo)
        .map_err(|err| Problem::Cache(err.to_string()))
}

/// Runs `git fetch URL REFSPECS` into the cache, with no prompt, no shell, and a timeout that
/// kills git and every process it started (ssh, a remote helper). Returns git's first error
/// line when it fails.
fn fetch(cache: &Path, url: &str, refspecs: &[&str]) -> Result<(), String> {
    let mut stderr =
        tempfile::tempfile().map_err(|err| format!("cannot capture git's errors: {err}"))?;
    let mut command = Command::new("git");
    command
        // `GIT_PROTOCOL_FROM_USER=0` leaves local paths off; a theme next to the site is the
        // common case (a relative URL), so they are allowed, and `ext::` never is.
        .args(["-c", "protocol.file.allow=always", "-c", "protocol.ext.allow=never", "--git-dir"])
        .arg(cache)
        .args(["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"])
        .arg("--")
        .arg(url)
        .args(refspecs);
    let clone = stderr.try_clone().map_err(|err| format!("cannot capture git's errors: {err}"))?;
    without_git_env(&mut command).stdout(Stdio::null()).stderr(clone).process_group(0);
    let mut child = command.spawn().map_err(|err| format!("cannot run `git fetch`: {err}"))?;
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "`git fetch` did not finish within {}",
                    humantime::format_duration(FETCH_TIMEOUT)
                ));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = stderr.rewind().and_then(|()| stderr.read_to_string(&mut text));
    let first = text
        .lines()
        .find(|line| line.starts_with("fatal: ") || line.starts_with("error: "))
        .or_else(|| text.lines().next())
        .map(|line| line.trim_start_matches("fatal: ").trim_start_matches("error: ").to_owned());
    Err(first.unwrap_or_else(|| format!("`git fetch` failed: {status}")))
}
