//! The build cache: paths of the release (such as Hugo's `resources/_gen`) kept between
//! deploys in `TARGET/.pushdeploy/cache/`.
//!
//! Before the build each cached path is moved into the new release; after a successful build
//! it is moved back (or copied, when the path is served, since a served file must never
//! change). After a failed build the moved-in copy is deleted with the half-made release, so
//! a failed build can cost the cache but never poison it.
//!
//! What the build left is hostile input. Each component of a cached path is checked with
//! `lstat`, in the release and in the store, and a symlink refuses the path: otherwise a build
//! that makes `a` a link to an outside directory gets `a/b` moved out of it. The checks and the
//! moves go by path rather than through directory handles because nothing can change the
//! release between them: every process of the build is gone when the build stage ends (see
//! `build::run`), and the deploy lock keeps other deploys out. A copy opens only regular files,
//! with `O_NOFOLLOW | O_NONBLOCK`, and refuses anything else (a FIFO would block the open, and
//! the deploy with it, forever). A copy is written under `cache.partial/` beside the store and
//! renamed into place whole, so a copy cut short by SIGKILL is never reused; the next build
//! deletes what such a copy left.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::report::escape_path;
use crate::target_dir::slots::remove_path;

/// The cached paths of one deploy.
pub struct Cache<'a> {
    store: PathBuf,
    /// Where copies are written before they are renamed into the store; never read from.
    partial: PathBuf,
    paths: &'a [PathBuf],
    /// The part of the release the link serves (`None`: all of it).
    served: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("build cache {}: {source}", escape_path(path))]
    Io { path: PathBuf, source: io::Error },
    #[error("build cache: refused {}: {why}", escape_path(path))]
    Refused { path: PathBuf, why: String },
}

impl Error {
    /// Tells whether the filesystem ran out of space (or inodes).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC))
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_owned(), source }
    }

    /// Keeps the io error (and so its kind, such as ENOSPC) of a failed removal.
    fn removal(path: &Path) -> impl FnOnce(crate::target_dir::Error) -> Error + '_ {
        move |err| match err {
            crate::target_dir::Error::Io { source, .. } => {
                Error::Io { path: path.to_owned(), source }
            }
            other => {
                Error::Io { path: path.to_owned(), source: io::Error::other(other.to_string()) }
            }
        }
    }
}

impl<'a> Cache<'a> {
    pub fn new(state_dir: &Path, paths: &'a [PathBuf], served: Option<&'a Path>) -> Cache<'a> {
        Cache {
            store: state_dir.join("cache"),
            partial: state_dir.join("cache.partial"),
            paths,
            served,
        }
    }

    /// Moves what is cached into the release. Returns one line per path for the pusher.
    pub fn restore(&self, release: &Path) -> Result<Vec<String>, Error> {
        self.remove_partial()?;
        let mut lines = Vec::new();
        for path in self.paths {
            if resolve(&self.store, path)?.is_none() {
                continue;
            }
            if resolve(release, path)?.is_some() {
                lines.push(format!(
                    "build cache: {} is in the commit; the cached copy is not used",
                    escape_path(path)
                ));
                continue;
            }
            let (cached, dest) = (self.store.join(path), release.join(path));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::io(path))?;
            }
            fs::rename(&cached, &dest).map_err(Error::io(path))?;
            lines.push(format!("build cache: reusing {}", escape_path(path)));
        }
        Ok(lines)
    }

    /// Keeps what a successful build left at the cached paths for the next build.
    pub fn save(&self, release: &Path) -> Result<(), Error> {
        self.remove_partial()?;
        for path in self.paths {
            if resolve(release, path)?.is_none() {
                continue;
            }
            // The store is pushdeploy's own, but its parent directories are made here and
            // must be real directories too.
            resolve(&self.store, path)?;
            let (built, cached) = (release.join(path), self.store.join(path));
            if let Some(parent) = cached.parent() {
                fs::create_dir_all(parent).map_err(Error::io(path))?;
            }
            let served = self.served.is_none_or(|served| path.starts_with(served));
            if served {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.partial)
                    .map_err(Error::io(path))?;
                let copy = self.partial.join("copy");
                copy_tree(&built, &copy, path)?;
                remove_path(&cached).map_err(Error::removal(path))?;
                fs::rename(&copy, &cached).map_err(Error::io(path))?;
            } else {
                remove_path(&cached).map_err(Error::removal(path))?;
                fs::rename(&built, &cached).map_err(Error::io(path))?;
            }
        }
        self.remove_partial()
    }

    /// Removes what a copy cut short (by SIGKILL, say) left behind.
    fn remove_partial(&self) -> Result<(), Error> {
        remove_path(&self.partial).map_err(Error::removal(Path::new("cache.partial")))
    }
}

/// Returns the `lstat` of `root/path` when it exists, having checked each component with
/// `lstat`: a symlink anywhere on the way refuses the path. `None` when a component is missing
/// (or is not a directory, so that the path cannot exist).
fn resolve(root: &Path, path: &Path) -> Result<Option<Metadata>, Error> {
    let mut prefix = PathBuf::new();
    let mut components = path.components().peekable();
    while let Some(component) = components.next() {
        prefix.push(component);
        let meta = match fs::symlink_metadata(root.join(&prefix)) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
        };
        if meta.file_type().is_symlink() {
            return Err(Error::Refused {
                path: path.to_owned(),
                why: format!(
                    "{} is a symlink; a cached path may not lead through one: make the build \
                     write a real directory there",
                    escape_path(&prefix)
                ),
            });
        }
        if components.peek().is_none() {
            return Ok(Some(meta));
        }
        if !meta.is_dir() {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Copies the tree at `from` (the cached path `path`) to `to`, keeping modes and symlinks as
/// they are. Refuses a FIFO, socket or device node without opening it.
fn copy_tree(from: &Path, to: &Path, path: &Path) -> Result<(), Error> {
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(from).follow_links(false).follow_root_links(false) {
        let entry = entry.map_err(|err| Error::Io { path: path.to_owned(), source: err.into() })?;
        let relative = entry.path().strip_prefix(from).unwrap_or(Path::new(""));
        let (shown, dest) = (path.join(relative), to.join(relative));
        let io = Error::io(&shown);
        let kind = entry.file_type();
        if kind.is_dir() {
            // Writable while it is filled; its own mode is set once everything is in.
            fs::DirBuilder::new().mode(0o700).create(&dest).map_err(io)?;
            let meta = entry
                .metadata()
                .map_err(|err| Error::Io { path: shown.clone(), source: err.into() })?;
            dirs.push((dest, meta.permissions()));
        } else if kind.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(Error::io(&shown))?;
            std::os::unix::fs::symlink(target, &dest).map_err(io)?;
        } else if kind.is_file() {
            copy_file(entry.path(), &dest, &shown)?;
        } else {
            return Err(refused_kind(&shown, &kind));
        }
    }
    // Deepest first, so a read-only directory is closed only after what is inside it.
    for (dir, permissions) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, permissions).map_err(Error::io(&dir))?;
    }
    Ok(())
}

/// Copies one regular file. The open neither follows a symlink nor blocks (a FIFO put in the
/// file's place would), and what was opened is checked to be a regular file before it is read.
fn copy_file(from: &Path, to: &Path, shown: &Path) -> Result<(), Error> {
    let mut source = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(from)
        .map_err(Error::io(shown))?;
    let meta = source.metadata().map_err(Error::io(shown))?;
    if !meta.file_type().is_file() {
        return Err(refused_kind(shown, &meta.file_type()));
    }
    let mut dest: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(Error::io(shown))?;
    io::copy(&mut source, &mut dest).map_err(Error::io(shown))?;
    dest.set_permissions(fs::Permissions::from_mode(meta.permissions().mode() & 0o7777))
        .map_err(Error::io(shown))
}

fn refused_kind(path: &Path, kind: &fs::FileType) -> Error {
    let what = crate::release::check::special_kind(kind);
    Error::Refused {
        path: path.to_owned(),
        why: format!(
            "{what}; the cache keeps only regular files, directories and symlinks: make the \
             build remove it"
        ),
    }
}
