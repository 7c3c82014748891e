//! The diff route: a release kept in the idle slot (`[retire] keep_previous`) is brought from
//! its commit to the new one by applying the tree diff, so a deploy costs what it changes.
//!
//! Only a release its index vouches for is updated: the index says the release is exactly its
//! commit's tree (written with no `.gitattributes` conversion and no submodule), and `lstat`
//! says each file, directory and symlink it lists is the one recorded, untouched since the
//! seal (a directory's ctime moves when anything is added to it or removed from it, so nothing
//! else is there either). The release then equals `git archive` of its commit, and after the
//! changes `Repo::tree_changes` lists are applied, of the new one. Neither commit's
//! tree is walked here: the cost is the `lstat` of each entry and the changes themselves.
//!
//! The unchanged files may share inodes with the live release (it was hard-linked from this
//! one, or this one from it), so nothing is ever written in place: a changed file is written
//! as a new inode under a temporary name and renamed over the old one, and a mode change is a
//! new file too (a `chmod` would change the live file).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use tracing::instrument;

use super::Error;
use super::write::write_blob_to;
use crate::git::{Change, Entry, EntryKind, Repo};
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

/// Tells whether `index` vouches that `dir` holds exactly its commit's tree, with files of
/// mode `0o666`/`0o777` masked by `mode_mask`. Returns why not, in words for the pusher, when
/// it does not.
///
/// The commit's tree is not read: an index marked exact was written by pushdeploy for exactly
/// that tree (no `.gitattributes` conversion, no submodule), so `lstat` of every entry it
/// lists (each as recorded, untouched since the seal) is enough. An index without the mark
/// (written before it existed, or with conversions) is not trusted for the diff route.
#[instrument(skip_all)]
pub fn vouch(dir: &Path, index: &Index, mode_mask: u32) -> Result<(), String> {
    if !index.exact {
        return Err("its index does not say the release is exactly its commit (written by an \
                    earlier pushdeploy, or with `.gitattributes` rules or submodules)"
            .to_owned());
    }
    let root = index.others.get(Path::new("")).ok_or("its index has no root")?;
    let root_trusted = fs::symlink_metadata(dir).is_ok_and(|meta| index.unchanged(root, &meta));
    if !root_trusted {
        return Err("its top directory was changed since it was deployed".to_owned());
    }
    let root_dir = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)
        .map_err(|err| format!("its top directory cannot be opened: {err}"))?;
    let matches = |found: nix::sys::stat::FileStat, stat: &FileStat| {
        let found_stat = FileStat {
            ino: found.st_ino,
            size: u64::try_from(found.st_size).unwrap_or(u64::MAX),
            mode: found.st_mode,
            mtime: (found.st_mtime, found.st_mtime_nsec),
        };
        index.unchanged_as(stat, &found_stat, (found.st_ctime, found.st_ctime_nsec))
    };
    // A umask changed since the release was written would give its files other modes.
    let modes = [0o666 & mode_mask, 0o777 & mode_mask];
    // Each entry is looked up by its name from its directory, opened once (fstatat), not by
    // its path from `/` or from the release: at 100,000 entries the kernel's lookup of each
    // path component was half the cost of the `lstat`s, the joined paths a good part of the
    // rest. A directory is opened as its path from the release resolves, as `fstatat` of the
    // whole path would resolve it; it is itself an entry, checked from its own parent.
    let mut by_dir: HashMap<&[u8], Vec<Listed<'_>>> = HashMap::with_capacity(index.others.len());
    let files = index.files.iter().map(|(path, entry)| (path, &entry.stat, true));
    let others = index.others.iter().map(|(path, stat)| (path, stat, false));
    for (path, stat, file) in files.chain(others) {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            continue;
        }
        let parent = bytes.iter().rposition(|&b| b == b'/').map_or(&b""[..], |at| &bytes[..at]);
        by_dir.entry(parent).or_default().push((path, stat, file));
    }
    // A directory of many entries is shared out in pieces, so that a flat site keeps every
    // thread busy too.
    let pieces: Vec<(&[u8], &[Listed<'_>])> = by_dir
        .iter()
        .flat_map(|(parent, entries)| entries.chunks(1024).map(move |piece| (*parent, piece)))
        .collect();
    // Checks the entries of some directories; returns the first problem in byte order (a
    // directory before what it holds), so that the one reported does not depend on the order
    // of the index.
    let check = |part: &[(&[u8], &[Listed<'_>])]| -> Option<(PathBuf, &'static str)> {
        let mut first: Option<(PathBuf, &'static str)> = None;
        for (parent, entries) in part {
            // O_PATH: only to look up names from, so it needs no read permission, as the
            // lookup through the path did not. O_NOFOLLOW: a directory that became a
            // symlink is not looked through (it is reported from its own parent's piece).
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let opened = if parent.is_empty() {
                None
            } else {
                openat(&root_dir, OsStr::from_bytes(parent), flags, Mode::empty()).ok()
            };
            let parent_dir = if parent.is_empty() {
                Some(root_dir.as_fd())
            } else {
                opened.as_ref().map(|fd| fd.as_fd())
            };
            for (relative, stat, file) in *entries {
                let name = relative.as_os_str().as_bytes();
                let name = &name[parent.len() + usize::from(!parent.is_empty())..];
                let problem = if *file && !modes.contains(&(stat.mode & 0o7777)) {
                    "has a mode the configured umask does not give"
                } else if !parent_dir.is_some_and(|parent_dir| {
                    fstatat(parent_dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|found| matches(found, stat))
                }) {
                    "was changed since it was deployed"
                } else {
                    continue;
                };
                if first.as_ref().is_none_or(|(path, _)| {
                    relative.as_os_str().as_bytes() < path.as_os_str().as_bytes()
                }) {
                    first = Some((relative.to_path_buf(), problem));
                }
            }
        }
        first
    };
    // lstat is most of the cost at 100,000 files: a few threads share it.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunk = pieces.len().div_ceil(threads).max(1);
    let problems: Vec<Option<(PathBuf, &str)>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            pieces.chunks(chunk).map(|part| scope.spawn(move || check(part))).collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| Some((PathBuf::new(), "could not be checked")))
            })
            .collect()
    });
    match problems
        .into_iter()
        .flatten()
        .min_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()))
    {
        Some((path, problem)) => Err(format!("{} {problem}", escape_path(&path))),
        None => Ok(()),
    }
}

/// Tells whether the changes from the release's commit (`changes`, from
/// `Repo::tree_changes`) start from what `index` holds: each changed or removed entry is
/// there as the commit had it, and each added one is not (but for a directory it replaces).
/// Returns why not.
pub fn check_changes(changes: &[Change], index: &Index, mode_mask: u32) -> Result<(), String> {
    for change in changes {
        let relative = &change.path;
        let matches = match &change.old {
            Some(EntryKind::File { executable, blob }) => {
                let mode = if *executable { 0o777 } else { 0o666 } & mode_mask;
                index
                    .files
                    .get(relative)
                    .is_some_and(|known| known.blob == *blob && known.stat.mode & 0o7777 == mode)
            }
            Some(EntryKind::Symlink { .. }) => {
                index.others.get(relative).is_some_and(|stat| stat.mode & S_IFMT == S_IFLNK)
            }
            Some(EntryKind::Dir | EntryKind::Submodule { .. }) => false,
            None => {
                !index.files.contains_key(relative)
                    && index.others.get(relative).is_none_or(|stat| stat.mode & S_IFMT == S_IFDIR)
            }
        };
        if !matches {
            return Err(format!("{} is not as its commit has it", escape_path(relative)));
        }
    }
    Ok(())
}

/// An entry the index lists, for [`vouch`]: its path, what was recorded, whether a file.
type Listed<'a> = (&'a Path, &'a FileStat, bool);

// The file type bits of `st_mode`, as the index keeps it.
const S_IFMT: u32 = SFlag::S_IFMT.bits();
const S_IFDIR: u32 = SFlag::S_IFDIR.bits();
const S_IFLNK: u32 = SFlag::S_IFLNK.bits();

/// Tells whether two entries are of the same kind (a file stays a file, and so on).
fn same_kind(a: &EntryKind, b: &EntryKind) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Brings `dir`, which [`vouch`] and [`check_changes`] found to hold the commit `changes`
/// start from, to `new` (the new commit's tree, checked with `check::check_tree`), and `index`
/// with it. Removed entries go first (what a directory holds before the directory), then new
/// directories (parents first), then new and changed files and symlinks, changed ones under a
/// temporary name renamed over the old. The directories whose entries changed are recorded
/// again once all is done. Only the changes and the new tree's directories are looked at,
/// never the whole of either tree.
#[instrument(skip_all)]
pub fn apply(
    repo: &Repo,
    dir: &Path,
    changes: &[Change],
    new: &[Entry],
    index: &mut Index,
) -> Result<Applied, Error> {
    let new_dirs: HashSet<PathBuf> =
        new.iter().filter(|entry| matches!(entry.kind, EntryKind::Dir)).map(Entry::path).collect();
    let mut applied = Applied::default();
    let mut touched: HashSet<PathBuf> = HashSet::new();
    let parent_of = |path: &Path| path.parent().map(Path::to_owned).unwrap_or_default();

    // Gone, or of another kind: removed. Then the directories the new tree lacks, what a
    // directory holds before the directory (in reverse byte order a path comes after its
    // parent's).
    for change in changes {
        let (Some(old), new) = (&change.old, &change.new) else { continue };
        if new.as_ref().is_some_and(|new| same_kind(new, old)) {
            continue;
        }
        let path = dir.join(&change.path);
        fs::remove_file(&path).map_err(Error::io(&path))?;
        index.files.remove(&change.path);
        index.others.remove(&change.path);
        touched.insert(parent_of(&change.path));
        applied.removed += 1;
    }
    let is_dir = |stat: &FileStat| stat.mode & S_IFMT == S_IFDIR;
    let mut gone: Vec<PathBuf> = index
        .others
        .iter()
        .filter(|(relative, stat)| {
            is_dir(stat) && !relative.as_os_str().is_empty() && !new_dirs.contains(*relative)
        })
        .map(|(relative, _)| relative.to_owned())
        .collect();
    gone.sort_unstable_by(|a, b| b.as_os_str().as_bytes().cmp(a.as_os_str().as_bytes()));
    for relative in gone {
        let path = dir.join(&relative);
        fs::remove_dir(&path).map_err(Error::io(&path))?;
        index.others.remove(&relative);
        touched.insert(parent_of(&relative));
        applied.removed += 1;
    }

    let mut dirs = DirBuilder::new();
    dirs.mode(0o777);
    let mut made: Vec<&PathBuf> = new_dirs
        .iter()
        .filter(|relative| !index.others.get(relative).is_some_and(is_dir))
        .collect();
    made.sort_unstable_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for relative in made {
        let path = dir.join(relative);
        dirs.create(&path).map_err(Error::io(&path))?;
        touched.insert(parent_of(relative));
        touched.insert(relative.clone());
    }

    for change in changes {
        let Some(kind) = &change.new else { continue };
        let before = change.old.as_ref().filter(|old| same_kind(old, kind));
        let relative = &change.path;
        let path = dir.join(relative);
        match kind {
            EntryKind::Dir => {} // never a change; directories were made above
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
                let (size, warning) = write_blob_to(repo, *blob, &mut file, &written_at, relative)?;
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
        touched.insert(parent_of(relative));
    }

    // A directory removed with what it held is not recorded again.
    for relative in touched
        .into_iter()
        .filter(|relative| relative.as_os_str().is_empty() || new_dirs.contains(relative))
    {
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
