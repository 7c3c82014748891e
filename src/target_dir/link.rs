//! The switch: the link renamed onto a release, made durable.

use std::fs::{self, File};
use std::path::Path;

use tracing::instrument;

use super::durable;
use super::layout::{Error, Layout};
use super::slots::clear_new_link;

/// Switches the link to `link_target` (relative to the target directory) with one rename.
///
/// The new link is made beside the live one and renamed over it: at every instant the link
/// exists and points at a complete release. Unlinking first would leave a moment with no site.
///
/// The rename is served at once, and made durable by the next [`durable::flush`], which comes
/// before the pusher is told the release is live: without it a power cut could bring back the
/// old link after that. One `syncfs` there covers the rename and the records written after it,
/// where an `fsync` of the target directory here was a journal commit of its own.
#[instrument(skip_all)]
pub fn activate(layout: &Layout, link_target: &Path) -> Result<(), Error> {
    let new_link = layout.new_link();
    clear_new_link(layout)?;
    std::os::unix::fs::symlink(link_target, &new_link).map_err(Error::io(&new_link))?;
    fs::rename(&new_link, &layout.link).map_err(Error::io(&layout.link))?;
    durable::defer(&layout.target);
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
