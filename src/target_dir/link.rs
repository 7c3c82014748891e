//! The switch: the link renamed onto a release, made durable.

use std::fs::{self, File};
use std::path::Path;

use tracing::instrument;

use super::layout::{Error, Layout};
use super::slots::clear_new_link;

/// Switches the link to `link_target` (relative to the target directory) with one rename.
///
/// The new link is made beside the live one and renamed over it: at every instant the link
/// exists and points at a complete release. Unlinking first would leave a moment with no site.
#[instrument(skip_all)]
pub fn activate(layout: &Layout, link_target: &Path) -> Result<(), Error> {
    let new_link = layout.new_link();
    clear_new_link(layout)?;
    std::os::unix::fs::symlink(link_target, &new_link).map_err(Error::io(&new_link))?;
    fs::rename(&new_link, &layout.link).map_err(Error::io(&layout.link))?;
    // The rename lives in the directory's entries: without this fsync a power cut could bring
    // back the old link after the pusher was told the new release is live. The switch has
    // happened either way, so a failed fsync must not be reported as a failed activation.
    if let Err(err) = sync_dir(&layout.target) {
        tracing::warn!("cannot fsync {}: {err}", layout.target.display());
    }
    Ok(())
}

/// Flushes the whole filesystem that holds `dir`, so a release's files are on disk before the
/// link can point at them (after a power cut a renamed link must not lead to empty files).
#[instrument(skip_all)]
pub fn sync_filesystem(dir: &Path) -> Result<(), Error> {
    let file = File::open(dir).map_err(Error::io(dir))?;
    nix::unistd::syncfs(&file)
        .map_err(|errno| Error::Io { path: dir.to_owned(), source: errno.into() })
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|file| file.sync_all()).map_err(Error::io(dir))
}
