//! The ids and tree entries the rest of pushdeploy sees of git: opaque outside `git`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Each byte's value as a hex digit, or 0xff for a byte that is not one.
const HEX_VALUES: [u8; 256] = {
    let mut values = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        values[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        values[b'a' as usize + i] = 10 + i as u8;
        values[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    values
};

/// A blob's id, to read it back with [`Repo::write_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobId(pub(super) Oid);

impl BlobId {
    /// Parses a full hex object id.
    pub fn from_hex(hex: &str) -> Option<Self> {
        oid_from_hex(hex).map(BlobId)
    }

    /// Parses a full hex object id given as bytes (lower or upper case), as an index holds
    /// it: decoded here, with no text check and no call into libgit2's parser, since an index
    /// of 100,000 files holds 100,000 of them.
    pub fn from_hex_bytes(hex: &[u8]) -> Option<Self> {
        let hex: &[u8; 40] = hex.try_into().ok()?;
        let mut raw = [0u8; 20];
        let mut invalid = 0;
        for (byte, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
            let (high, low) = (HEX_VALUES[usize::from(pair[0])], HEX_VALUES[usize::from(pair[1])]);
            invalid |= high | low;
            *byte = high << 4 | low;
        }
        if invalid & 0x80 != 0 {
            return None;
        }
        Oid::from_bytes(&raw).ok().map(BlobId)
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
    /// The path of the directory that holds the entry, relative to the tree's root. The
    /// entries of one directory share it: at 100,000 files a path per entry was a tenth of a
    /// deploy's memory.
    pub parent: Arc<Path>,
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

/// Hands out one shared copy of each directory path, for [`Entry::parent`].
#[derive(Debug, Default)]
pub struct Parents {
    last: Option<Arc<Path>>,
    seen: std::collections::HashSet<Arc<Path>>,
}

impl Parents {
    /// Returns the shared copy of `path`, making it on first sight.
    pub fn get(&mut self, path: &Path) -> Arc<Path> {
        // A walk hands out the entries of one directory in a row: most lookups stop here.
        if let Some(last) = self.last.as_ref().filter(|last| ***last == *path) {
            return last.clone();
        }
        let shared = match self.seen.get(path) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<Path> = Arc::from(path);
                self.seen.insert(shared.clone());
                shared
            }
        };
        self.last = Some(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn file(parent: Arc<Path>, name: &[u8]) -> Entry {
        Entry { parent, name: OsStr::from_bytes(name).to_owned(), kind: EntryKind::Dir }
    }

    #[test]
    fn shared_parents_give_the_same_paths() {
        let mut parents = Parents::default();
        let root = parents.get(Path::new(""));
        let nested = parents.get(Path::new("a/b c/\u{e9}"));
        let odd = parents.get(Path::new(OsStr::from_bytes(b"x/\xff\xfe/-")));
        assert_eq!(file(root.clone(), b"top").path(), Path::new("top"));
        assert_eq!(file(nested.clone(), b"f.html").path(), Path::new("a/b c/\u{e9}/f.html"));
        assert_eq!(
            file(odd.clone(), b"\x80 .txt").path().as_os_str().as_bytes(),
            b"x/\xff\xfe/-/\x80 .txt"
        );
        // Coming back to a directory after another gives the very same copy.
        assert!(Arc::ptr_eq(&parents.get(Path::new("a/b c/\u{e9}")), &nested));
        assert!(Arc::ptr_eq(&parents.get(Path::new("")), &root));
        assert!(Arc::ptr_eq(&parents.get(Path::new(OsStr::from_bytes(b"x/\xff\xfe/-"))), &odd));
    }
}
