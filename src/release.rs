//! Slots and releases: which slot is live, writing a commit's tree into a slot, activating it
//! with one rename, and retiring the old one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tracing::instrument;

use crate::check;
use crate::config::{Config, SymlinkPolicy};
use crate::git::{BlobError, BlobId, CommitId, Entry, EntryKind, Repo};
use crate::index::{self, FileStat, Index, IndexEntry};
use crate::report::escape_path;

/// One of the two directories a release can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    /// Returns the slot's directory name.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Returns the other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    fn from_name(name: &OsStr) -> Option<Slot> {
        Slot::ALL.into_iter().find(|slot| OsStr::new(slot.name()) == name)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name()) // pad, so `{:<5}` lines columns up
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", escape_path(path))]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} is a {kind}, not a symlink; move it away (pushdeploy replaces it with a link to the live release)",
        escape_path(path)
    )]
    NotALink { path: PathBuf, kind: &'static str },
    #[error(
        "{} points at {}, not at a pushdeploy slot; remove it or configure another `link`",
        escape_path(path),
        escape_path(target)
    )]
    ForeignLink { path: PathBuf, target: PathBuf },
    #[error("refused {}: {why}", escape_path(path))]
    Refused { path: PathBuf, why: String },
    /// Something in pushdeploy's state directory that pushdeploy did not make, or not as it
    /// makes it; `hint` says what to do.
    #[error("{} {problem}", escape_path(path))]
    StateDir { path: PathBuf, problem: String, hint: String },
    #[error("not enough space on the target's filesystem: the release needs about {}, and {} are free in {}", crate::report::bytes(*needed), crate::report::bytes(*available), escape_path(path))]
    NoSpace { path: PathBuf, needed: u64, available: u64 },
    #[error("cannot read {} from the repository: {message}", escape_path(path))]
    Blob { path: PathBuf, message: String },
}

impl Error {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_owned(), source }
    }
}

/// Where everything lives under the target directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub target: PathBuf,
    pub link: PathBuf,
    /// `TARGET/.pushdeploy`: lock, history, release records. Never under the link.
    pub state: PathBuf,
    link_name: String,
}

/// What the link serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub slot: Slot,
    /// The link's own (relative) target, e.g. `green/public`.
    pub link_target: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        Layout {
            target: config.target.clone(),
            link: config.link_path(),
            state: config.target.join(".pushdeploy"),
            link_name: config.link.clone(),
        }
    }

    /// Returns a slot's directory.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.target.join(slot.name())
    }

    /// Returns the deploy lock's file.
    pub fn lock_path(&self) -> PathBuf {
        self.state.join("lock")
    }

    /// Returns the file that holds a running build's process group id.
    pub fn build_pgid_path(&self) -> PathBuf {
        self.state.join("build.pgid")
    }

    /// Returns where a retired tree waits to be removed.
    fn trash(&self) -> PathBuf {
        self.state.join("trash")
    }

    /// The temporary link that is renamed over the live one.
    fn new_link(&self) -> PathBuf {
        self.target.join(format!(".{}.pushdeploy-new", self.link_name))
    }

    /// Reads the link: `None` before the first deploy.
    pub fn live(&self) -> Result<Option<Live>, Error> {
        let meta = match fs::symlink_metadata(&self.link) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io { path: self.link.clone(), source });
            }
        };
        if !meta.file_type().is_symlink() {
            let kind = if meta.is_dir() { "directory" } else { "file" };
            return Err(Error::NotALink { path: self.link.clone(), kind });
        }
        let link_target = fs::read_link(&self.link).map_err(Error::io(&self.link))?;
        let slot = match link_target.components().next() {
            Some(Component::Normal(first)) => Slot::from_name(first),
            _ => None,
        };
        match slot {
            Some(slot) => Ok(Some(Live { slot, link_target })),
            None => Err(Error::ForeignLink { path: self.link.clone(), target: link_target }),
        }
    }

    /// Creates the target's state directory and the directories in it when missing, and
    /// checks that they, and whatever else pushdeploy keeps there, are what pushdeploy makes.
    ///
    /// Each is made with one `mkdir` and then checked with `lstat`: a planted symlink (say
    /// `.pushdeploy -> /home/alice`) is refused, never followed, since a deploy removes trees,
    /// truncates its lock and writes its records in there.
    pub fn ensure_state_dir(&self) -> Result<(), Error> {
        make_state_dir(&self.state)?;
        make_state_dir(&self.records_dir())?;
        make_state_dir(&self.slots_dir())?;
        self.check_state()
    }

    /// Checks, creating nothing, that the state directory and what pushdeploy keeps in it are
    /// real directories and files owned by this user, not symlinks; a missing one is fine.
    pub fn check_state(&self) -> Result<(), Error> {
        let dirs = [
            self.state.clone(),
            self.records_dir(),
            self.slots_dir(),
            self.trash(),
            self.state.join("parked"),
            self.state.join("cache"),
            self.state.join("cache.partial"),
        ];
        for dir in &dirs {
            check_state_entry(dir, true)?;
        }
        for file in [self.lock_path(), self.build_pgid_path(), self.state.join("history.jsonl")] {
            check_state_entry(&file, false)?;
        }
        Ok(())
    }

    /// Returns where pushdeploy records which slot directories it created.
    fn slots_dir(&self) -> PathBuf {
        self.state.join("slots")
    }

    /// Returns the record that `slot`'s directory is pushdeploy's: `pending` while it is being
    /// made, then its `dev:inode`.
    fn slot_marker(&self, slot: Slot) -> PathBuf {
        self.slots_dir().join(slot.name())
    }

    /// Returns where the record and index of each slot's release are kept.
    pub fn records_dir(&self) -> PathBuf {
        self.state.join("releases")
    }

    /// Returns the record of what `slot` holds (see `history`).
    pub fn record_path(&self, slot: Slot) -> PathBuf {
        self.records_dir().join(format!("{}.json", slot.name()))
    }

    /// Returns the index of `slot`'s files (see `index`).
    pub fn index_path(&self, slot: Slot) -> PathBuf {
        self.records_dir().join(format!("{}.index", slot.name()))
    }

    /// Returns where the release kept in `slot` waits while a deploy builds there.
    pub fn parked_dir(&self, slot: Slot) -> PathBuf {
        self.state.join("parked").join(slot.name())
    }

    /// Returns the parked release of `slot`, with its record and index: `(tree, record, index)`.
    pub fn parked(&self, slot: Slot) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.parked_dir(slot);
        (dir.join("release"), dir.join("record.json"), dir.join("index"))
    }
}

/// Empties `slot` (the one that is not live) and what interrupted deploys left behind, then
/// creates its directory, empty, recording that pushdeploy made it. What pushdeploy did not
/// make is moved aside, never deleted.
#[instrument(skip_all, fields(slot = %slot))]
pub fn prepare(layout: &Layout, slot: Slot) -> Result<PathBuf, Error> {
    clear_new_link(layout)?;
    remove_path(&layout.trash())?;
    remove_slot(layout, slot)?;
    let dir = layout.slot_dir(slot);
    // The marker comes first: a deploy killed between the two leaves a directory that is
    // still known as pushdeploy's, so the next deploy removes it instead of moving it aside.
    write_slot_marker(layout, slot, "pending")?;
    DirBuilder::new().mode(0o777).create(&dir).map_err(Error::io(&dir))?;
    mark_slot(layout, slot)?;
    Ok(dir)
}

/// Removes a temporary link left by an interrupted switch. Only ever a symlink pushdeploy
/// made; anything else by that name is someone's, and is moved aside.
fn clear_new_link(layout: &Layout) -> Result<(), Error> {
    let new_link = layout.new_link();
    match fs::symlink_metadata(&new_link) {
        Ok(meta) if !meta.file_type().is_symlink() => {
            move_aside(&layout.target, &new_link).map(drop)
        }
        _ => remove_path(&new_link),
    }
}

/// Records that the directory now at `slot` is pushdeploy's (its `dev:inode`), after
/// pushdeploy made it or put a release of its own back there.
pub fn mark_slot(layout: &Layout, slot: Slot) -> Result<(), Error> {
    let dir = layout.slot_dir(slot);
    let meta = fs::symlink_metadata(&dir).map_err(Error::io(&dir))?;
    write_slot_marker(layout, slot, &identity(&meta))
}

/// Returns what a slot marker says for a directory: `dev:inode`.
fn identity(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Writes a slot's marker atomically (a temporary file renamed over it), so it is never seen
/// half-written.
fn write_slot_marker(layout: &Layout, slot: Slot, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let dir = layout.slots_dir();
    make_state_dir(&dir)?;
    let path = layout.slot_marker(slot);
    let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(Error::io(&path))?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(Error::io(&path))?;
    file.persist(&path).map_err(|err| Error::Io { path: path.clone(), source: err.error })?;
    Ok(())
}

/// Tells whether whatever is at `slot`'s path is a directory pushdeploy created; `None` when
/// nothing is there.
///
/// The slot's marker decides. A slot without a marker is pushdeploy's when it holds a release
/// record (releases made before markers existed); it is then given a marker, so it stays
/// known as pushdeploy's once the record is forgotten.
fn slot_is_ours(layout: &Layout, slot: Slot) -> Result<Option<bool>, Error> {
    let dir = layout.slot_dir(slot);
    let meta = match fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: dir, source }),
    };
    if !meta.is_dir() {
        return Ok(Some(false));
    }
    let marker = layout.slot_marker(slot);
    match fs::read_to_string(&marker) {
        Ok(text) => Ok(Some(text.trim() == "pending" || text.trim() == identity(&meta))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let legacy = fs::symlink_metadata(layout.record_path(slot)).is_ok();
            if legacy {
                write_slot_marker(layout, slot, &identity(&meta))?;
            }
            Ok(Some(legacy))
        }
        Err(source) => Err(Error::Io { path: marker, source }),
    }
}

/// Moves whatever is at `slot`'s path aside when pushdeploy did not create it, saying so in
/// one line: pushdeploy deletes only what it created.
pub fn set_aside_foreign_slot(layout: &Layout, slot: Slot) -> Result<(), Error> {
    if slot_is_ours(layout, slot)? == Some(false) {
        move_aside(&layout.target, &layout.slot_dir(slot))?;
    }
    Ok(())
}

/// Removes `slot`'s directory if pushdeploy created it (moving it aside otherwise), and then
/// its marker.
pub fn remove_slot(layout: &Layout, slot: Slot) -> Result<(), Error> {
    set_aside_foreign_slot(layout, slot)?;
    remove_path(&layout.slot_dir(slot))?;
    remove_path(&layout.slot_marker(slot))
}

/// Renames `path` to `PATH.moved-aside-<UTC time>` in `dir` (never replacing anything) and
/// tells the pusher; returns the new path.
fn move_aside(dir: &Path, path: &Path) -> Result<PathBuf, Error> {
    use nix::fcntl::{RenameFlags, renameat2};
    let name = path.file_name().unwrap_or_default().to_owned();
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let handle = File::open(dir).map_err(Error::io(dir))?;
    let mut attempt = 1;
    loop {
        let mut aside = name.clone();
        aside.push(format!(".moved-aside-{stamp}"));
        if attempt > 1 {
            aside.push(format!("-{attempt}"));
        }
        // RENAME_NOREPLACE: a plain rename would replace an empty directory of that name.
        let flags = RenameFlags::RENAME_NOREPLACE;
        match renameat2(&handle, name.as_os_str(), &handle, aside.as_os_str(), flags) {
            Ok(()) => {
                let aside = dir.join(aside);
                crate::report::line(&format!(
                    "moved {} aside to {}: pushdeploy did not create it, and deletes only what it created",
                    escape_path(path),
                    escape_path(&aside)
                ));
                return Ok(aside);
            }
            Err(nix::errno::Errno::EEXIST) => attempt += 1,
            Err(errno) => return Err(Error::Io { path: path.to_owned(), source: errno.into() }),
        }
    }
}

/// Creates a directory of pushdeploy's state when missing; an existing one is checked later.
fn make_state_dir(path: &Path) -> Result<(), Error> {
    match DirBuilder::new().create(path) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            Err(Error::Io { path: path.to_owned(), source: err })
        }
        _ => check_state_entry(path, true),
    }
}

/// Checks with `lstat` that `path`, when it exists, is a directory (or a regular file) owned
/// by this user, not a symlink.
fn check_state_entry(path: &Path, dir: bool) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
    };
    let kind = meta.file_type();
    let what = if dir { "a directory" } else { "a file" };
    let planted = |problem: String| Error::StateDir {
        path: path.to_owned(),
        problem,
        hint: format!(
            "move {} away, and pushdeploy makes a real {} there at the next deploy (or put back the one that was there)",
            escape_path(path),
            if dir { "directory" } else { "file" }
        ),
    };
    if kind.is_symlink() {
        return Err(planted(format!("is a symlink, not {what}; pushdeploy does not follow it")));
    }
    if dir && !kind.is_dir() {
        return Err(planted("is a file, not a directory".into()));
    }
    if !dir && !kind.is_file() {
        return Err(planted("is not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::StateDir {
            path: path.to_owned(),
            problem: format!("is owned by uid {}, not by this user (uid {me})", meta.uid()),
            hint: format!(
                "run pushdeploy as the user that owns {}, or `chown -R` it to this user",
                escape_path(path)
            ),
        });
    }
    Ok(())
}

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

/// Checks a whole tree before anything is written: every name is a plain file name, and every
/// symlink resolves inside the release.
#[instrument(skip_all)]
pub fn check_tree(entries: &[Entry], symlinks: SymlinkPolicy) -> Result<(), Error> {
    let mut index: HashMap<PathBuf, &EntryKind> = HashMap::with_capacity(entries.len());
    for entry in entries {
        let path = entry.path();
        if let Err(why) = check_name(&entry.name) {
            return Err(Error::Refused { path: entry.parent.join(&entry.name), why: why.into() });
        }
        if index.insert(path.clone(), &entry.kind).is_some() {
            return Err(Error::Refused {
                path,
                why: "the tree holds two entries of this name".into(),
            });
        }
    }
    for entry in entries {
        if let EntryKind::Symlink { target } = &entry.kind {
            if symlinks == SymlinkPolicy::None {
                return Err(Error::Refused {
                    path: entry.path(),
                    why: "symlinks are not allowed (`symlinks = \"none\"` in the configuration)"
                        .into(),
                });
            }
            let mut hops = 0;
            check::resolve_inside(&index, check::components(&entry.parent), target, &mut hops)
                .map_err(|why| Error::Refused {
                    path: entry.path(),
                    why: format!(
                        "symlink to {} {why}",
                        escape_path(Path::new(OsStr::from_bytes(target)))
                    ),
                })?;
        }
    }
    Ok(())
}

fn check_name(name: &OsStr) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." {
        Err("a tree entry may not be named `.`, `..` or nothing")
    } else if bytes.contains(&b'/') {
        Err("a tree entry name may not contain `/`")
    } else if bytes.eq_ignore_ascii_case(b".git") {
        Err("a tree entry may not be named `.git`")
    } else {
        Ok(())
    }
}

/// The pushed tree, by path, as the resolver of [`check`] sees it.
impl check::Tree for HashMap<PathBuf, &EntryKind> {
    fn node(&self, path: &Path) -> io::Result<check::Node> {
        Ok(match self.get(path) {
            Some(EntryKind::Symlink { target }) => check::Node::Symlink(target.clone()),
            Some(EntryKind::Dir | EntryKind::Submodule { .. }) => check::Node::Dir,
            Some(EntryKind::File { .. }) => check::Node::Other,
            None => check::Node::Missing,
        })
    }
}

/// Refuses, before anything is written, a release that clearly does not fit on the target's
/// filesystem: each file to write counts whole 4 KiB blocks, as does each directory; files the
/// base release can lend count nothing.
pub fn check_space(
    repo: &Repo,
    entries: &[Entry],
    base: Option<&Base<'_>>,
    target: &Path,
) -> Result<(), Error> {
    const BLOCK: u64 = 4096;
    let lent = |entry: &Entry, blob: &BlobId| {
        base.and_then(|base| base.index.files.get(&entry.path()))
            .is_some_and(|known| known.blob == *blob)
    };
    let mut needed = 0;
    for entry in entries {
        needed += match &entry.kind {
            EntryKind::File { blob, .. } if lent(entry, blob) => 0,
            EntryKind::File { blob, .. } => {
                let size = repo.blob_size(*blob).map_err(|err| blob_error(err, entry.path()))?;
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

fn blob_error(err: BlobError, path: PathBuf) -> Error {
    match err {
        BlobError::Git(message) => Error::Blob { path, message },
        BlobError::Io(source) => Error::Io { path, source },
    }
}

/// Tells whether an error is the filesystem being full.
pub fn is_no_space(err: &Error) -> bool {
    match err {
        Error::NoSpace { .. } => true,
        Error::Io { source, .. } => source.raw_os_error() == Some(nix::libc::ENOSPC),
        _ => false,
    }
}

/// A complete, unmodified release that files can be hard-linked from.
pub struct Base<'a> {
    pub dir: PathBuf,
    pub index: &'a Index,
}

/// Writes a checked tree into `dir`, the empty directory `prepare` made. Returns what was
/// written and, with `want_index`, the new release's index.
///
/// Every file is created with `O_EXCL` and every directory with `mkdir`, so nothing is ever
/// written through a symlink, even one the tree itself just created. A file whose blob, mode
/// and path are the same as in `base`, and which `base`'s index trusts, is hard-linked instead
/// of written. Files are written by a few threads, each with its own repository handle.
#[instrument(skip_all)]
pub fn materialize(
    repo: &Repo,
    entries: &[Entry],
    dir: &Path,
    base: Option<&Base<'_>>,
    umask: u32,
    want_index: bool,
) -> Result<(Written, Option<Index>), Error> {
    let mut written = Written::default();
    let mut dirs = DirBuilder::new();
    dirs.mode(0o777);
    let mut files = Vec::new();
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
            EntryKind::File { executable, blob } => {
                files.push(PendingFile { path: entry.path(), executable: *executable, blob: *blob })
            }
        }
    }

    let mode_mask = !umask;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let results: Vec<Result<FilesWritten, Error>> = if threads == 1 || files.len() < 64 {
        vec![write_files(repo, files.iter(), dir, base, mode_mask, want_index)]
    } else {
        let repo_path = repo.path();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|worker| {
                    let files = &files;
                    scope.spawn(move || {
                        // A libgit2 repository handle is not shared between threads.
                        let repo = Repo::open(repo_path).map_err(|err| Error::Blob {
                            path: PathBuf::new(),
                            message: err.to_string(),
                        })?;
                        let mine = files.iter().skip(worker).step_by(threads);
                        write_files(&repo, mine, dir, base, mode_mask, want_index)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err(panicked())))
                .collect()
        })
    };
    let mut index = want_index.then(Index::default);
    for result in results {
        let part = result?;
        written.files += part.files;
        written.linked += part.linked;
        written.bytes += part.bytes;
        written.warnings.extend(part.warnings);
        if let Some(index) = &mut index {
            index.files.extend(part.index);
        }
    }
    Ok((written, index))
}

/// How every Git LFS pointer file starts.
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

/// A file of the tree, waiting to be written.
struct PendingFile {
    path: PathBuf,
    executable: bool,
    blob: BlobId,
}

/// What one writer thread did.
#[derive(Default)]
struct FilesWritten {
    warnings: Vec<String>,
    files: u64,
    linked: u64,
    bytes: u64,
    index: Vec<(PathBuf, IndexEntry)>,
}

fn panicked() -> Error {
    Error::Io { path: PathBuf::new(), source: io::Error::other("a writer thread panicked") }
}

fn write_files<'f>(
    repo: &Repo,
    files: impl Iterator<Item = &'f PendingFile>,
    dir: &Path,
    base: Option<&Base<'_>>,
    mode_mask: u32,
    want_index: bool,
) -> Result<FilesWritten, Error> {
    let mut done = FilesWritten::default();
    for PendingFile { path: relative, executable, blob } in files {
        let path = dir.join(relative);
        let mode = if *executable { 0o777 } else { 0o666 };
        if let Some(stat) = link_unchanged(base, relative, *blob, mode & mode_mask, &path) {
            done.files += 1;
            done.linked += 1;
            done.bytes += stat.size;
            if want_index {
                done.index.push((relative.clone(), IndexEntry { blob: *blob, stat }));
            }
            continue;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(Error::io(&path))?;
        let size = repo.blob_size(*blob).map_err(|err| blob_error(err, relative.clone()))?;
        let head = repo.write_blob(*blob, size, &mut file).map_err(|err| match err {
            BlobError::Io(source) => Error::Io { path: path.clone(), source },
            err => blob_error(err, relative.clone()),
        })?;
        if size < 1024 && head.starts_with(LFS_POINTER) {
            done.warnings.push(format!(
                "{} is a Git LFS pointer: it is deployed as the pointer text, since pushdeploy does not fetch LFS objects; commit the file itself to deploy it",
                escape_path(relative)
            ));
        }
        done.files += 1;
        done.bytes += size;
        if want_index {
            let stat = index::stat_of(&file).map_err(Error::io(&path))?;
            done.index.push((relative.clone(), IndexEntry { blob: *blob, stat }));
        }
    }
    Ok(done)
}

/// Hard-links `relative` from the base release when the index vouches that the file there is
/// this very blob with this mode, unmodified. Returns its stat when it did.
fn link_unchanged(
    base: Option<&Base<'_>>,
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
        "submodule {} (commit {}) is not deployed: its directory is empty, as `git archive` makes it; vendor its files into the repository to deploy them",
        escape_path(path),
        commit.short()
    )
}

/// Switches the link to `link_target` (relative to the target directory) with one rename.
///
/// The new link is made beside the live one and renamed over it: at every instant the link
/// exists and points at a complete release. Unlinking first would leave a moment with no site.
#[instrument(skip_all)]
pub fn activate(layout: &Layout, link_target: &Path) -> Result<(), Error> {
    let new_link = layout.new_link();
    clear_new_link(layout)?;
    std::os::unix::fs::symlink(link_target, &new_link).map_err(Error::io(&new_link))?;
    fs::rename(&new_link, &layout.link).map_err(Error::io(&layout.link))?;
    // The rename lives in the directory's entries: without this fsync a power cut could bring
    // back the old link after the pusher was told the new release is live. The switch has
    // happened either way, so a failed fsync must not be reported as a failed activation.
    if let Err(err) = sync_dir(&layout.target) {
        tracing::warn!("cannot fsync {}: {err}", layout.target.display());
    }
    Ok(())
}

/// Flushes the whole filesystem that holds `dir`, so a release's files are on disk before the
/// link can point at them (after a power cut a renamed link must not lead to empty files).
#[instrument(skip_all)]
pub fn sync_filesystem(dir: &Path) -> Result<(), Error> {
    let file = File::open(dir).map_err(Error::io(dir))?;
    nix::unistd::syncfs(&file)
        .map_err(|errno| Error::Io { path: dir.to_owned(), source: errno.into() })
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|file| file.sync_all()).map_err(Error::io(dir))
}

/// Removes a release that is no longer live. It is first renamed into the state directory so
/// that, if removal is interrupted, the slot is already free and the next deploy cleans up.
/// A slot pushdeploy did not create (a release set up by hand that pushdeploy took over) is
/// moved aside instead.
#[instrument(skip_all, fields(slot = %slot))]
pub fn retire(layout: &Layout, slot: Slot) -> Result<(), Error> {
    set_aside_foreign_slot(layout, slot)?;
    let dir = layout.slot_dir(slot);
    if fs::symlink_metadata(&dir).is_err() {
        return remove_path(&layout.slot_marker(slot));
    }
    let trash = layout.trash();
    make_state_dir(&trash)?;
    let parked = trash.join(slot.name());
    remove_path(&parked)?;
    fs::rename(&dir, &parked).map_err(Error::io(&dir))?;
    remove_path(&layout.slot_marker(slot))?;
    remove_path(&parked)
}

/// Removes a file, link or whole tree; a missing path is fine. Directories a build left
/// without write permission are opened up first (as `go clean -modcache` must).
pub fn remove_path(path: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io { path: path.to_owned(), source });
        }
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(Error::io(path));
    }
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                }
            }
            fs::remove_dir_all(path).map_err(Error::io(path))
        }
        result => result.map_err(Error::io(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(parent: &str, name: &str) -> Entry {
        Entry { parent: parent.into(), name: name.into(), kind: EntryKind::Dir }
    }

    fn link(parent: &str, name: &str, target: &str) -> Entry {
        Entry {
            parent: parent.into(),
            name: name.into(),
            kind: EntryKind::Symlink { target: target.as_bytes().to_vec() },
        }
    }

    fn refused(entries: &[Entry]) -> String {
        check_tree(entries, SymlinkPolicy::Inside).unwrap_err().to_string()
    }

    #[test]
    fn links_inside_the_release_pass() {
        let tree =
            [dir("", "a"), dir("a", "b"), link("a/b", "up", "../../a"), link("", "x", "a/b/up/b")];
        check_tree(&tree, SymlinkPolicy::Inside).unwrap();
    }

    #[test]
    fn absolute_and_climbing_links_are_refused() {
        assert!(refused(&[link("", "leak", "/etc/passwd")]).contains("absolute"));
        assert!(refused(&[dir("", "a"), link("a", "up", "../../x")]).contains("out of"));
    }

    #[test]
    fn chain_through_a_link_to_root_is_refused() {
        // Lexically `l/..` is `.`, but `l` is the root itself, so `l/..` is its parent.
        let err = refused(&[link("", "l", "."), link("", "m", "l/..")]);
        assert_eq!(err, "refused m: symlink to l/.. leads out of the release");
    }

    #[test]
    fn loops_are_refused() {
        assert!(refused(&[link("", "a", "b/x"), link("", "b", "a/x")]).contains("loop"));
    }

    #[test]
    fn no_symlinks_at_all_when_configured() {
        let tree = [link("", "l", "index.html")];
        let err = check_tree(&tree, SymlinkPolicy::None).unwrap_err().to_string();
        assert!(err.starts_with("refused l: symlinks are not allowed"), "{err}");
    }

    #[test]
    fn crafted_names_are_refused() {
        assert!(refused(&[dir("", "..")]).contains("`..`"));
        assert!(refused(&[dir("", ".GIT")]).contains("`.git`"));
        assert!(refused(&[dir("", "a/b")]).contains("`/`"));
    }
}
