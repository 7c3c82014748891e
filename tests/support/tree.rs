//! Trees on disk: walked without following links, made by `git archive`, compared entry by entry.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::TestEnv;

/// A tree on disk, keyed by path relative to its root.
pub type Tree = BTreeMap<PathBuf, Entry>;

/// One entry of a [`Tree`]: what a deploy must reproduce exactly.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, contents: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::File { mode, contents } => {
                let text = String::from_utf8_lossy(contents);
                let shown: String = text.chars().take(60).collect();
                write!(f, "file {mode:04o}, {} bytes {shown:?}", contents.len())
            }
            Entry::Dir { mode } => write!(f, "dir {mode:04o}"),
            Entry::Symlink { target } => write!(f, "symlink -> {}", target.display()),
        }
    }
}

/// What is served: where the link points and the tree behind it.
#[derive(Debug)]
pub struct LiveSite {
    pub link_target: PathBuf,
    pub tree: Tree,
}

impl TestEnv {
    /// Returns every entry under `dir` (relative paths resolve against the temp dir), without
    /// following symlinks. The one tree walk of the harness.
    #[track_caller]
    pub fn snapshot_tree(&self, dir: impl AsRef<Path>) -> Tree {
        let dir = self.root.join(dir);
        let mut tree = Tree::new();
        for item in WalkDir::new(&dir).min_depth(1).follow_links(false).sort_by_file_name() {
            let item = item.unwrap_or_else(|e| panic!("walk {}: {e}", dir.display()));
            let path = item.path();
            let meta = item.metadata().unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let mode = meta.mode() & 0o7777;
            let entry = if meta.file_type().is_symlink() {
                let target = fs::read_link(path)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
                Entry::Symlink { target }
            } else if meta.is_dir() {
                Entry::Dir { mode }
            } else if meta.is_file() {
                let contents =
                    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                Entry::File { mode, contents }
            } else {
                panic!("{} is neither file, dir nor symlink", path.display());
            };
            let relative = path.strip_prefix(&dir).expect("walked path is under its root");
            tree.insert(relative.to_owned(), entry);
        }
        tree
    }

    /// Returns the tree `git archive COMMIT` produces, extracted with `tar -x -p`.
    #[track_caller]
    pub fn archive_tree(&self, commit: &str) -> Tree {
        self.archive_tree_of(&self.bare, commit)
    }

    /// Returns the tree `git archive COMMIT` produces in the repository at `repo`.
    #[track_caller]
    pub fn archive_tree_of(&self, repo: &Path, commit: &str) -> Tree {
        let archive = self.git_in(repo).args(["-c", "tar.umask=0022", "archive", commit]).success();
        let dir = tempfile::Builder::new()
            .prefix("archive-")
            .tempdir_in(&self.root)
            .expect("create archive dir");
        let _ = self
            .command("tar")
            .args(["-x", "-p", "-C"])
            .arg(dir.path())
            .stdin(archive.stdout_bytes())
            .success();
        self.snapshot_tree(dir.path())
    }

    /// Asserts the live release is exactly what `git archive COMMIT` produces: same paths,
    /// file types, permission bits, bytes and symlink targets.
    #[track_caller]
    pub fn assert_live_equals_archive(&self, commit: &str) {
        let live = self.snapshot_tree(self.live_dir());
        assert_trees_equal(&self.archive_tree(commit), &live);
    }

    /// Records what is served now, to compare after a deploy that must not change it.
    #[track_caller]
    pub fn live_site(&self) -> LiveSite {
        LiveSite { link_target: self.link_target(), tree: self.snapshot_tree(self.live_dir()) }
    }

    /// Asserts the link and the live release are exactly as recorded, and no other slot is
    /// left behind.
    #[track_caller]
    pub fn assert_live_unchanged(&self, before: &LiveSite) {
        assert_eq!(self.link_target(), before.link_target, "the link moved");
        assert_trees_equal(&before.tree, &self.snapshot_tree(self.live_dir()));
        self.assert_no_idle_slot();
    }

    /// Asserts the slot that is not live does not exist (no half-made or retired release).
    #[track_caller]
    pub fn assert_no_idle_slot(&self) {
        let idle = self.target.join(self.idle_slot());
        assert!(
            fs::symlink_metadata(&idle).is_err(),
            "{} exists: {:?}",
            idle.display(),
            self.snapshot_tree(&idle).keys().collect::<Vec<_>>()
        );
    }
}

/// Asserts two trees are identical, listing every difference.
#[track_caller]
pub fn assert_trees_equal(expected: &Tree, actual: &Tree) {
    let mut report = String::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => writeln!(report, "  missing    {path:?}: {want:?}"),
            Some(got) if got != want => {
                writeln!(report, "  different  {path:?}: expected {want:?}, found {got:?}")
            }
            Some(_) => Ok(()),
        }
        .expect("write to String");
    }
    for (path, got) in actual {
        if !expected.contains_key(path) {
            writeln!(report, "  unexpected {path:?}: {got:?}").expect("write to String");
        }
    }
    assert!(report.is_empty(), "trees differ:\n{report}");
}
