//! Writing a commit's tree into a slot: files, directories, symlinks, as `git archive` would,
//! hard-linking what an unmodified earlier release already holds.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::instrument;

use super::attributes::Converted;
use super::{Error, blob_error};
use crate::git::{BlobError, BlobId, CommitId, Entry, EntryKind, Repo};
use crate::report::escape_path;
use crate::target_dir::index::{self, FileStat, Index, IndexEntry};
use crate::target_dir::path_map::PathMap;

/// What materializing wrote.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub files: u64,
    /// Of `files`, how many were hard-linked from the base release rather than written.
    pub linked: u64,
    pub bytes: u64,
    /// Things the pusher should know that do not fail the deploy.
    pub warnings: Vec<String>,
}

/// Refuses, before anything is written, a release that clearly does not fit on the target's
/// filesystem: each file to write counts whole 4 KiB blocks, as does each directory; files the
/// base release can lend count nothing. A file `.gitattributes` converts counts its converted
/// bytes, which are lent only by a release that holds those bytes.
pub fn check_space(trees: &[Tree<'_>], base: Option<&Base>, target: &Path) -> Result<(), Error> {
    const BLOCK: u64 = 4096;
    let lent = |path: &Path, blob: Option<BlobId>| {
        base.and_then(|base| base.index.files.get(path))
            .is_some_and(|known| Some(known.blob) == blob)
    };
    let mut needed = 0;
    for (tree, entry) in trees.iter().flat_map(|tree| tree.entries.iter().map(move |e| (tree, e))) {
        let path = entry.path();
        let conversion = tree.converted.get(&path);
        let id = |blob: &BlobId| conversion.map_or(Some(*blob), |file| file.id);
        needed += match &entry.kind {
            EntryKind::File { blob, .. } if lent(&path, id(blob)) => 0,
            EntryKind::File { blob, .. } => {
                let size = match conversion {
                    Some(file) => file.len,
                    None => tree.repo.blob_size(*blob).map_err(|err| blob_error(err, path))?,
                };
                size.div_ceil(BLOCK).max(1) * BLOCK
            }
            _ => BLOCK,
        };
    }
    let available = free_space(target)?;
    if needed > available {
        return Err(Error::NoSpace { path: target.to_owned(), needed, available });
    }
    Ok(())
}

/// Returns the bytes an unprivileged user may still write on the filesystem of `path`.
pub fn free_space(path: &Path) -> Result<u64, Error> {
    let stats = nix::sys::statvfs::statvfs(path)
        .map_err(|errno| Error::Io { path: path.to_owned(), source: errno.into() })?;
    Ok(stats.blocks_available().saturating_mul(stats.fragment_size()))
}

/// One tree to write: its entries, the repository its blobs are read from, and the files
/// `.gitattributes` converted (none for a submodule's tree: `git archive` has no rules there).
pub struct Tree<'a> {
    pub repo: &'a Repo,
    pub entries: &'a [Entry],
    pub converted: &'a Converted,
}

/// A complete, unmodified release that files can be hard-linked from. Its index becomes the
/// new release's: most of a release is linked from the one before, with the same entries.
pub struct Base {
    pub dir: PathBuf,
    pub index: Index,
}

/// Writes checked trees into `dir` with [`materialize`], one after the other: the commit's
/// own first, then each submodule's (read from its own repository, its paths relative to the
/// release's root), each after the directory it goes into. Returns what was written in all.
pub fn materialize_all(
    trees: &[Tree<'_>],
    dir: &Path,
    base: Option<Base>,
    umask: u32,
    want_index: bool,
) -> Result<(Written, Option<Index>), Error> {
    let mut written = Written::default();
    // The writers put the files they write into one map; with no base that is every file.
    let fresh = Mutex::new(Fresh::default());
    if want_index && base.is_none() {
        let files = trees.iter().flat_map(|tree| tree.entries.iter());
        let count = files.filter(|entry| matches!(entry.kind, EntryKind::File { .. })).count();
        lock(&fresh).indexed.reserve(count);
    }
    for tree in trees {
        // Blob ids are content hashes in every repository, so linking by blob stays valid.
        let sink = want_index.then_some(&fresh);
        let part =
            materialize(tree.repo, tree.entries, tree.converted, dir, base.as_ref(), umask, sink)?;
        written.files += part.files;
        written.linked += part.linked;
        written.bytes += part.bytes;
        written.warnings.extend(part.warnings);
    }
    if !want_index {
        return Ok((written, None));
    }
    let fresh = fresh.into_inner().unwrap_or_else(PoisonError::into_inner);
    let indexed = written.linked as usize + fresh.indexed.len();
    let mut index = Index::default();
    // A linked file's entry is the base's, unchanged: the base's index is the new one but for
    // the files written, which are put in it, and the base's files the trees no longer hold.
    // A second index of every file would double the memory a switch takes.
    index.files = match base {
        Some(base) if written.linked > 0 => {
            let mut files = base.index.files;
            for path in &fresh.unindexed {
                files.remove(path);
            }
            files.extend(fresh.indexed);
            files
        }
        _ => fresh.indexed,
    };
    if index.files.len() != indexed {
        // Some of the base's files are gone from the trees: keep only the trees' files.
        let files: HashSet<(&Path, &OsStr)> = trees
            .iter()
            .flat_map(|tree| tree.entries.iter())
            .filter(|entry| matches!(entry.kind, EntryKind::File { .. }))
            .map(|entry| (&*entry.parent, &*entry.name))
            .collect();
        index.files.retain(|path, _| {
            path.parent().zip(path.file_name()).is_some_and(|key| files.contains(&key))
        });
    }
    // Once everything is written: adding an entry to a directory changes it.
    let others = trees
        .iter()
        .flat_map(|tree| tree.entries.iter())
        .filter(|entry| !matches!(entry.kind, EntryKind::File { .. }));
    for relative in std::iter::once(PathBuf::new()).chain(others.map(Entry::path)) {
        let path =
            if relative.as_os_str().is_empty() { dir.to_owned() } else { dir.join(&relative) };
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        index.others.insert(relative, FileStat::of(&meta));
    }
    Ok((written, Some(index)))
}

/// Writes a checked tree into `dir`, the empty directory `prepare` made. Returns what was
/// written; each file written rather than linked goes into `fresh`, when given.
///
/// Every file is created with `O_EXCL` and every directory with `mkdir`, so nothing is ever
/// written through a symlink, even one the tree itself just created. A file whose blob, mode
/// and path are the same as in `base`, and which `base`'s index trusts, is hard-linked instead
/// of written. Files are written by a few threads, each with its own repository handle. A
/// file in `converted` is written with the bytes `git archive` gives it (see `attributes`).
#[instrument(skip_all)]
fn materialize(
    repo: &Repo,
    entries: &[Entry],
    converted: &Converted,
    dir: &Path,
    base: Option<&Base>,
    umask: u32,
    fresh: Option<&Mutex<Fresh>>,
) -> Result<FilesWritten, Error> {
    let mut written = FilesWritten::default();
    let mut dirs = DirBuilder::new();
    dirs.mode(0o777);
    let count = entries.iter().filter(|entry| matches!(entry.kind, EntryKind::File { .. })).count();
    let mut files = Vec::with_capacity(count);
    for entry in entries {
        let path = dir.join(entry.path());
        match &entry.kind {
            EntryKind::Dir => {
                dirs.create(&path).map_err(Error::io(&path))?;
            }
            EntryKind::Submodule { commit } => {
                dirs.create(&path).map_err(Error::io(&path))?;
                written.warnings.push(submodule_warning(&entry.path(), *commit));
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                    .map_err(Error::io(&path))?;
            }
            EntryKind::File { .. } => files.push(entry),
        }
    }

    let mode_mask = !umask;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let runs = directory_runs(&files);
    let results: Vec<Result<FilesWritten, Error>> = if threads == 1 || files.len() < 64 {
        vec![write_files(repo, files.iter().copied(), converted, dir, base, mode_mask, fresh)]
    } else {
        let repo_path = repo.path();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (files, runs, next) = (&files, &runs, &next);
                    scope.spawn(move || {
                        // A libgit2 repository handle is not shared between threads.
                        let repo =
                            Repo::open(repo_path).map_err(|source| Error::Reopen { source })?;
                        let mut mine = Vec::new();
                        loop {
                            let run = next.fetch_add(1, Ordering::Relaxed);
                            let Some(range) = runs.get(run) else { break };
                            let entries = files[range.clone()].iter().copied();
                            let part = write_files(
                                &repo, entries, converted, dir, base, mode_mask, fresh,
                            )?;
                            mine.push((run, part));
                        }
                        Ok(mine)
                    })
                })
                .collect();
            let mut parts = Vec::new();
            for handle in handles {
                match handle.join().unwrap_or(Err(Error::WriterPanicked)) {
                    Ok(mine) => parts.extend(mine),
                    Err(err) => return vec![Err(err)],
                }
            }
            // In tree order, so that warnings come in the same order on every run.
            parts.sort_unstable_by_key(|(run, _)| *run);
            parts.into_iter().map(|(_, part)| Ok(part)).collect()
        })
    };
    for result in results {
        let part = result?;
        written.files += part.files;
        written.linked += part.linked;
        written.bytes += part.bytes;
        written.warnings.extend(part.warnings);
    }
    Ok(written)
}

/// The most files one writer takes at a time from one directory.
const RUN: usize = 256;

/// Splits `files`, in tree order, into runs of at most [`RUN`] files of one directory.
///
/// The writers take whole runs: two threads creating files in one directory serialize on its
/// lock (ext4 takes the directory's inode lock for each create), and taking every other file,
/// as they did, made them wait on each other for every file.
fn directory_runs(files: &[&Entry]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for end in 1..=files.len() {
        let split = end == files.len()
            || end - start == RUN
            || !Arc::ptr_eq(&files[end].parent, &files[start].parent);
        if split {
            runs.push(start..end);
            start = end;
        }
    }
    runs
}

/// How every Git LFS pointer file starts.
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

/// The files the writers wrote rather than linked.
#[derive(Default)]
struct Fresh {
    indexed: PathMap<IndexEntry>,
    /// Written from bytes whose blob id is unknown, so not indexed.
    unindexed: Vec<PathBuf>,
}

/// Locks what the writers share; a writer that panicked holding it fails the deploy anyway.
fn lock(fresh: &Mutex<Fresh>) -> MutexGuard<'_, Fresh> {
    fresh.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one writer thread did.
#[derive(Default)]
struct FilesWritten {
    warnings: Vec<String>,
    files: u64,
    linked: u64,
    bytes: u64,
}

fn write_files<'f>(
    repo: &Repo,
    files: impl Iterator<Item = &'f Entry>,
    converted: &Converted,
    dir: &Path,
    base: Option<&Base>,
    mode_mask: u32,
    fresh: Option<&Mutex<Fresh>>,
) -> Result<FilesWritten, Error> {
    let mut done = FilesWritten::default();
    for entry in files {
        let EntryKind::File { executable, blob } = &entry.kind else { continue };
        let relative = &entry.path();
        let path = dir.join(relative);
        let mode = if *executable { 0o777 } else { 0o666 };
        // The index keys a file by the blob id of its bytes on disk: a converted file's own.
        let conversion = converted.get(relative);
        let id = conversion.map_or(Some(*blob), |file| file.id);
        let linked = id.and_then(|id| link_unchanged(base, relative, id, mode & mode_mask, &path));
        if let Some(stat) = linked {
            done.files += 1;
            done.linked += 1;
            done.bytes += stat.size;
            continue;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(Error::io(&path))?;
        if let Some(conversion) = conversion {
            converted.write_to(conversion, &mut file).map_err(Error::io(&path))?;
            done.files += 1;
            done.bytes += conversion.len;
            match (fresh, conversion.id) {
                (Some(fresh), Some(blob)) => {
                    let stat = index::stat_of(&file).map_err(Error::io(&path))?;
                    lock(fresh).indexed.insert(relative.clone(), IndexEntry { blob, stat });
                }
                (Some(fresh), None) => lock(fresh).unindexed.push(relative.clone()),
                (None, _) => {}
            }
            continue;
        }
        let (size, warning) = write_blob_to(repo, *blob, &mut file, &path, relative)?;
        done.warnings.extend(warning);
        done.files += 1;
        done.bytes += size;
        if let Some(fresh) = fresh {
            let stat = index::stat_of(&file).map_err(Error::io(&path))?;
            lock(fresh).indexed.insert(relative.clone(), IndexEntry { blob: *blob, stat });
        }
    }
    Ok(done)
}

/// Writes a blob's bytes into `file`, just created at `path` (`relative` in the release).
/// Returns its size, and a warning when it is a Git LFS pointer.
pub(super) fn write_blob_to(
    repo: &Repo,
    blob: BlobId,
    file: &mut fs::File,
    path: &Path,
    relative: &Path,
) -> Result<(u64, Option<String>), Error> {
    let size = repo.blob_size(blob).map_err(|err| blob_error(err, relative.to_owned()))?;
    let head = repo.write_blob(blob, size, file).map_err(|err| match err {
        BlobError::Io(source) => Error::Io { path: path.to_owned(), source },
        err => blob_error(err, relative.to_owned()),
    })?;
    let warning = (size < 1024 && head.starts_with(LFS_POINTER)).then(|| {
        format!(
            "{} is a Git LFS pointer: it is deployed as the pointer text, since pushdeploy does not fetch LFS objects; commit the file itself to deploy it",
            escape_path(relative)
        )
    });
    Ok((size, warning))
}

/// Hard-links `relative` from the base release when the index vouches that the file there is
/// this very blob with this mode, unmodified. Returns its stat when it did.
fn link_unchanged(
    base: Option<&Base>,
    relative: &Path,
    blob: BlobId,
    mode: u32,
    dest: &Path,
) -> Option<FileStat> {
    let base = base?;
    let known = base.index.files.get(relative)?;
    if known.blob != blob || known.stat.mode & 0o7777 != mode {
        return None;
    }
    let source = base.dir.join(relative);
    let meta = fs::symlink_metadata(&source).ok()?;
    if !base.index.trusts(known, &meta) {
        tracing::debug!(
            path = %relative.display(),
            ctime = ?(std::os::unix::fs::MetadataExt::ctime(&meta), std::os::unix::fs::MetadataExt::ctime_nsec(&meta)),
            sealed = ?base.index.sealed,
            same_stat = FileStat::of(&meta) == known.stat,
            "not linked: changed since the index was sealed"
        );
        return None;
    }
    fs::hard_link(&source, dest).ok()?;
    Some(known.stat)
}

fn submodule_warning(path: &Path, commit: CommitId) -> String {
    format!(
        "submodule {} (commit {}) is not deployed: its directory is empty, as `git archive` makes it; to deploy its files, give it a section in .gitmodules and leave `submodules = \"fetch\"` (the default) in pushdeploy.toml, or vendor them into the repository",
        escape_path(path),
        commit.short()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dirs: &[(&str, usize)]) -> Vec<Entry> {
        let mut out = Vec::new();
        for (dir, count) in dirs {
            let parent: Arc<Path> = Arc::from(Path::new(dir));
            for n in 0..*count {
                let name = format!("f{n}").into();
                out.push(Entry { parent: parent.clone(), name, kind: EntryKind::Dir });
            }
        }
        out
    }

    #[test]
    fn runs_end_where_the_directory_changes_and_after_run_files() {
        let entries = entries(&[("a", 3), ("b", RUN + 1), ("a", 2)]);
        let files: Vec<&Entry> = entries.iter().collect();
        let runs = directory_runs(&files);
        let b = 3 + RUN;
        assert_eq!(runs, [0..3, 3..b, b..b + 1, b + 1..b + 3]);
        assert!(directory_runs(&[]).is_empty());
    }
}
