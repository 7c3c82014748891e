//! The record of what each slot holds (`.pushdeploy/releases/<slot>.json`), and the files it
//! keeps reachable on behalf of older releases (`[retire] grace`).
//!
//! A slot's record is written after its release is complete and before the link can point at
//! it, and removed before the slot is emptied, so whatever the link points at has a record that
//! describes it, even after a crash between two stages.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::history::Error;
use super::{Layout, Slot};
use crate::git::CommitId;

/// What a slot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub slot: Slot,
    pub commit: CommitId,
    /// The ref that was pushed, or the revision given to `deploy`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The link's target when this release is live, e.g. `green/public`.
    pub link_target: String,
    pub built_at: String,
    /// When the link was switched to it; missing until then.
    pub live_since: Option<String>,
    /// The deploy's place in the order releases were made (1, 2, …); a rollback goes back by
    /// it, so a rollback of a rollback goes further back. 0 in records made before it was kept.
    #[serde(default)]
    pub seq: u64,
    /// Files kept from older releases for skew protection.
    #[serde(default, skip_serializing_if = "Grace::is_empty")]
    pub grace: Grace,
}

/// A file kept from an older release, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraceFile {
    /// The path under the served directory, as raw bytes (file names need not be UTF-8).
    pub path: Vec<u8>,
    /// Milliseconds since the epoch after which the file is removed; 0 until the switch, when
    /// [`Grace::start`] sets it (the grace counts from the moment the new release is live).
    pub until_ms: u64,
}

/// What one release holds on behalf of older ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grace {
    #[serde(default)]
    pub files: Vec<GraceFile>,
    /// Directories created only to hold kept files, removed once empty.
    #[serde(default)]
    pub dirs: Vec<Vec<u8>>,
}

impl Grace {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    /// Returns the earliest deadline still pending.
    pub fn next_deadline(&self) -> Option<u64> {
        self.files.iter().map(|file| file.until_ms).min()
    }

    /// Starts the grace of the files carried by this deploy, now that its release is live.
    pub fn start(&mut self, grace: Duration) {
        let until = now_ms().saturating_add(grace.as_millis() as u64);
        for file in self.files.iter_mut().filter(|file| file.until_ms == 0) {
            file.until_ms = until;
        }
    }
}

/// Returns the current time in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Returns the record of what `slot` holds, if it holds a complete release.
pub fn read(layout: &Layout, slot: Slot) -> Result<Option<ReleaseRecord>, Error> {
    let path = layout.record_path(slot);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| Error::Damaged { path, source })
}

/// Writes (atomically, durably) the record of what `record.slot` holds.
pub fn write(layout: &Layout, record: &ReleaseRecord) -> Result<(), Error> {
    let staged = stage(layout, record)?;
    staged
        .file
        .as_file()
        .sync_all()
        .map_err(|source| Error::Write { path: staged.path.clone(), source })?;
    staged.persist()
}

/// A record written under a temporary name beside its place, not synced yet (see [`stage`]).
#[derive(Debug)]
pub struct Staged {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Staged {
    /// Renames the record into place. Its contents must have been synced since [`stage`]
    /// (a `syncfs`), or a crash could leave the new name on an empty file.
    pub fn persist(self) -> Result<(), Error> {
        let Staged { file, path } = self;
        file.persist(&path).map(drop).map_err(|err| Error::Write { path, source: err.error })
    }
}

/// Writes the record of what `record.slot` holds under a temporary name, without syncing
/// it: the caller makes it durable together with other writes (one `syncfs`), then puts it
/// in place with [`Staged::persist`]. A crash in between leaves the old record whole.
pub fn stage(layout: &Layout, record: &ReleaseRecord) -> Result<Staged, Error> {
    let dir = layout.records_dir();
    let path = layout.record_path(record.slot);
    let write_error = |source: io::Error| Error::Write { path: path.clone(), source };
    // The directory is made with the state directory; not making it here keeps a late writer
    // (a reaper whose site was just removed) from bringing a deleted target back.
    let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(write_error)?;
    let json = serde_json::to_vec_pretty(record).map_err(|err| write_error(err.into()))?;
    file.write_all(&json).map_err(write_error)?;
    Ok(Staged { file, path })
}

/// Forgets what `slot` holds, before the slot is emptied.
pub fn remove(layout: &Layout, slot: Slot) -> Result<(), super::Error> {
    let path = layout.record_path(slot);
    match fs::remove_file(&path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(super::Error::Io { path, source: err })
        }
        _ => Ok(()),
    }
}
