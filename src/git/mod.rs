//! Every git2 call pushdeploy makes. No git2 type leaks out of this module.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, RepositoryInitOptions, TreeWalkMode, TreeWalkResult};

mod ids;

pub use ids::{BlobId, CommitId, Entry, EntryKind, Parents};

/// One path that differs between two commits' trees ([`Repo::tree_changes`]): what it was
/// (`None`: added) and what it is (`None`: removed). Never a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub old: Option<EntryKind>,
    pub new: Option<EntryKind>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is not a git repository: {}", path.display(), source.message())]
    Open { path: PathBuf, source: git2::Error },
    #[error("cannot create the bare repository {}: {}", path.display(), source.message())]
    Init { path: PathBuf, source: git2::Error },
    #[error("{rev:?} does not name a commit in {}: {}", repo.display(), source.message())]
    Resolve { repo: PathBuf, rev: String, source: git2::Error },
    #[error("cannot read {what} from {}: {}", repo.display(), source.message())]
    Read { repo: PathBuf, what: String, source: git2::Error },
}

impl Error {
    /// Tells whether opening the repository failed only because another user owns it (git's
    /// and libgit2's `safe.directory` check).
    pub fn is_not_owned(&self) -> bool {
        matches!(self, Error::Open { source, .. } if source.code() == git2::ErrorCode::Owner)
    }

    /// Returns what to do about the error, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Open { .. } => {
                Some("pass --repo with the path of the bare repository pushdeploy init made".into())
            }
            Error::Resolve { .. } => {
                Some("name a branch, tag or commit that exists in the repository".into())
            }
            Error::Init { .. } | Error::Read { .. } => None,
        }
    }
}

/// How much of a pack file libgit2 maps at a time, and in all. Its defaults (1 GiB windows,
/// 8 GiB mapped) leave every page of the pack that a deploy reads resident until exit, which
/// is most of the process's RSS on a large site; small windows bound it.
const PACK_WINDOW: usize = 4 * 1024 * 1024;
const PACK_MAPPED_LIMIT: usize = 16 * 1024 * 1024;

/// Sets libgit2's global options. Call once, first thing in `main`.
///
/// Besides bounding the memory mapped for packs, it turns off re-hashing every object read:
/// git checked each object's id when the push stored it (index-pack), so hashing all of them
/// again on every deploy (a quarter of a first deploy's CPU) checks nothing new. It turns off
/// the object cache too: a deploy reads each tree once, and the cache would keep every tree
/// under 4 KiB (a directory of up to about 90 entries) to the end, up to 256 MiB.
#[allow(unsafe_code)]
pub fn configure_libgit2() {
    git2::opts::strict_hash_verification(false);
    git2::opts::enable_caching(false);
    // SAFETY: these set libgit2's global options, which is unsound only while another thread
    // uses libgit2; `main` calls this before anything else runs, on the only thread.
    unsafe {
        let _ = git2::opts::set_mwindow_size(PACK_WINDOW);
        let _ = git2::opts::set_mwindow_mapped_limit(PACK_MAPPED_LIMIT);
    }
}

/// Lets this process open repositories another user owns, which libgit2 refuses by default
/// (as git does without `safe.directory`). `init` run as root calls it for the git user's
/// repository: the refusal guards against a repository's config making whoever opens it run
/// a program (`core.fsmonitor`, hooks), and libgit2 runs none; what init writes there goes
/// through handles that follow no symlink the owner planted.
#[allow(unsafe_code)]
pub fn trust_repository_owners() {
    // SAFETY: this sets a libgit2 global option, which is unsound only while another thread
    // uses libgit2; init calls it before it opens the repository, on its only thread.
    unsafe {
        let _ = git2::opts::set_verify_owner_validation(false);
    }
}

/// Tells whether `name` may name a branch (`refs/heads/<name>` is a valid ref name).
pub fn is_valid_branch_name(name: &str) -> bool {
    git2::Branch::name_is_valid(name).unwrap_or(false)
}

/// Returns the hex SHA-1 git would give `bytes` as a blob: a stable name for a string that
/// must not be used as a file name itself.
pub fn fingerprint(bytes: &[u8]) -> String {
    Oid::hash_object(ObjectType::Blob, bytes).map(|oid| oid.to_string()).unwrap_or_default()
}

/// The deepest nesting of trees the diff route walks: git's own `core.maxTreeDepth` default.
const MAX_TREE_DEPTH: usize = 4096;

/// An open repository.
pub struct Repo {
    inner: Repository,
    path: PathBuf,
}

impl Repo {
    /// Opens the repository at `path` (bare or not).
    ///
    /// In a pre-receive hook, git keeps the pushed objects in a quarantine directory named by
    /// `GIT_QUARANTINE_PATH` until the hook accepts; it is added as an alternate object
    /// directory so the pushed commit can be read.
    pub fn open(path: &Path) -> Result<Repo, Error> {
        let error = |source| Error::Open { path: path.to_owned(), source };
        let inner = Repository::open(path).map_err(error)?;
        if let Some(quarantine) = std::env::var_os("GIT_QUARANTINE_PATH") {
            inner
                .odb()
                .and_then(|odb| odb.add_disk_alternate(&quarantine.to_string_lossy()))
                .map_err(error)?;
        }
        let path = inner.path().to_owned();
        Ok(Repo { inner, path })
    }

    /// Opens the bare repository at `path`, creating it when it does not exist.
    /// Returns the repository and whether it was created.
    pub fn open_or_init_bare(path: &Path) -> Result<(Repo, bool), Error> {
        // An empty directory (made beforehand with the right owner, say) becomes the repository.
        let empty = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
        if path.exists() && !empty {
            return Repo::open(path).map(|repo| (repo, false));
        }
        let mut options = RepositoryInitOptions::new();
        options.bare(true).mkpath(true);
        let inner = Repository::init_opts(path, &options)
            .map_err(|source| Error::Init { path: path.to_owned(), source })?;
        let path = inner.path().to_owned();
        Ok((Repo { inner, path }, true))
    }

    /// Returns the repository's directory (the `.git` directory of a non-bare one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Points HEAD at `refs/heads/<branch>`, so clones check out the deploy branch.
    pub fn set_head_branch(&self, branch: &str) -> Result<(), Error> {
        self.inner
            .set_head(&format!("refs/heads/{branch}"))
            .map_err(|source| self.read_error("HEAD", source))
    }

    /// Sets a boolean key in the repository's own config file.
    pub fn set_config_bool(&self, key: &str, value: bool) -> Result<(), Error> {
        self.inner
            .config()
            .and_then(|mut config| config.set_bool(key, value))
            .map_err(|source| self.read_error(key, source))
    }

    /// Returns a boolean key as git reads it (the repository's own config over the user's and
    /// the system's), or `None` when it is unset, not a boolean, or the config is unreadable.
    pub fn config_bool(&self, key: &str) -> Option<bool> {
        self.inner.config().and_then(|config| config.get_bool(key)).ok()
    }

    /// Returns a path-valued key as git reads it (`~/` expanded), or `None` when it is unset.
    pub fn config_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.config().and_then(|config| config.get_path(key)).ok()
    }

    /// Makes `dir` a repository on `branch` whose first commit holds every file in it, with
    /// the user's git identity (or pushdeploy's, when git has none). Returns the commit.
    pub fn init_with_commit(dir: &Path, branch: &str, message: &str) -> Result<CommitId, Error> {
        let error = |source| Error::Init { path: dir.to_owned(), source };
        let mut options = RepositoryInitOptions::new();
        options.initial_head(branch).no_reinit(true);
        let repo = Repository::init_opts(dir, &options).map_err(error)?;
        let mut index = repo.index().map_err(error)?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).map_err(error)?;
        index.write().map_err(error)?;
        let tree = index.write_tree().and_then(|id| repo.find_tree(id)).map_err(error)?;
        let signature = repo
            .signature()
            .or_else(|_| git2::Signature::now("pushdeploy", "pushdeploy@localhost"))
            .map_err(error)?;
        let commit = repo
            .commit(Some("HEAD"), &signature, &signature, message, &tree, &[])
            .map_err(error)?;
        Ok(CommitId(commit))
    }

    /// Adds a remote to the repository at `dir`.
    pub fn add_remote(dir: &Path, name: &str, url: &str) -> Result<(), Error> {
        Repository::open(dir)
            .and_then(|repo| repo.remote(name, url).map(drop))
            .map_err(|source| Error::Init { path: dir.to_owned(), source })
    }

    /// Resolves a revision (branch, tag, ref, or commit id) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<CommitId, Error> {
        self.inner
            .revparse_single(rev)
            .and_then(|object| object.peel_to_commit())
            .map(|commit| CommitId(commit.id()))
            .map_err(|source| Error::Resolve {
                repo: self.path.clone(),
                rev: rev.to_owned(),
                source,
            })
    }

    /// Returns the commit a ref points at, or `None` when the ref does not exist.
    pub fn ref_target(&self, name: &str) -> Result<Option<CommitId>, Error> {
        match self.inner.find_reference(name) {
            Ok(reference) => reference
                .peel_to_commit()
                .map(|commit| Some(CommitId(commit.id())))
                .map_err(|source| self.read_error(name, source)),
            Err(err) if err.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(source) => Err(self.read_error(name, source)),
        }
    }

    /// Returns whether the repository has a branch other than `branch` (a short name).
    pub fn has_branch_other_than(&self, branch: &str) -> Result<bool, Error> {
        let what = "the branches";
        let branches = self
            .inner
            .branches(Some(git2::BranchType::Local))
            .map_err(|source| self.read_error(what, source))?;
        for item in branches {
            let (found, _) = item.map_err(|source| self.read_error(what, source))?;
            if found.name_bytes().map_err(|source| self.read_error(what, source))?
                != branch.as_bytes()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Creates or moves a ref to a commit.
    pub fn set_ref(&self, name: &str, commit: CommitId, message: &str) -> Result<(), Error> {
        self.inner
            .reference(name, commit.0, true, message)
            .map(drop)
            .map_err(|source| self.read_error(name, source))
    }

    /// Returns the first line of a commit's message.
    pub fn summary(&self, commit: CommitId) -> Result<String, Error> {
        let commit =
            self.inner.find_commit(commit.0).map_err(|source| self.read_error("commit", source))?;
        Ok(String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned())
    }

    /// Lists every entry of a commit's tree, in pre-order.
    pub fn tree_entries(&self, commit: CommitId) -> Result<Vec<Entry>, Error> {
        let tree = self
            .inner
            .find_commit(commit.0)
            .and_then(|commit| commit.tree())
            .map_err(|source| self.read_error("the commit's tree", source))?;
        let mut entries = Vec::new();
        let mut parents = Parents::default();
        let mut failure = None;
        tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            // libgit2 hands the parent as "a/b/" text; tree paths are bytes on unix.
            let root = root.as_bytes();
            let parent =
                parents.get(Path::new(OsStr::from_bytes(root.strip_suffix(b"/").unwrap_or(root))));
            let name = OsString::from_vec(entry.name_bytes().to_vec());
            let kind = match self.kind_of(entry) {
                Ok(Some(kind)) => kind,
                Ok(None) => return TreeWalkResult::Ok,
                Err(err) => {
                    failure = Some(err);
                    return TreeWalkResult::Abort;
                }
            };
            entries.push(Entry { parent, name, kind });
            TreeWalkResult::Ok
        })
        .map_err(|source| self.read_error("the commit's tree", source))?;
        // The vector doubled as it grew: up to a third of it would be unused to the end.
        entries.shrink_to_fit();
        match failure {
            Some(err) => Err(err),
            None => Ok(entries),
        }
    }

    /// Lists what differs between two commits' trees: every file, symlink and submodule that
    /// was added, removed or changed (content, mode or kind), with no rename detection, in
    /// byte order of their paths. A directory appears only through the paths under it; one
    /// that became a file (or the other way) is its old entries removed and the new added.
    ///
    /// Subtrees with the same id on both sides are skipped without being read, so this costs
    /// what changed, not the tree's size. (libgit2's tree-to-tree diff reads every subtree of
    /// both commits: at 100,000 files in 1,000 directories that was about 50 ms of inflating
    /// trees on the diff route's busiest thread.) Entries are classified as
    /// [`Repo::tree_entries`] does, so the changes describe the same trees it lists.
    pub fn tree_changes(&self, old: CommitId, new: CommitId) -> Result<Vec<Change>, Error> {
        let tree_of = |commit: CommitId| {
            self.inner
                .find_commit(commit.0)
                .and_then(|commit| commit.tree())
                .map_err(|source| self.read_error("the commit's tree", source))
        };
        let (old_tree, new_tree) = (tree_of(old)?, tree_of(new)?);
        let mut changes = Vec::new();
        self.diff_trees(&mut Vec::new(), Some(&old_tree), Some(&new_tree), &mut changes)?;
        changes.sort_unstable_by(|a, b| {
            a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes())
        });
        Ok(changes)
    }

    /// Adds to `changes` what differs between two trees at `prefix` (either may be absent:
    /// everything in the other was added or removed).
    fn diff_trees(
        &self,
        prefix: &mut Vec<u8>,
        old: Option<&git2::Tree<'_>>,
        new: Option<&git2::Tree<'_>>,
        changes: &mut Vec<Change>,
    ) -> Result<(), Error> {
        // Tree order puts a directory `a` after `a.txt` (as `a/`): sorted by name alone, an
        // entry and the one of the same name on the other side are side by side.
        fn sorted<'t>(tree: Option<&'t git2::Tree<'_>>) -> Vec<git2::TreeEntry<'t>> {
            let mut entries: Vec<_> = tree.map(|tree| tree.iter().collect()).unwrap_or_default();
            entries.sort_unstable_by(|a, b| a.name_bytes().cmp(b.name_bytes()));
            entries
        }
        let (olds, news) = (sorted(old), sorted(new));
        let (mut olds, mut news) = (olds.iter().peekable(), news.iter().peekable());
        loop {
            let (old, new) = match (olds.peek(), news.peek()) {
                (None, None) => return Ok(()),
                (Some(o), Some(n)) => match o.name_bytes().cmp(n.name_bytes()) {
                    std::cmp::Ordering::Less => (olds.next(), None),
                    std::cmp::Ordering::Greater => (None, news.next()),
                    std::cmp::Ordering::Equal => (olds.next(), news.next()),
                },
                (Some(_), None) => (olds.next(), None),
                (None, Some(_)) => (None, news.next()),
            };
            let name = old.or(new).map(|entry| entry.name_bytes()).unwrap_or_default();
            let depth = prefix.len();
            prefix.extend_from_slice(name);
            let result = self.diff_entries(prefix, old, new, changes);
            prefix.truncate(depth);
            result?;
        }
    }

    /// Adds to `changes` what differs between two entries of the same path (`path`).
    fn diff_entries(
        &self,
        path: &mut Vec<u8>,
        old: Option<&git2::TreeEntry<'_>>,
        new: Option<&git2::TreeEntry<'_>>,
        changes: &mut Vec<Change>,
    ) -> Result<(), Error> {
        let is_tree = |entry: &&git2::TreeEntry<'_>| entry.kind() == Some(ObjectType::Tree);
        if let (Some(o), Some(n)) = (old, new)
            && o.id() == n.id()
            && (is_tree(&o) || o.filemode() == n.filemode())
        {
            return Ok(());
        }
        let (old_tree, old) = match old {
            Some(entry) if is_tree(&entry) => (Some(self.subtree(entry)?), None),
            other => (None, other),
        };
        let (new_tree, new) = match new {
            Some(entry) if is_tree(&entry) => (Some(self.subtree(entry)?), None),
            other => (None, other),
        };
        if old_tree.is_some() || new_tree.is_some() {
            // The walk recurses into each changed subtree: a pushed tree nested deeper than
            // git itself accepts (core.maxTreeDepth) ends it before the stack does.
            if path.iter().filter(|&&byte| byte == b'/').count() >= MAX_TREE_DEPTH {
                let source = git2::Error::from_str("the tree is nested too deep");
                return Err(self.read_error("the changes between the trees", source));
            }
            let depth = path.len();
            path.push(b'/');
            let result = self.diff_trees(path, old_tree.as_ref(), new_tree.as_ref(), changes);
            path.truncate(depth);
            result?;
        }
        let (old, new) = (self.change_side(old)?, self.change_side(new)?);
        if old.is_some() || new.is_some() {
            let path = PathBuf::from(OsStr::from_bytes(path));
            changes.push(Change { path, old, new });
        }
        Ok(())
    }

    fn subtree<'r>(&'r self, entry: &git2::TreeEntry<'_>) -> Result<git2::Tree<'r>, Error> {
        self.inner.find_tree(entry.id()).map_err(|source| self.read_error("a tree", source))
    }

    /// Returns what a file, symlink or submodule entry is, as [`Repo::tree_entries`] sees it;
    /// `None` for none, or an entry it leaves out.
    fn change_side(&self, entry: Option<&git2::TreeEntry<'_>>) -> Result<Option<EntryKind>, Error> {
        entry.map_or(Ok(None), |entry| self.kind_of(entry))
    }

    /// Returns what a tree entry is; `None` for an entry pushdeploy leaves out (a tag, say).
    fn kind_of(&self, entry: &git2::TreeEntry<'_>) -> Result<Option<EntryKind>, Error> {
        Ok(match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => Some(EntryKind::Dir),
            (Some(ObjectType::Commit), _) => {
                Some(EntryKind::Submodule { commit: CommitId(entry.id()) })
            }
            (Some(ObjectType::Blob), 0o120000) => {
                let blob = self
                    .inner
                    .find_blob(entry.id())
                    .map_err(|source| self.read_error("a symlink", source))?;
                Some(EntryKind::Symlink { target: blob.content().to_vec() })
            }
            (Some(ObjectType::Blob), mode) => {
                Some(EntryKind::File { executable: mode & 0o111 != 0, blob: BlobId(entry.id()) })
            }
            _ => None,
        })
    }

    /// Tells whether the repository holds `commit` (as a commit).
    pub fn has_commit(&self, commit: CommitId) -> bool {
        self.inner.find_commit(commit.0).is_ok()
    }

    /// Returns a blob's bytes, or `None` when it is larger than `limit` bytes.
    pub fn read_small_blob(&self, blob: BlobId, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        let blob =
            self.inner.find_blob(blob.0).map_err(|source| self.read_error("a blob", source))?;
        Ok((blob.size() as u64 <= limit).then(|| blob.content().to_vec()))
    }

    /// Returns a blob's size from its header, without reading it.
    pub fn blob_size(&self, blob: BlobId) -> Result<u64, BlobError> {
        self.inner
            .odb()
            .and_then(|odb| odb.read_header(blob.0))
            .map(|(size, _)| size as u64)
            .map_err(|err| BlobError::Git(err.message().to_owned()))
    }

    /// Writes a blob of `size` bytes to `out`, returning its first bytes (for sniffing).
    ///
    /// A blob up to [`STREAM_ABOVE`] is read whole. A larger one is streamed, so memory stays
    /// bounded whatever is pushed: libgit2 streams loose objects only, so a packed one is
    /// streamed by `git cat-file`, which streams undeltified packed blobs (large files are).
    pub fn write_blob(
        &self,
        blob: BlobId,
        size: u64,
        out: &mut File,
    ) -> Result<Vec<u8>, BlobError> {
        let git_error = |err: git2::Error| BlobError::Git(err.message().to_owned());
        if size <= STREAM_ABOVE {
            let blob = self.inner.find_blob(blob.0).map_err(git_error)?;
            out.write_all(blob.content()).map_err(BlobError::Io)?;
            return Ok(blob.content()[..blob.content().len().min(SNIFF)].to_vec());
        }
        let odb = self.inner.odb().map_err(git_error)?;
        if let Ok((mut reader, _, _)) = odb.reader(blob.0) {
            return copy_with_head(&mut reader, out).map_err(BlobError::Io);
        }
        // git streams a packed blob only above core.bigFileThreshold (512 MiB by default), and
        // maps packs in 1 GiB windows unless told otherwise.
        let mut child = std::process::Command::new("git")
            .arg("-c")
            .arg(format!("core.bigFileThreshold={STREAM_ABOVE}"))
            .arg("-c")
            .arg(format!("core.packedGitWindowSize={PACK_WINDOW}"))
            .arg("-c")
            .arg(format!("core.packedGitLimit={PACK_MAPPED_LIMIT}"))
            .arg("--git-dir")
            .arg(&self.path)
            .args(["cat-file", "blob"])
            .arg(blob.0.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|err| {
                BlobError::Git(format!("cannot run `git cat-file` to stream a large file: {err}"))
            })?;
        let copied = match child.stdout.take() {
            Some(mut stdout) => copy_with_head(&mut stdout, out),
            None => Ok(Vec::new()),
        };
        let status = child.wait().map_err(BlobError::Io)?;
        if !status.success() {
            return Err(BlobError::Git(format!("`git cat-file blob {}` failed: {status}", blob.0)));
        }
        copied.map_err(BlobError::Io)
    }

    fn read_error(&self, what: &str, source: git2::Error) -> Error {
        Error::Read { repo: self.path.clone(), what: what.to_owned(), source }
    }
}

/// Blobs larger than this are streamed instead of read into memory whole.
pub const STREAM_ABOVE: u64 = 16 * 1024 * 1024;
/// How many leading bytes of each blob `write_blob` hands back.
const SNIFF: usize = 256;

/// Copies `from` into `out`, returning the first [`SNIFF`] bytes.
fn copy_with_head(from: &mut impl Read, out: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(SNIFF);
    from.take(SNIFF as u64).read_to_end(&mut head)?;
    out.write_all(&head)?;
    std::io::copy(from, out)?;
    Ok(head)
}

/// Why a blob could not be written out.
#[derive(Debug)]
pub enum BlobError {
    Git(String),
    Io(std::io::Error),
}
