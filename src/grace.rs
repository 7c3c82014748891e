//! Skew protection: for `[retire] grace`, the files of the old release that the new one lacks
//! stay reachable under the link for that long after the switch.
//!
//! A browser that loaded `index.html` from the old release asks a moment later for
//! `app.OLD.css`; without this, the old tree is gone and the page breaks. Before the switch,
//! each such file is hard-linked (symlinks copied) into the new release, at the same path under
//! the served directory, and listed with its deadline in the new release's record. Files the
//! new release has always come from the new release. A detached `pushdeploy reap` started by the
//! deploy removes them when their deadline passes, so no daemon is needed; after a reboot the
//! next deploy does not carry expired files over, and retires the rest with the old release.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

/// Makes the files that `old_served` has and `new_served` lacks reachable in `new_served`.
///
/// Files the old release itself kept for an even older one keep their original deadline, and
/// expired ones are not carried over, so no file outlives its grace by being passed along.
pub fn carry(old_served: &Path, old_grace: &Grace, new_served: &Path) -> io::Result<Grace> {
    let now = now_ms();
    let inherited: HashMap<&[u8], u64> =
        old_grace.files.iter().map(|file| (file.path.as_slice(), file.until_ms)).collect();
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut kept = Grace::default();
    for entry in walkdir::WalkDir::new(old_served).min_depth(1) {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry.path().strip_prefix(old_served).map_err(io::Error::other)?;
        let key = relative.as_os_str().as_bytes();
        let until = match inherited.get(key) {
            Some(&until) if until != 0 && until <= now => continue,
            Some(&until) => until,
            None => 0, // set by `Grace::start` once the new release is live
        };
        if !make_parents(new_served, relative, &mut created, &mut kept.dirs)? {
            continue;
        }
        let dest = new_served.join(relative);
        if fs::symlink_metadata(&dest).is_ok() {
            continue; // the new release has this path: it is served from the new release
        }
        if entry.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
        } else if fs::hard_link(entry.path(), &dest).is_err() {
            fs::copy(entry.path(), &dest)?;
        }
        kept.files.push(GraceFile { path: key.to_vec(), until_ms: until });
    }
    Ok(kept)
}

/// Creates the missing directories above `relative` in `root`. Returns false when something
/// that is not a directory stands in the way (the new release has a file there).
fn make_parents(
    root: &Path,
    relative: &Path,
    created: &mut HashSet<PathBuf>,
    dirs: &mut Vec<Vec<u8>>,
) -> io::Result<bool> {
    let Some(parent) = relative.parent() else {
        return Ok(true);
    };
    let mut path = PathBuf::new();
    for component in parent.components() {
        path.push(component);
        if created.contains(&path) {
            continue;
        }
        let full = root.join(&path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&full)?;
                created.insert(path.clone());
                dirs.push(path.as_os_str().as_bytes().to_vec());
            }
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// Removes the kept files whose deadline has passed from `served`, and the directories made
/// for them once empty. Returns what is still kept.
pub fn remove_expired(served: &Path, grace: &Grace) -> io::Result<Grace> {
    let now = now_ms();
    let mut left = Grace::default();
    for file in &grace.files {
        if file.until_ms > now {
            left.files.push(file.clone());
            continue;
        }
        match fs::remove_file(served.join(path_of(&file.path))) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    // Deepest first, so a parent is tried after its children.
    let mut deepest_first: Vec<&Vec<u8>> = grace.dirs.iter().collect();
    deepest_first.sort_by_key(|dir| std::cmp::Reverse(dir.iter().filter(|&&b| b == b'/').count()));
    let mut removed = HashSet::new();
    for dir in deepest_first {
        let full = served.join(path_of(dir));
        match fs::read_dir(&full).map(|mut entries| entries.next().is_none()) {
            Ok(true) => fs::remove_dir(&full)?,
            Ok(false) => continue,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        removed.insert(dir);
    }
    left.dirs = grace.dirs.iter().filter(|dir| !removed.contains(dir)).cloned().collect();
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_only_what_the_new_release_lacks_and_removes_it_when_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        fs::create_dir_all(old.join("css")).unwrap();
        fs::create_dir_all(new.join("css")).unwrap();
        fs::write(old.join("index.html"), "old").unwrap();
        fs::write(new.join("index.html"), "new").unwrap();
        fs::write(old.join("css/app.1.css"), "one").unwrap();
        fs::write(new.join("css/app.2.css"), "two").unwrap();
        fs::create_dir_all(old.join("gone/deep")).unwrap();
        fs::write(old.join("gone/deep/x"), "x").unwrap();

        let mut kept = carry(&old, &Grace::default(), &new).unwrap();
        kept.start(Duration::from_secs(30));
        assert_eq!(fs::read_to_string(new.join("index.html")).unwrap(), "new");
        assert_eq!(fs::read_to_string(new.join("css/app.1.css")).unwrap(), "one");
        assert_eq!(fs::read_to_string(new.join("gone/deep/x")).unwrap(), "x");
        let mut paths: Vec<_> = kept.files.iter().map(|f| path_of(&f.path)).collect();
        paths.sort();
        assert_eq!(paths, [Path::new("css/app.1.css"), Path::new("gone/deep/x")]);

        assert_eq!(remove_expired(&new, &kept).unwrap(), kept, "nothing expired yet");
        let expired = Grace {
            files: kept.files.iter().map(|f| GraceFile { until_ms: 1, ..f.clone() }).collect(),
            dirs: kept.dirs.clone(),
        };
        assert!(remove_expired(&new, &expired).unwrap().is_empty());
        assert!(!new.join("css/app.1.css").exists() && !new.join("gone").exists());
        assert!(new.join("css/app.2.css").exists());
    }
}
