//! The deploy record: an append-only history, and one record per slot of the release it holds.
//!
//! A slot's record is written after its release is complete and before the link can point at
//! it, and removed before the slot is emptied, so whatever the link points at has a record that
//! describes it, even after a crash between two stages.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::release::grace::Grace;
use crate::target::{Layout, Slot};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is damaged ({source}); delete it and deploy again", path.display())]
    Damaged { path: PathBuf, source: serde_json::Error },
}

/// What a slot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub slot: Slot,
    pub commit: String,
    /// The ref that was pushed, or the revision given to `deploy`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The link's target when this release is live, e.g. `green/public`.
    pub link_target: String,
    pub built_at: String,
    /// When the link was switched to it; missing until then.
    pub live_since: Option<String>,
    /// Files kept from older releases for skew protection.
    #[serde(default, skip_serializing_if = "Grace::is_empty")]
    pub grace: Grace,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub started_at: String,
    pub commit: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub slot: Slot,
    /// `live`, `failed` or `dry-run`.
    pub result: String,
    /// What started it: `push`, `deploy`, `rollback`.
    #[serde(default)]
    pub trigger: String,
    /// Who pushed (or ran the command), as far as the environment tells.
    #[serde(default)]
    pub pusher: String,
    /// The stage that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds per stage, in the order they ran.
    pub stages: Vec<(String, f64)>,
    /// Seconds from the start to the link switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<f64>,
    pub total: f64,
}

/// Returns who is deploying: the name a git server put in the environment (gitolite's
/// `GL_USER`, Gitea's `GITEA_PUSHER_NAME`, or `GIT_PUSHER`, which an `authorized_keys` line can
/// set with `environment=`), else the system user, with the SSH client's address when there
/// is one.
pub fn pusher() -> String {
    let named = ["GIT_PUSHER", "GL_USER", "GITEA_PUSHER_NAME", "REMOTE_USER"]
        .into_iter()
        .find_map(|key| std::env::var(key).ok().filter(|value| !value.is_empty()));
    let user = named.unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::getuid().to_string(), |user| user.name)
    });
    match std::env::var("SSH_CLIENT")
        .ok()
        .and_then(|client| client.split(' ').next().map(str::to_owned))
    {
        Some(address) if !address.is_empty() => format!("{user}@{address}"),
        _ => user,
    }
}

/// Returns a time as RFC 3339 text in UTC, to the second.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Returns the record of what `slot` holds, if it holds a complete release.
pub fn read_record(layout: &Layout, slot: Slot) -> Result<Option<ReleaseRecord>, Error> {
    let path = layout.record_path(slot);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| Error::Damaged { path, source })
}

/// Writes (atomically, durably) the record of what `record.slot` holds.
pub fn write_record(layout: &Layout, record: &ReleaseRecord) -> Result<(), Error> {
    let dir = layout.records_dir();
    let path = layout.record_path(record.slot);
    let write_error = |source: io::Error| Error::Write { path: path.clone(), source };
    // The directory is made with the state directory; not making it here keeps a late writer
    // (a reaper whose site was just removed) from bringing a deleted target back.
    let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(write_error)?;
    let json = serde_json::to_vec_pretty(record).map_err(|err| write_error(err.into()))?;
    file.write_all(&json).and_then(|()| file.as_file().sync_all()).map_err(write_error)?;
    file.persist(&path).map_err(|err| write_error(err.error))?;
    Ok(())
}

/// Forgets what `slot` holds, before the slot is emptied.
pub fn remove_record(layout: &Layout, slot: Slot) -> Result<(), Error> {
    let path = layout.record_path(slot);
    match fs::remove_file(&path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(Error::Write { path, source: err })
        }
        _ => Ok(()),
    }
}

fn history_path(layout: &Layout) -> PathBuf {
    layout.state.join("history.jsonl")
}

/// Appends one entry to the history, as a single write of one line.
pub fn append(layout: &Layout, entry: &HistoryEntry) -> Result<(), Error> {
    let path = history_path(layout);
    let write_error = |source: io::Error| Error::Write { path: path.clone(), source };
    let mut line = serde_json::to_vec(entry).map_err(|err| write_error(err.into()))?;
    line.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(write_error)?;
    file.write_all(&line).and_then(|()| file.sync_data()).map_err(write_error)
}

/// Reads the whole history, oldest first. A torn last line (a crash mid-append) is skipped.
pub fn read_all(layout: &Layout) -> Result<Vec<HistoryEntry>, Error> {
    let path = history_path(layout);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path, source }),
    };
    Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
}
