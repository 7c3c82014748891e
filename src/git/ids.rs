//! The ids and tree entries the rest of pushdeploy sees of git: opaque outside `git`.

use std::ffi::OsString;
use std::path::PathBuf;

use git2::Oid;

/// Parses a full (40-digit) hex object id.
fn oid_from_hex(hex: &str) -> Option<Oid> {
    Oid::from_str(hex).ok().filter(|_| hex.len() == 40)
}

/// A commit id, opaque outside this module except through its hex forms. Serialized as its
/// full hex id (records, the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitId(pub(super) Oid);

impl CommitId {
    /// Parses a full hex object id.
    pub fn from_hex(hex: &str) -> Option<Self> {
        oid_from_hex(hex).map(CommitId)
    }

    /// Returns the full hex id.
    pub fn hex(&self) -> String {
        self.0.to_string()
    }

    /// Returns the seven-character abbreviation used in every message.
    pub fn short(&self) -> String {
        let mut hex = self.0.to_string();
        hex.truncate(7);
        hex
    }

    /// Tells whether this is git's all-zero id (a created or deleted ref on the other side).
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl serde::Serialize for CommitId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CommitId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        CommitId::from_hex(&hex)
            .ok_or_else(|| serde::de::Error::custom(format!("not a full commit id: {hex:?}")))
    }
}

/// A blob's id, to read it back with [`Repo::write_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobId(pub(super) Oid);

impl BlobId {
    /// Parses a full hex object id.
    pub fn from_hex(hex: &str) -> Option<Self> {
        oid_from_hex(hex).map(BlobId)
    }

    /// Returns the full hex id.
    pub fn hex(&self) -> String {
        self.0.to_string()
    }
}

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A file and its blob (its size is read only when needed: [`Repo::blob_size`]).
    File {
        executable: bool,
        blob: BlobId,
    },
    /// A symlink and the raw bytes of its target.
    Symlink {
        target: Vec<u8>,
    },
    /// A gitlink: a submodule's commit, which `git archive` writes as an empty directory.
    Submodule {
        commit: CommitId,
    },
}

/// One entry of a commit's tree, in pre-order (a directory comes before what it holds).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path of the directory that holds the entry, relative to the tree's root.
    pub parent: PathBuf,
    /// The entry's own name, exactly as the tree holds it (it may contain anything but NUL).
    pub name: OsString,
    pub kind: EntryKind,
}

impl Entry {
    /// Returns the entry's path relative to the tree's root.
    pub fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }
}
