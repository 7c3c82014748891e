//! A release: a commit's tree checked and written into a slot, built, its cache kept, and what
//! is served checked again; the files kept from the release before it for the grace period.

pub mod attributes;
pub mod build;
pub mod cache;
pub mod check;
pub mod diff;
pub mod grace;
pub mod program;
pub mod publish;
pub mod submodules;
pub mod write;

use std::io;
use std::path::{Path, PathBuf};

use crate::git::{self, BlobError};
use crate::report::escape_path;

/// What can go wrong while writing a release.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", escape_path(path))]
    Io { path: PathBuf, source: io::Error },
    #[error("not enough space on the target's filesystem: the release needs about {}, and {} are free in {}", crate::report::bytes(*needed), crate::report::bytes(*available), escape_path(path))]
    NoSpace { path: PathBuf, needed: u64, available: u64 },
    #[error("cannot read {} from the repository: {message}", escape_path(path))]
    Blob { path: PathBuf, message: String },
    /// A writer thread's own handle on the repository (libgit2's are not shared) failed to open;
    /// the message of `source` names the repository.
    #[error("a writer thread cannot open the repository: {source}")]
    Reopen { source: git::Error },
    #[error("a writer thread panicked while writing the release")]
    WriterPanicked,
}

impl Error {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_owned(), source }
    }

    /// Tells whether this is the filesystem being full.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace { .. } => true,
            Error::Io { source, .. } => source.raw_os_error() == Some(nix::libc::ENOSPC),
            Error::Blob { .. } | Error::Reopen { .. } | Error::WriterPanicked => false,
        }
    }

    /// Tells whether this is a bug in pushdeploy rather than something on disk or in the
    /// repository.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::WriterPanicked)
    }
}

fn blob_error(err: BlobError, path: PathBuf) -> Error {
    match err {
        BlobError::Git(message) => Error::Blob { path, message },
        BlobError::Io(source) => Error::Io { path, source },
    }
}
