//! The stored output of each run: `.pushdeploy/logs/ID.log`, what the pusher saw (the build's
//! output included), numbered by the history entry that names it.
//!
//! An id is claimed by creating `ID.log` with `O_EXCL`, so two runs at once (a deploy and an
//! ignored push, which takes no lock) never share one. The output is written under a
//! temporary name and renamed over it, so `pushdeploy show` never reads half a log. Only files
//! named `<number>.log` (and their `<number>.notify`), regular and owned by this user, are ever
//! removed, oldest first, to keep the directory within `[logs]`'s bounds.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::history::{self, HistoryEntry};
use super::layout::make_state_dir;
use super::{Error, Layout};
pub use crate::config::LogBounds as Bounds;

/// The history entry this process recorded, and the target it is in: its log is stored when
/// the run ends ([`recorded`]). One process is one run, whose output is one log.
static RECORDED: Mutex<Option<(Layout, HistoryEntry)>> = Mutex::new(None);

/// Returns the file of log `id`.
pub fn log_path(layout: &Layout, id: u64) -> PathBuf {
    layout.logs_dir().join(format!("{id}.log"))
}

/// Returns the file where the notifications of run `id` say how they went.
pub fn notify_path(layout: &Layout, id: u64) -> PathBuf {
    layout.logs_dir().join(format!("{id}.notify"))
}

/// Appends `entry` to the history under a new log id, and remembers it as this run's entry.
/// When no id can be claimed (the logs directory cannot be written), the entry is appended
/// without one and the error is returned after, for a warning.
pub fn record(layout: &Layout, mut entry: HistoryEntry) -> Result<(), history::Error> {
    let claimed = claim(layout);
    entry.id = claimed.as_ref().ok().copied();
    history::append(layout, &entry)?;
    if let Ok(mut recorded) = RECORDED.lock() {
        *recorded = Some((layout.clone(), entry));
    }
    claimed.map(|_| ()).map_err(|source| history::Error::Write { path: layout.logs_dir(), source })
}

/// Returns the entry this process recorded, if any, and forgets it.
pub fn recorded() -> Option<(Layout, HistoryEntry)> {
    RECORDED.lock().ok()?.take()
}

/// Claims the next id: one more than the newest log or history entry (logs removed by hand
/// must not give an id out twice), by creating its file (empty until [`store`]).
fn claim(layout: &Layout) -> io::Result<u64> {
    make_state_dir(&layout.logs_dir()).map_err(io::Error::other)?;
    let newest_log = ids(&layout.logs_dir())?.into_iter().map(|(id, _)| id).max();
    let newest_entry = history::newest_id(layout).ok().flatten();
    let mut id = newest_log.max(newest_entry).unwrap_or(0) + 1;
    for _ in 0..1000 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(log_path(layout, id))
        {
            Ok(_) => return Ok(id),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => id += 1,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other("no free log id"))
}

/// Writes the output of run `id` (by a temporary name and a rename), then removes the oldest
/// logs beyond `bounds`.
pub fn store(layout: &Layout, id: u64, text: &str, bounds: Bounds) -> Result<(), Error> {
    let dir = layout.logs_dir();
    make_state_dir(&dir)?;
    let path = log_path(layout, id);
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{id}.log."))
        .tempfile_in(&dir)
        .map_err(Error::io(&dir))?;
    file.write_all(text.as_bytes()).map_err(Error::io(&path))?;
    file.persist(&path).map_err(|err| Error::io(&path)(err.error))?;
    // Synced by the caller's `durable::flush`, with the other writes of the run: a crash
    // before then may leave the log as its id was claimed, empty.
    super::durable::defer(&dir);
    prune(&dir, bounds)
}

/// Reads log `id`: `None` when it is not kept (never stored, or removed as too old).
pub fn read(layout: &Layout, id: u64) -> Result<Option<String>, Error> {
    read_regular(&log_path(layout, id))
}

/// Reads what the notifications of run `id` reported, if they ran.
pub fn read_notify(layout: &Layout, id: u64) -> Result<Option<String>, Error> {
    read_regular(&notify_path(layout, id))
}

/// Reads a regular file of the logs directory, never through a symlink, a FIFO or a device.
fn read_regular(path: &Path) -> Result<Option<String>, Error> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
    };
    let meta = file.metadata().map_err(Error::io(path))?;
    if !meta.is_file() {
        return Err(Error::StateDir {
            path: path.to_owned(),
            problem: "is not a regular file".into(),
            hint: format!("move {} away", crate::report::escape_path(path)),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(Error::io(path))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Returns the logs in `dir` as `(id, size)`: regular files named `<number>.log` owned by
/// this user, by `lstat`.
fn ids(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let me = nix::unistd::geteuid().as_raw();
    let mut ids = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".log")) else {
            continue;
        };
        // `007.log` or `+7.log` is not a name pushdeploy writes.
        let Some(id) = stem.parse::<u64>().ok().filter(|id| id.to_string() == stem) else {
            continue;
        };
        let meta = fs::symlink_metadata(dirent.path())?;
        if meta.is_file() && meta.uid() == me {
            ids.push((id, meta.len()));
        }
    }
    Ok(ids)
}

/// Removes the oldest logs beyond `bounds`: the newest `keep`, and of those only as many as
/// fit in `max_bytes` (the newest is kept whatever its size).
fn prune(dir: &Path, bounds: Bounds) -> Result<(), Error> {
    let mut logs = ids(dir).map_err(Error::io(dir))?;
    logs.sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
    let mut total = 0u64;
    for (kept, (id, size)) in logs.into_iter().enumerate() {
        total = total.saturating_add(size);
        if kept == 0 || (kept < bounds.keep && total <= bounds.max_bytes) {
            continue;
        }
        for name in [format!("{id}.log"), format!("{id}.notify")] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::Io { path, source: err });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_within_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for id in 1..=6u64 {
            fs::write(dir.path().join(format!("{id}.log")), vec![b'x'; 10]).unwrap();
        }
        fs::write(dir.path().join("2.notify"), "ok").unwrap();
        fs::write(dir.path().join("notes.txt"), "not ours").unwrap();
        fs::write(dir.path().join("007.log"), "not a name pushdeploy writes").unwrap();
        prune(dir.path(), Bounds { keep: 4, max_bytes: 1000 }).unwrap();
        let mut left: Vec<u64> = ids(dir.path()).unwrap().into_iter().map(|(id, _)| id).collect();
        left.sort_unstable();
        assert_eq!(left, [3, 4, 5, 6]);
        assert!(!dir.path().join("2.notify").exists());
        assert!(dir.path().join("notes.txt").exists() && dir.path().join("007.log").exists());
        prune(dir.path(), Bounds { keep: 50, max_bytes: 25 }).unwrap();
        let mut left: Vec<u64> = ids(dir.path()).unwrap().into_iter().map(|(id, _)| id).collect();
        left.sort_unstable();
        assert_eq!(left, [5, 6], "two logs of 10 bytes fit in 25");
        prune(dir.path(), Bounds { keep: 50, max_bytes: 1 }).unwrap();
        assert_eq!(ids(dir.path()).unwrap(), [(6, 10)], "the newest is kept whatever its size");
    }
}
