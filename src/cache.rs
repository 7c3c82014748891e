//! The build cache: paths of the release (such as Hugo's `resources/_gen`) kept between
//! deploys in `TARGET/.pushdeploy/cache/`.
//!
//! Before the build each cached path is moved into the new release; after a successful build
//! it is moved back (or copied, when the path is served, since a served file must never
//! change). After a failed build the moved-in copy is deleted with the half-made release, so
//! a failed build can cost the cache but never poison it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::release::remove_path;
use crate::report::escape_path;

/// The cached paths of one deploy.
pub struct Cache<'a> {
    store: PathBuf,
    paths: &'a [PathBuf],
    /// The part of the release the link serves (`None`: all of it).
    served: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
#[error("build cache {}: {source}", escape_path(path))]
pub struct Error {
    path: PathBuf,
    source: io::Error,
}

impl<'a> Cache<'a> {
    pub fn new(state_dir: &Path, paths: &'a [PathBuf], served: Option<&'a Path>) -> Cache<'a> {
        Cache { store: state_dir.join("cache"), paths, served }
    }

    /// Moves what is cached into the release. Returns one line per path for the pusher.
    pub fn restore(&self, release: &Path) -> Result<Vec<String>, Error> {
        let mut lines = Vec::new();
        for path in self.paths {
            let (cached, dest) = (self.store.join(path), release.join(path));
            if fs::symlink_metadata(&cached).is_err() {
                continue;
            }
            if fs::symlink_metadata(&dest).is_ok() {
                lines.push(format!(
                    "build cache: {} is in the commit; the cached copy is not used",
                    escape_path(path)
                ));
                continue;
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .map_err(|source| Error { path: path.clone(), source })?;
            }
            fs::rename(&cached, &dest).map_err(|source| Error { path: path.clone(), source })?;
            lines.push(format!("build cache: reusing {}", escape_path(path)));
        }
        Ok(lines)
    }

    /// Keeps what a successful build left at the cached paths for the next build.
    pub fn save(&self, release: &Path) -> Result<(), Error> {
        for path in self.paths {
            let (built, cached) = (release.join(path), self.store.join(path));
            if fs::symlink_metadata(&built).is_err() {
                continue;
            }
            let error = |source| Error { path: path.clone(), source };
            let io_error = |err: crate::release::Error| error(io::Error::other(err.to_string()));
            remove_path(&cached).map_err(io_error)?;
            if let Some(parent) = cached.parent() {
                fs::create_dir_all(parent).map_err(error)?;
            }
            let served = self.served.is_none_or(|served| path.starts_with(served));
            if served {
                copy_tree(&built, &cached).map_err(error)?;
            } else {
                fs::rename(&built, &cached).map_err(error)?;
            }
        }
        Ok(())
    }
}

/// Copies a file, symlink or directory tree, keeping modes.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(io::Error::other)?;
        let dest = to.join(entry.path().strip_prefix(from).map_err(io::Error::other)?);
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir(&dest)?;
            fs::set_permissions(&dest, entry.metadata().map_err(io::Error::other)?.permissions())?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
        } else {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
