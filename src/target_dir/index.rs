//! A release's index: for each file materialized from git, its blob and what `lstat` said
//! right after it was written, so the next deploy can hard-link files it knows are unmodified
//! instead of writing them again (git's index does the same for a working tree).
//!
//! A file is trusted only if its inode, size, mode and mtime are as recorded *and* its ctime is
//! older than the index's seal. The seal is taken after the release is complete and the old one
//! retired; the kernel sets ctime on any change to a file (content, mode, links) and user space
//! cannot set it back, so any write after the seal is caught even if the writer restores mtime.
//! Only releases that ran no build get an index: a build could change a file before the seal.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::time::{ClockId, clock_gettime};

use crate::git::{BlobId, CommitId};
use crate::target_dir::path_map::PathMap;
use crate::target_dir::{Layout, Slot};

/// The header of an index; version 1 had no directories and symlinks, version 2 did not say
/// whether it lists exactly its commit's tree.
const HEADER: &str = "pushdeploy-index 3";
const HEADER_V2: &str = "pushdeploy-index 2";
const HEADER_V1: &str = "pushdeploy-index 1";

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
    pub blob: BlobId,
    pub stat: FileStat,
}

/// The files of one release.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// The commit whose release this indexes; set when the index is sealed, and an index
    /// without one is never trusted.
    pub commit: Option<CommitId>,
    /// Coarse-clock time after which any change to a file makes it untrusted.
    pub sealed: Timestamp,
    pub files: PathMap<IndexEntry>,
    /// The release's directories (the root as the empty path) and symlinks, as `lstat` saw
    /// them once complete: a directory's ctime moves when anything is added to it or removed
    /// from it, so these vouch that the release holds nothing else (see `release::diff`).
    pub others: PathMap<FileStat>,
    /// Spans of ctimes that pushdeploy itself caused after the seal (removing a slot that
    /// shared inodes with this release); a ctime inside one is not a change to the file.
    pub windows: Vec<(Timestamp, Timestamp)>,
    /// Whether the release is exactly its commit's tree, entry for entry and blob for blob:
    /// written with no `.gitattributes` conversion or export-ignore, no submodule and no
    /// shared link. Only then does the index stand for the commit itself, so the diff route
    /// can bring the release to another commit from the tree diff alone (`release::diff`).
    pub exact: bool,
}

/// A (seconds, nanoseconds) time, as ctimes are kept.
pub type Timestamp = (i64, i64);

/// The most windows an index keeps; older ones are dropped, costing rewrites, never trust.
const MAX_WINDOWS: usize = 16;

impl Index {
    /// Returns whether the file at `path` (lstat'ed as `meta`) is the recorded one, unchanged.
    pub fn trusts(&self, entry: &IndexEntry, meta: &fs::Metadata) -> bool {
        meta.file_type().is_file() && self.unchanged(&entry.stat, meta)
    }

    /// Returns whether what `lstat` says (`meta`) is what was recorded (`stat`), untouched
    /// since the seal but by pushdeploy itself.
    pub fn unchanged(&self, stat: &FileStat, meta: &fs::Metadata) -> bool {
        self.unchanged_as(stat, &FileStat::of(meta), (meta.ctime(), meta.ctime_nsec()))
    }

    /// Returns whether an entry found as `found`, with ctime `ctime`, is what was recorded
    /// (`stat`), untouched since the seal but by pushdeploy itself.
    pub fn unchanged_as(&self, stat: &FileStat, found: &FileStat, ctime: Timestamp) -> bool {
        found == stat
            && (ctime < self.sealed
                || self.windows.iter().any(|(start, end)| (*start..=*end).contains(&ctime)))
    }

    /// Seals the index: from now on, a changed ctime means a changed file.
    ///
    /// Every change made so far has a ctime strictly before the seal (see [`seal_time`]).
    pub fn seal(&mut self, commit: CommitId) {
        self.commit = Some(commit);
        self.sealed = seal_time();
    }
}

/// Reads the coarse realtime clock, the one the kernel stamps ctime from.
pub fn coarse_now() -> Timestamp {
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map(|now| (now.tv_sec(), now.tv_nsec()))
        .unwrap_or((i64::MIN, 0))
}

/// Returns a time strictly after the ctime of every change made before the call.
///
/// A ctime is either a coarse-clock reading or, for a file whose ctime was looked at since its
/// last change (multigrain timestamps, Linux 6.13+), a fine-grained one; either way it is at
/// most the fine-grained clock at the moment of the change. The coarse clock lags the fine one
/// by up to a tick, even right after it moves, so this reads the fine clock first and waits
/// until the coarse clock has passed it (a tick or two). The result is a coarse reading, so
/// every later change has a ctime at or after it. If the clock never gets there, the last
/// reading is returned: files changed just before are then distrusted, which costs a rewrite,
/// never a wrong release.
pub fn seal_time() -> Timestamp {
    let fine = clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|now| (now.tv_sec(), now.tv_nsec()))
        .unwrap_or((i64::MAX, 0));
    let mut now = coarse_now();
    for _ in 0..200 {
        if now > fine {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        now = coarse_now();
    }
    now
}

/// The most windows kept for the releases in `.pushdeploy/kept/`; a release kept longer than
/// they reach back loses its index's trust (a full write later), never more.
const MAX_KEPT_WINDOWS: usize = 256;

/// Returns the file of windows of ctimes pushdeploy moved in kept releases.
fn kept_windows_path(layout: &Layout) -> PathBuf {
    layout.state.join("kept-windows")
}

/// Records a window of ctimes pushdeploy itself moved (linking to or unlinking from inodes the
/// releases share, renaming a release's tree) for the releases kept in `.pushdeploy/kept/`
/// and parked: their indexes are not rewritten at every deploy, they take the windows when a
/// release comes back into a slot (`kept::restore`, `kept::recyclable`).
pub fn add_kept_window(layout: &Layout, window: (Timestamp, Timestamp)) {
    let mut windows = kept_windows(layout);
    windows.push(window);
    let excess = windows.len().saturating_sub(MAX_KEPT_WINDOWS);
    windows.drain(..excess);
    let text: String =
        windows.iter().map(|((s0, n0), (s1, n1))| format!("{s0}.{n0}-{s1}.{n1}\n")).collect();
    let path = kept_windows_path(layout);
    let written = tempfile::NamedTempFile::new_in(&layout.state).and_then(|mut temp| {
        use std::io::Write;
        temp.write_all(text.as_bytes())?;
        temp.persist(&path).map(drop).map_err(|err| err.error)
    });
    if written.is_err() {
        // Without the window, a kept release's index would take pushdeploy's own change for a
        // hand edit: a full write later, never a wrong release. Without the file, the same.
        let _ = fs::remove_file(&path);
    }
}

/// Returns the windows recorded for kept releases, oldest first.
pub fn kept_windows(layout: &Layout) -> Vec<(Timestamp, Timestamp)> {
    let text = fs::read_to_string(kept_windows_path(layout)).unwrap_or_default();
    let time = |text: &str| -> Option<Timestamp> {
        let (secs, nanos) = text.split_once('.')?;
        Some((secs.parse().ok()?, nanos.parse().ok()?))
    };
    text.lines()
        .filter_map(|line| {
            let (start, end) = line.split_once('-')?;
            Some((time(start)?, time(end)?))
        })
        .collect()
}

/// Adds a window of pushdeploy's own ctime changes to the index of `slot`, if it has one.
pub fn add_window(layout: &Layout, slot: Slot, window: (Timestamp, Timestamp)) {
    add_windows_at(&layout.index_path(slot), &[window]);
}

/// Adds windows of pushdeploy's own ctime changes to the index at `path` (a slot's, or a kept
/// release's), if there is one; those that end before its seal change nothing and are left out.
pub fn add_windows_at(path: &Path, windows: &[(Timestamp, Timestamp)]) {
    let Some(mut index) = read_at(path) else { return };
    let before = index.windows.len();
    let sealed = index.sealed;
    let new: Vec<_> = windows
        .iter()
        .filter(|window| window.1 >= sealed && !index.windows.contains(window))
        .copied()
        .collect();
    index.windows.extend(new);
    if index.windows.len() == before {
        return;
    }
    let excess = index.windows.len().saturating_sub(MAX_WINDOWS);
    index.windows.drain(..excess);
    if write_at(path, &index).is_err() {
        let _ = fs::remove_file(path); // a stale index must not stay behind
    }
}

/// Returns a window's end for changes pushdeploy just made: a fine-grained reading is at
/// or after the ctime of every change made before it (see [`seal_time`]), no wait needed.
pub fn window_end() -> Timestamp {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|now| (now.tv_sec(), now.tv_nsec()))
        .unwrap_or((i64::MAX, 0))
}

/// Writes an index at `path`, atomically and synced.
pub fn write_at(path: &Path, index: &Index) -> io::Result<()> {
    let staged = stage_at(path, index)?;
    staged.as_file().sync_data()?;
    staged.persist(path).map(drop).map_err(|err| err.error)
}

/// Writes the index of `slot` under a temporary name beside it, not synced: the caller syncs
/// it (with other writes, by one `syncfs`) before [`persist`] renames it into place.
pub fn stage(layout: &Layout, slot: Slot, index: &Index) -> io::Result<tempfile::NamedTempFile> {
    stage_at(&layout.index_path(slot), index)
}

/// Writes an index for `path` under a temporary name beside it, not synced.
fn stage_at(path: &Path, index: &Index) -> io::Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::new(temp);
    let commit = index.commit.map_or_else(|| "unsealed".to_owned(), |commit| commit.hex());
    let exact = if index.exact { "exact" } else { "inexact" };
    write!(out, "{HEADER} {commit} {} {} {exact}", index.sealed.0, index.sealed.1)?;
    for ((s0, n0), (s1, n1)) in &index.windows {
        write!(out, " {s0}.{n0}-{s1}.{n1}")?;
    }
    writeln!(out)?;
    for (file, entry) in &index.files {
        let stat = &entry.stat;
        write!(
            out,
            "{} {:o} {} {} {} {} ",
            entry.blob.hex(),
            stat.mode,
            stat.ino,
            stat.size,
            stat.mtime.0,
            stat.mtime.1
        )?;
        out.write_all(file.as_os_str().as_bytes())?;
        out.write_all(b"\0")?;
    }
    for (path, stat) in &index.others {
        write!(
            out,
            "- {:o} {} {} {} {} ",
            stat.mode, stat.ino, stat.size, stat.mtime.0, stat.mtime.1
        )?;
        out.write_all(path.as_os_str().as_bytes())?;
        out.write_all(b"\0")?;
    }
    out.into_inner().map_err(|err| err.into_error())
}

/// Renames an index written by [`stage`] (and synced since) into place.
pub fn persist(layout: &Layout, slot: Slot, staged: tempfile::NamedTempFile) -> io::Result<()> {
    staged.persist(layout.index_path(slot)).map(drop).map_err(|err| err.error)
}

/// Reads the index of `slot`; `None` when there is none or it cannot be trusted to parse.
///
/// The file is read a record at a time: holding all of it besides the maps made of it would
/// add a tenth to the memory of a deploy.
pub fn read(layout: &Layout, slot: Slot) -> Option<Index> {
    read_at(&layout.index_path(slot))
}

/// Reads the index at `path` (a slot's, or a kept release's), a record at a time.
pub fn read_at(path: &Path) -> Option<Index> {
    let file = File::open(path).ok()?;
    // About what a record takes at 100,000 files: enough to size the map in one go there.
    let estimate = file.metadata().map_or(0, |meta| meta.len() / 128);
    let mut input = BufReader::new(file);
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line).ok()?;
    let header = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let (rest, current) = match header.strip_prefix(HEADER) {
        Some(rest) => (rest, true),
        None => (header.strip_prefix(HEADER_V2).or_else(|| header.strip_prefix(HEADER_V1))?, false),
    };
    let mut fields = rest.split_whitespace();
    let commit = Some(CommitId::from_hex(fields.next()?)?);
    let sealed = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    // An older index is read (for hard links), never taken as exact.
    let exact = current && fields.next()? == "exact";
    let time = |text: &str| -> Option<Timestamp> {
        let (secs, nanos) = text.split_once('.')?;
        Some((secs.parse().ok()?, nanos.parse().ok()?))
    };
    let mut windows = Vec::new();
    for window in fields {
        let (start, end) = window.split_once('-')?;
        windows.push((time(start)?, time(end)?));
    }
    let mut files = PathMap::with_capacity(usize::try_from(estimate).unwrap_or(0));
    let mut others = PathMap::default();
    let mut record = line;
    loop {
        record.clear();
        if input.read_until(0, &mut record).ok()? == 0 {
            break;
        }
        let bytes = record.strip_suffix(b"\0").unwrap_or(&record);
        if bytes.is_empty() {
            continue;
        }
        match parse_record(bytes)? {
            (None, stat, path) => {
                others.insert_bytes(path, stat);
            }
            (Some(blob), stat, path) => {
                files.insert_bytes(path, IndexEntry { blob, stat });
            }
        }
    }
    Some(Index { commit, sealed, files, others, windows, exact })
}

/// Parses one record: `BLOB MODE INO SIZE SECS NANOS PATH` for a file, with `-` for the blob
/// for a directory or symlink. The path is returned as the record's own bytes.
///
/// Fields are parsed from the bytes, with no text conversion: at 100,000 records the
/// conversions and a `PathBuf` for each record were most of the cost of reading an index.
fn parse_record(record: &[u8]) -> Option<(Option<BlobId>, FileStat, &[u8])> {
    let mut parts = record.splitn(7, |&b| b == b' ');
    let first = parts.next()?;
    let blob = if first == b"-" { None } else { Some(BlobId::from_hex_bytes(first)?) };
    let mode = u32::try_from(parse_unsigned(parts.next()?, 8)?).ok()?;
    let ino = parse_unsigned(parts.next()?, 10)?;
    let size = parse_unsigned(parts.next()?, 10)?;
    let mtime = (parse_signed(parts.next()?)?, parse_signed(parts.next()?)?);
    let path = parts.next()?;
    Some((blob, FileStat { ino, size, mode, mtime }, path))
}

/// Parses digits in `radix` (8 or 10), as `{}` or `{:o}` wrote them: at least one, nothing
/// else, no overflow.
fn parse_unsigned(text: &[u8], radix: u64) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |value, &c| {
        let digit = u64::from(c.wrapping_sub(b'0'));
        if digit >= radix {
            return None;
        }
        value.checked_mul(radix)?.checked_add(digit)
    })
}

/// Parses a decimal `i64` as `{}` wrote it (a `-` for a negative one).
fn parse_signed(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        // i64::MIN's magnitude is one more than i64::MAX.
        Some(digits) => 0i64.checked_sub_unsigned(parse_unsigned(digits, 10)?),
        None => i64::try_from(parse_unsigned(text, 10)?).ok(),
    }
}

/// Removes the index of `slot`, before the slot is emptied.
pub fn remove(layout: &Layout, slot: Slot) -> io::Result<()> {
    match fs::remove_file(layout.index_path(slot)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Returns the metadata of an open file, for the index.
pub fn stat_of(file: &File) -> io::Result<FileStat> {
    file.metadata().map(|meta| FileStat::of(&meta))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::PathBuf;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const BLOB: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn stat(ino: u64) -> FileStat {
        FileStat { ino, size: 2000 + ino, mode: 0o100644, mtime: (1_700_000_000, 123_456_789) }
    }

    fn sample() -> Index {
        let mut index = Index {
            commit: CommitId::from_hex(COMMIT),
            sealed: (1_700_000_100, 5),
            windows: vec![((1_700_000_200, 1), (1_700_000_201, 999_999_999))],
            ..Index::default()
        };
        let blob = BlobId::from_hex(BLOB).unwrap();
        let names: [&[u8]; 4] = [b"index.html", b"a/b c/page.html", b"x/\xff\xfe", b"d/-"];
        for (ino, name) in names.into_iter().enumerate() {
            let path = PathBuf::from(OsStr::from_bytes(name));
            index.files.insert(path, IndexEntry { blob, stat: stat(ino as u64) });
        }
        for (ino, dir) in ["", "a", "a/b c", "x", "d", "link"].into_iter().enumerate() {
            index.others.insert(PathBuf::from(dir), stat(100 + ino as u64));
        }
        index
    }

    fn assert_same(read: &Index, written: &Index) {
        assert_eq!(read.commit, written.commit);
        assert_eq!(read.sealed, written.sealed);
        assert_eq!(read.windows, written.windows);
        assert_eq!(read.files, written.files);
        assert_eq!(read.others, written.others);
    }

    #[test]
    fn an_index_reads_back_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::at(tmp.path(), "public_html");
        let index = sample();
        write_at(&layout.index_path(Slot::Blue), &index).unwrap();
        assert_same(&read(&layout, Slot::Blue).unwrap(), &index);
        assert!(read(&layout, Slot::Green).is_none());
    }

    #[test]
    fn older_and_cut_files_read_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::at(tmp.path(), "public_html");
        let path = layout.index_path(Slot::Blue);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Version 1: files only, and a last record without its NUL.
        let v1 = format!(
            "pushdeploy-index 1 {COMMIT} 1700000100 5\n{BLOB} 100644 7 2007 1700000000 123456789 a/b\0{BLOB} 100755 8 2008 1700000000 1 c"
        );
        fs::write(&path, v1).unwrap();
        let index = read(&layout, Slot::Blue).unwrap();
        assert_eq!(index.files.len(), 2);
        assert_eq!(index.files.get(Path::new("a/b")).unwrap().stat, stat(7));
        assert_eq!(index.files.get(Path::new("c")).unwrap().stat.mode, 0o100755);
        assert!(index.others.is_empty() && index.windows.is_empty());
        // No newline after the header, a bad record, an unsealed index: none is trusted.
        for bad in [
            format!("pushdeploy-index 2 {COMMIT} 1 2"),
            format!("pushdeploy-index 2 {COMMIT} 1 2\n{BLOB} 100644 x 1 1 1 a\0"),
            "pushdeploy-index 2 unsealed 0 0\n".to_owned(),
        ] {
            fs::write(&path, bad).unwrap();
            assert!(read(&layout, Slot::Blue).is_none());
        }
    }

    #[test]
    fn record_fields_parse_as_they_were_written_and_nothing_else() {
        for value in [0, 7, 0o100644, u64::MAX] {
            assert_eq!(parse_unsigned(value.to_string().as_bytes(), 10), Some(value));
            assert_eq!(parse_unsigned(format!("{value:o}").as_bytes(), 8), Some(value));
        }
        for value in [0, -1, 1_700_000_000, i64::MIN, i64::MAX] {
            assert_eq!(parse_signed(value.to_string().as_bytes()), Some(value));
        }
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1x", b"18446744073709551616"] {
            assert_eq!(parse_unsigned(bad, 10), None, "{bad:?}");
            assert_eq!(parse_signed(bad), None, "{bad:?}");
        }
        assert_eq!(parse_unsigned(b"8", 8), None);
        assert_eq!(parse_signed(b"9223372036854775808"), None);
        assert_eq!(parse_signed(b"-9223372036854775809"), None);
        let blob = BlobId::from_hex(BLOB).unwrap();
        assert_eq!(BlobId::from_hex_bytes(BLOB.as_bytes()), Some(blob));
        assert_eq!(BlobId::from_hex_bytes(BLOB.to_uppercase().as_bytes()), Some(blob));
        for bad in [&BLOB[1..], &format!("{BLOB}0"), &BLOB.replacen('a', "g", 1)] {
            assert_eq!(BlobId::from_hex_bytes(bad.as_bytes()), None, "{bad}");
        }
    }

    fn sample_exact(exact: bool) -> Index {
        let mut index = Index { exact, ..Index::default() };
        index.seal(CommitId::from_hex("0123456789abcdef0123456789abcdef01234567").expect("hex"));
        index
            .others
            .insert(PathBuf::new(), FileStat { ino: 1, size: 2, mode: 0o40755, mtime: (3, 4) });
        index.windows.push(((5, 6), (7, 8)));
        index
    }

    #[test]
    fn an_index_says_whether_it_is_exactly_its_commit_and_older_ones_never_are() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("index");
        for exact in [true, false] {
            write_at(&path, &sample_exact(exact)).expect("write the index");
            let read = read_at(&path).expect("read it back");
            assert_eq!(read.exact, exact);
            assert_eq!(read.windows, vec![((5, 6), (7, 8))]);
            assert_eq!(read.others.len(), 1);
        }
        // Version 2 wrote no such field: read for hard links, never exact.
        write_at(&path, &sample_exact(true)).expect("write the index");
        let text = fs::read(&path).expect("read the file");
        let text = String::from_utf8(text).expect("text");
        let old =
            text.replacen("pushdeploy-index 3", "pushdeploy-index 2", 1).replacen(" exact", "", 1);
        fs::write(&path, old).expect("write a version 2 index");
        let read = read_at(&path).expect("a version 2 index reads");
        assert!(!read.exact);
        assert_eq!(read.windows, vec![((5, 6), (7, 8))]);
    }
}
