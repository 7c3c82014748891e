//! Writes made durable together: one `syncfs` for what a run wrote after its switch, instead
//! of one `fsync` per file.
//!
//! On a journaling filesystem every `fsync` is a journal commit (several milliseconds on ext4),
//! and after the switch a deploy writes several small files: the history line, its log, the
//! deploy refs, the rename of the link itself. Each is written as before (appended, or by a
//! temporary name and a rename) and its filesystem noted here; [`flush`] then syncs each noted
//! filesystem once. Whoever tells the pusher an outcome flushes first, so what the pusher is
//! told is on disk, as when each file was synced on its own.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use tracing::instrument;

use super::Error;

/// A directory on each filesystem written to since the last [`flush`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Notes that `dir`'s filesystem holds writes that the next [`flush`] makes durable.
pub fn defer(dir: &Path) {
    // A panic elsewhere while the list was held leaves it as it was: still the list to sync.
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    if !pending.iter().any(|known| known == dir) {
        pending.push(dir.to_owned());
    }
}

/// Makes every deferred write durable: one `syncfs` per directory noted (a target and its
/// state directory share a filesystem, so this is one `syncfs` for a deploy).
#[instrument(skip_all)]
pub fn flush() -> Result<(), Error> {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    let mut synced: Vec<u64> = Vec::new();
    let mut result = Ok(());
    for dir in pending {
        if let Err(err) = sync_once(&dir, &mut synced) {
            result = Err(err);
        }
    }
    result
}

/// Syncs the filesystem of `dir` unless one of `synced` (device numbers) is it.
fn sync_once(dir: &Path, synced: &mut Vec<u64>) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let file = match File::open(dir) {
        Ok(file) => file,
        // A target removed meanwhile (`pushdeploy remove`) has nothing left to sync.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: dir.to_owned(), source }),
    };
    let device = file.metadata().map_err(Error::io(dir))?.dev();
    if synced.contains(&device) {
        return Ok(());
    }
    nix::unistd::syncfs(&file)
        .map_err(|errno| Error::Io { path: dir.to_owned(), source: errno.into() })?;
    synced.push(device);
    Ok(())
}
