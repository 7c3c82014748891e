//! The diff route: a release kept in the idle slot (`[retire] keep_previous`) is brought from
//! its commit to the new one by applying the tree diff, so a deploy costs what it changes.
//!
//! Only a release its index vouches for is updated: every entry of its commit's tree is in
//! the index with the same blob and mode, and `lstat` says each file, directory and symlink is
//! the one recorded, untouched since the seal (a directory's ctime moves when anything is
//! added to it or removed from it, so nothing else is there either). The release then equals
//! `git archive` of its commit, and after the diff, of the new one.
//!
//! The unchanged files may share inodes with the live release (it was hard-linked from this
//! one, or this one from it), so nothing is ever written in place: a changed file is written
//! as a new inode under a temporary name and renamed over the old one, and a mode change is a
//! new file too (a `chmod` would change the live file).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::instrument;

use super::Error;
use super::write::write_blob_to;
use crate::git::{Entry, EntryKind, Repo};
use crate::report::escape_path;
use crate::target_dir::index::{FileStat, Index, IndexEntry};

/// What applying a diff did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Files written (new or changed).
    pub written: u64,
    pub bytes: u64,
    /// Entries removed (files, symlinks, directories).
    pub removed: u64,
    pub warnings: Vec<String>,
}

/// Tells whether `index` vouches that `dir` holds exactly `old` (its commit's checked tree)
/// with files of mode `0o666`/`0o777` masked by `mode_mask`. Returns why not, in words for the
/// pusher, when it does not.
#[instrument(skip_all)]
pub fn vouch(dir: &Path, old: &[Entry], index: &Index, mode_mask: u32) -> Result<(), String> {
    if index.others.is_empty() {
        return Err("its index predates this check".to_owned());
    }
    if index.files.len() + index.others.len() != old.len() + 1 {
        return Err("its index does not match its commit".to_owned());
    }
    let root = index.others.get(Path::new("")).ok_or("its index has no root")?;
    let trusted = |path: &Path, stat: &FileStat| {
        fs::symlink_metadata(path).is_ok_and(|meta| index.unchanged(stat, &meta))
    };
    if !trusted(dir, root) {
        return Err("its top directory was changed since it was deployed".to_owned());
    }
    // Checks one entry: in the index as its commit has it, and unchanged on disk.
    let check = |entry: &Entry| -> Result<(), String> {
        let relative = entry.path();
        let stat = match &entry.kind {
            EntryKind::File { executable, blob } => {
                let mode = if *executable { 0o777 } else { 0o666 } & mode_mask;
                match index.files.get(&relative) {
                    Some(IndexEntry { blob: known, stat })
                        if known == blob && stat.mode & 0o7777 == mode =>
                    {
                        stat
                    }
                    _ => {
                        return Err(format!(
                            "{} is not as its commit has it",
                            escape_path(&relative)
                        ));
                    }
                }
            }
            EntryKind::Dir | EntryKind::Symlink { .. } => match index.others.get(&relative) {
                Some(stat) => stat,
                None => return Err(format!("{} is not in its index", escape_path(&relative))),
            },
            EntryKind::Submodule { .. } => return Err("it has submodules".to_owned()),
        };
        if trusted(&dir.join(&relative), stat) {
            Ok(())
        } else {
            Err(format!("{} was changed since it was deployed", escape_path(&relative)))
        }
    };
    // lstat is most of the cost at 100,000 files: a few threads share it, in tree order so
    // that the first problem found is the first in the tree.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunk = old.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = old
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(check)))
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle.join().unwrap_or_else(|_| Err("a check panicked".to_owned()))
        })
    })
}

/// Tells whether two entries are of the same kind (a file stays a file, and so on).
fn same_kind(a: &EntryKind, b: &EntryKind) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Brings `dir`, which [`vouch`] found to hold `old`, to `new` (checked with
/// `check::check_tree`), and `index` with it: removed entries go first (deepest first), then
/// new directories, symlinks and files are made in tree order, changed ones under a
/// temporary name renamed over the old. The directories whose entries changed are recorded
/// again once all is done.
#[instrument(skip_all)]
pub fn apply(
    repo: &Repo,
    dir: &Path,
    old: &[Entry],
    new: &[Entry],
    index: &mut Index,
) -> Result<Applied, Error> {
    // Keyed by the path's bytes: hashing a `Path` walks its components, far slower.
    let old_paths: Vec<PathBuf> = old.iter().map(Entry::path).collect();
    let new_paths: Vec<PathBuf> = new.iter().map(Entry::path).collect();
    let old_kinds: HashMap<&[u8], &EntryKind> = old_paths
        .iter()
        .zip(old)
        .map(|(path, entry)| (path.as_os_str().as_bytes(), &entry.kind))
        .collect();
    let new_kinds: HashMap<&[u8], &EntryKind> = new_paths
        .iter()
        .zip(new)
        .map(|(path, entry)| (path.as_os_str().as_bytes(), &entry.kind))
        .collect();
    let mut applied = Applied::default();
    let mut touched: HashSet<PathBuf> = HashSet::new();
    let parent_of = |path: &Path| path.parent().map(Path::to_owned).unwrap_or_default();

    // Gone, or of another kind: removed, what a directory holds before the directory.
    for (relative, entry) in old_paths.iter().zip(old).rev() {
        let stays = new_kinds
            .get(relative.as_os_str().as_bytes())
            .is_some_and(|kind| same_kind(kind, &entry.kind));
        if stays {
            continue;
        }
        let path = dir.join(relative);
        match entry.kind {
            EntryKind::Dir => fs::remove_dir(&path),
            _ => fs::remove_file(&path),
        }
        .map_err(Error::io(&path))?;
        index.files.remove(relative);
        index.others.remove(relative);
        touched.insert(parent_of(relative));
        applied.removed += 1;
    }

    let mut dirs = DirBuilder::new();
    dirs.mode(0o777);
    for (relative, entry) in new_paths.iter().zip(new) {
        let before = old_kinds
            .get(relative.as_os_str().as_bytes())
            .filter(|kind| same_kind(kind, &entry.kind));
        if before == Some(&&entry.kind) {
            continue; // the same directory, or the same file or symlink
        }
        let relative = relative.clone();
        let path = dir.join(&relative);
        match &entry.kind {
            EntryKind::Dir => {
                dirs.create(&path).map_err(Error::io(&path))?;
            }
            EntryKind::Symlink { target } => {
                let target = OsStr::from_bytes(target);
                match before {
                    None => std::os::unix::fs::symlink(target, &path).map_err(Error::io(&path))?,
                    Some(_) => replace(&path, |temp| std::os::unix::fs::symlink(target, temp))?,
                }
                let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
                index.others.insert(relative.clone(), FileStat::of(&meta));
            }
            EntryKind::File { executable, blob } => {
                let mode = if *executable { 0o777 } else { 0o666 };
                let create =
                    |at: &Path| OpenOptions::new().write(true).create_new(true).mode(mode).open(at);
                let (mut file, written_at) = match before {
                    None => (create(&path).map_err(Error::io(&path))?, path.clone()),
                    Some(_) => temp_beside(&path, create)?,
                };
                let (size, warning) =
                    write_blob_to(repo, *blob, &mut file, &written_at, &relative)?;
                let meta = file.metadata().map_err(Error::io(&written_at))?;
                if written_at != path {
                    fs::rename(&written_at, &path).map_err(Error::io(&path))?;
                }
                applied.warnings.extend(warning);
                applied.written += 1;
                applied.bytes += size;
                index.files.insert(
                    relative.clone(),
                    IndexEntry { blob: *blob, stat: FileStat::of(&meta) },
                );
            }
            EntryKind::Submodule { .. } => {
                // `vouch` and the caller refuse trees with submodules; never reached.
                return Err(Error::Io {
                    path: path.clone(),
                    source: io::Error::other("a submodule on the diff route"),
                });
            }
        }
        touched.insert(parent_of(&relative));
        if matches!(entry.kind, EntryKind::Dir) {
            touched.insert(relative);
        }
    }

    // A directory removed with what it held is not recorded again.
    let is_dir = |relative: &Path| {
        relative.as_os_str().is_empty()
            || matches!(new_kinds.get(relative.as_os_str().as_bytes()), Some(EntryKind::Dir))
    };
    for relative in touched.into_iter().filter(|relative| is_dir(relative)) {
        let path =
            if relative.as_os_str().is_empty() { dir.to_owned() } else { dir.join(&relative) };
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        index.others.insert(relative, FileStat::of(&meta));
    }
    index.commit = None;
    index.windows.clear();
    Ok(applied)
}

/// Creates a new file beside `path` under a temporary name no entry has (`O_EXCL`: never
/// through a symlink, never over anything); returns it and its path.
fn temp_beside(
    path: &Path,
    create: impl Fn(&Path) -> io::Result<fs::File>,
) -> Result<(fs::File, PathBuf), Error> {
    for attempt in 0..100 {
        let temp = temp_name(path, attempt);
        match create(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::Io { path: temp, source }),
        }
    }
    Err(Error::Io { path: path.to_owned(), source: io::Error::other("no free temporary name") })
}

/// Makes a new entry beside `path` with `make` (which fails on an existing name) and renames
/// it over `path`.
fn replace(path: &Path, make: impl Fn(&Path) -> io::Result<()>) -> Result<(), Error> {
    for attempt in 0..100 {
        let temp = temp_name(path, attempt);
        match make(&temp) {
            Ok(()) => return fs::rename(&temp, path).map_err(Error::io(path)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::Io { path: temp, source }),
        }
    }
    Err(Error::Io { path: path.to_owned(), source: io::Error::other("no free temporary name") })
}

fn temp_name(path: &Path, attempt: u32) -> PathBuf {
    let mut name = std::ffi::OsString::from(".pushdeploy-new-");
    name.push(path.file_name().unwrap_or_default());
    if attempt > 0 {
        name.push(format!("-{attempt}"));
    }
    path.with_file_name(name)
}
