//! A release's index: for each file materialized from git, its blob and what `lstat` said
//! right after it was written, so the next deploy can hard-link files it knows are unmodified
//! instead of writing them again (git's index does the same for a working tree).
//!
//! A file is trusted only if its inode, size, mode and mtime are as recorded *and* its ctime is
//! older than the index's seal. The seal is taken after the release is complete and the old one
//! retired; the kernel sets ctime on any change to a file (content, mode, links) and user space
//! cannot set it back, so any write after the seal is caught even if the writer restores mtime.
//! Only releases that ran no build get an index: a build could change a file before the seal.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::time::{ClockId, clock_gettime};

use crate::release::{Layout, Slot};

const HEADER: &str = "pushdeploy-index 1";

/// What one materialized file looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub ino: u64,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, i64),
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> FileStat {
        FileStat {
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The blob's hex id.
    pub blob: String,
    pub stat: FileStat,
}

/// The files of one release.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub commit: String,
    /// Coarse-clock time after which any change to a file makes it untrusted.
    pub sealed: (i64, i64),
    pub files: HashMap<PathBuf, IndexEntry>,
}

impl Index {
    /// Returns whether the file at `path` (lstat'ed as `meta`) is the recorded one, unchanged.
    pub fn trusts(&self, entry: &IndexEntry, meta: &fs::Metadata) -> bool {
        meta.file_type().is_file()
            && FileStat::of(meta) == entry.stat
            && (meta.ctime(), meta.ctime_nsec()) < self.sealed
    }

    /// Seals the index: from now on, a changed ctime means a changed file.
    ///
    /// The seal is read from the coarse clock the kernel stamps ctime with, after waiting for
    /// it to tick once, so every change made so far has a ctime strictly before the seal.
    pub fn seal(&mut self) {
        let coarse = || {
            clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
                .map(|now| (now.tv_sec(), now.tv_nsec()))
                .unwrap_or((i64::MIN, 0))
        };
        let start = coarse();
        let mut now = start;
        for _ in 0..100 {
            if now > start {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            now = coarse();
        }
        // If the clock never ticked, seal at the start: files changed in that tick are
        // then distrusted, which costs a rewrite, never a wrong release.
        self.sealed = if now > start { now } else { start };
    }
}

fn path(layout: &Layout, slot: Slot) -> PathBuf {
    layout
        .state
        .join("releases")
        .join(format!("{}.index", slot.name()))
}

/// Writes the index of `slot`.
pub fn write(layout: &Layout, slot: Slot, index: &Index) -> io::Result<()> {
    let path = path(layout, slot);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::new(temp);
    writeln!(
        out,
        "{HEADER} {} {} {}",
        index.commit, index.sealed.0, index.sealed.1
    )?;
    for (file, entry) in &index.files {
        let stat = &entry.stat;
        write!(
            out,
            "{} {:o} {} {} {} {} ",
            entry.blob, stat.mode, stat.ino, stat.size, stat.mtime.0, stat.mtime.1
        )?;
        out.write_all(file.as_os_str().as_bytes())?;
        out.write_all(b"\0")?;
    }
    let temp = out.into_inner().map_err(|err| err.into_error())?;
    temp.as_file().sync_data()?;
    temp.persist(&path).map_err(|err| err.error)?;
    Ok(())
}

/// Reads the index of `slot`; `None` when there is none or it cannot be trusted to parse.
pub fn read(layout: &Layout, slot: Slot) -> Option<Index> {
    let bytes = fs::read(path(layout, slot)).ok()?;
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut fields = header.strip_prefix(HEADER)?.split_whitespace();
    let commit = fields.next()?.to_owned();
    let sealed = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    let mut files = HashMap::new();
    for record in bytes[newline + 1..]
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
    {
        let mut parts = record.splitn(7, |&b| b == b' ');
        let mut text = || std::str::from_utf8(parts.next()?).ok().map(str::to_owned);
        let blob = text()?;
        let mode = u32::from_str_radix(&text()?, 8).ok()?;
        let ino = text()?.parse().ok()?;
        let size = text()?.parse().ok()?;
        let mtime = (text()?.parse().ok()?, text()?.parse().ok()?);
        let file = PathBuf::from(OsString::from_vec(parts.next()?.to_vec()));
        files.insert(
            file,
            IndexEntry {
                blob,
                stat: FileStat {
                    ino,
                    size,
                    mode,
                    mtime,
                },
            },
        );
    }
    Some(Index {
        commit,
        sealed,
        files,
    })
}

/// Removes the index of `slot`, before the slot is emptied.
pub fn remove(layout: &Layout, slot: Slot) -> io::Result<()> {
    match fs::remove_file(path(layout, slot)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Returns the metadata of an open file, for the index.
pub fn stat_of(file: &File) -> io::Result<FileStat> {
    file.metadata().map(|meta| FileStat::of(&meta))
}
