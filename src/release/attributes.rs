//! `.gitattributes` as `git archive` applies them: `export-ignore` leaves paths out,
//! `export-subst` expands `$Format:…$`, `text`/`eol`/`crlf` (and `core.autocrlf`/`core.eol`)
//! convert line endings, `ident` expands `$Id$`.
//!
//! The attributes are applied by the real `git archive` of the commit, read as a tar stream:
//! which paths it holds is what the release holds, and a file whose archived bytes are not its
//! blob's is written from the archive. Reimplementing git here (gitoxide's `gix-attributes`, or
//! libgit2's attribute lookup and filters) would mean matching git on pattern rules, macros,
//! `text=auto`'s binary detection, every `--pretty` placeholder and the bare repository's
//! config, and libgit2 differs from git on several (it reads attributes of a bare repository's
//! commit only with an explicit flag, and has no `export-subst`). `git check-attr --source`
//! would give exact attributes but needs git 2.40 (Debian 12 has 2.39) and still leaves the
//! conversions to reimplement. `git archive` has applied all of them since git 1.6, it is on
//! every server that receives pushes, and its output is by definition what invariant 3 asks.
//!
//! The fast path: a commit with no `.gitattributes` anywhere, no `info/attributes` in the
//! repository, no global or system attributes file and no `core.autocrlf=true` never runs it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha1::{Digest, Sha1};
use tracing::instrument;

use crate::git::{BlobId, CommitId, Entry, EntryKind, Repo, STREAM_ABOVE};
use crate::report::escape_path;

/// What can go wrong while applying the attributes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run `git archive` to apply .gitattributes: {0}")]
    Spawn(io::Error),
    #[error("`git archive {commit}` (which applies .gitattributes) failed: {reason}")]
    Archive { commit: String, reason: String },
    #[error("`git archive {commit}` grows past {}: export-subst or ident expand too much", crate::report::bytes(*limit))]
    TooLarge { commit: String, limit: u64 },
    #[error(
        "`git archive {commit}` holds {}, which is not in the commit's tree",
        escape_path(path)
    )]
    Unexpected { commit: String, path: PathBuf },
    #[error("cannot keep converted files in {}: {source}", escape_path(path))]
    Spool { path: PathBuf, source: io::Error },
}

/// The files whose bytes in `git archive` are not their blob's, kept in an unnamed spool file.
#[derive(Debug, Default)]
pub struct Converted {
    spool: Option<File>,
    files: HashMap<PathBuf, ConvertedFile>,
}

/// One converted file: where its bytes are in the spool, and the blob id those bytes would
/// have (the key for hard-linking it from a release that holds the same bytes; `None`, which
/// never links, only if the hash could not be read back as an id).
#[derive(Debug, Clone, Copy)]
pub struct ConvertedFile {
    pub id: Option<BlobId>,
    pub len: u64,
    offset: u64,
}

impl Converted {
    /// Tells whether no file is converted.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Returns the converted bytes of `path`, if it has any.
    pub fn get(&self, path: &Path) -> Option<ConvertedFile> {
        if self.files.is_empty() { None } else { self.files.get(path).copied() }
    }

    /// Copies a converted file's bytes to `out`.
    pub fn write_to(&self, file: ConvertedFile, out: &mut File) -> io::Result<()> {
        let Some(spool) = &self.spool else {
            return Err(io::Error::other("no spool for converted files"));
        };
        let mut buffer = vec![0; 64 * 1024];
        let (mut offset, end) = (file.offset, file.offset + file.len);
        while offset < end {
            let want = (end - offset).min(buffer.len() as u64) as usize;
            let got = spool.read_at(&mut buffer[..want], offset)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            out.write_all(&buffer[..got])?;
            offset += got as u64;
        }
        Ok(())
    }
}

/// Applies the attributes `git archive` would to the tree of `commit`: returns the entries it
/// keeps (in their order) and the files it converts, spooled in `spool_dir`.
#[instrument(skip_all)]
pub fn apply(
    repo: &Repo,
    commit: CommitId,
    entries: Vec<Entry>,
    spool_dir: &Path,
) -> Result<(Vec<Entry>, Converted), Error> {
    if !may_apply(repo, &entries) {
        return Ok((entries, Converted::default()));
    }
    let tree: HashMap<PathBuf, Option<BlobId>> = entries
        .iter()
        .map(|entry| {
            let blob = match entry.kind {
                EntryKind::File { blob, .. } => Some(blob),
                _ => None,
            };
            (entry.path(), blob)
        })
        .collect();
    // Bounds what a push can make git write: eol=crlf at most doubles a file; the margin is
    // for `$Format:…$` and `$Id$` expansions.
    let total: u64 = tree.values().flatten().filter_map(|blob| repo.blob_size(*blob).ok()).sum();
    let limit = total.saturating_mul(2).saturating_add(64 << 20);
    let (kept, converted) = read_archive(repo, commit, &tree, limit, spool_dir)?;
    let entries = entries.into_iter().filter(|entry| kept.contains(&entry.path())).collect();
    Ok((entries, converted))
}

/// Tells whether any attributes may apply: cheap checks, so that a tree without any costs
/// nothing measurable. False positives only cost running `git archive`.
fn may_apply(repo: &Repo, entries: &[Entry]) -> bool {
    let exists = |path: &Path| std::fs::symlink_metadata(path).is_ok();
    let global = repo.config_path("core.attributesFile").or_else(|| {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
        Some(config.join("git/attributes"))
    });
    entries.iter().any(|entry| entry.name == ".gitattributes")
        || exists(&repo.path().join("info/attributes"))
        || global.is_some_and(|path| exists(&path))
        || exists(Path::new("/etc/gitattributes"))
        || repo.config_bool("core.autocrlf") == Some(true)
}

/// Runs `git archive` of `commit` and reads it: returns every path it holds, and spools each
/// file whose bytes differ from its blob.
fn read_archive(
    repo: &Repo,
    commit: CommitId,
    tree: &HashMap<PathBuf, Option<BlobId>>,
    limit: u64,
    spool_dir: &Path,
) -> Result<(HashSet<PathBuf>, Converted), Error> {
    let hex = commit.hex();
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["archive", "--format=tar"])
        .arg(&hex)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    let stderr = child.stderr.take().map(|stderr| std::thread::spawn(move || first_line(stderr)));
    let read = match child.stdout.take() {
        Some(stdout) => {
            let mut reader = Bounded { inner: stdout, left: limit, over: false };
            let read = read_entries(&mut reader, &hex, tree, spool_dir);
            // Read to the end, so git is not killed by SIGPIPE on the padding after the last
            // entry; a failed read already has its error.
            let drained = io::copy(&mut reader, &mut io::sink());
            if reader.over {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::TooLarge { commit: hex, limit });
            }
            read.and_then(|done| drained.map(|_| done).map_err(|err| archive_error(&hex, err)))
        }
        None => Err(archive_error(&hex, io::Error::other("no output"))),
    };
    let status = child.wait().map_err(|err| archive_error(&hex, err))?;
    let message = stderr.and_then(|thread| thread.join().ok()).unwrap_or_default();
    if !status.success() {
        let reason = if message.is_empty() { status.to_string() } else { message };
        return Err(Error::Archive { commit: hex, reason });
    }
    read
}

/// Reads the tar stream `git archive` writes (pax headers for long names, a global header
/// with the commit id, which is skipped).
fn read_entries(
    reader: &mut impl Read,
    hex: &str,
    tree: &HashMap<PathBuf, Option<BlobId>>,
    spool_dir: &Path,
) -> Result<(HashSet<PathBuf>, Converted), Error> {
    let mut kept = HashSet::with_capacity(tree.len());
    let mut spool = Spool { dir: spool_dir, file: None, end: 0 };
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|err| archive_error(hex, err))? {
        let mut entry = entry.map_err(|err| archive_error(hex, err))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        let raw = entry.path_bytes();
        let path =
            PathBuf::from(OsString::from_vec(raw.strip_suffix(b"/").unwrap_or(&raw).to_vec()));
        let unexpected = || Error::Unexpected { commit: hex.to_owned(), path: path.clone() };
        let blob = tree.get(&path).ok_or_else(unexpected)?;
        if kind.is_file() {
            let blob = blob.ok_or_else(unexpected)?;
            let size = entry.size();
            if let Some(file) = spool.add_if_converted(&mut entry, size, blob, hex)? {
                files.insert(path.clone(), file);
            }
        }
        kept.insert(path);
    }
    Ok((kept, Converted { spool: spool.file, files }))
}

/// The unnamed file converted bytes are kept in until they are written into the release.
struct Spool<'d> {
    dir: &'d Path,
    file: Option<File>,
    end: u64,
}

impl Spool<'_> {
    /// Reads one archived file: returns where it is spooled when its bytes are not `blob`'s.
    fn add_if_converted(
        &mut self,
        entry: &mut impl Read,
        size: u64,
        blob: BlobId,
        hex: &str,
    ) -> Result<Option<ConvertedFile>, Error> {
        let mut hasher = Sha1::new();
        hasher.update(format!("blob {size}\0").as_bytes());
        let spool_error = spool_error(self.dir);
        // A small file is compared in memory and spooled only when converted; a large one is
        // spooled as it is read, and taken back if it is its blob after all.
        let (id, small) = if size <= STREAM_ABOVE {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(|err| archive_error(hex, err))?;
            hasher.update(&bytes);
            (blob_id(hasher), Some(bytes))
        } else {
            let file = self.file()?;
            let mut buffer = vec![0; 64 * 1024];
            loop {
                let got = entry.read(&mut buffer).map_err(|err| archive_error(hex, err))?;
                if got == 0 {
                    break;
                }
                hasher.update(&buffer[..got]);
                file.write_all(&buffer[..got]).map_err(&spool_error)?;
            }
            (blob_id(hasher), None)
        };
        let offset = self.end;
        if id == Some(blob) {
            if small.is_none() {
                let file = self.file()?;
                file.set_len(offset)
                    .and_then(|()| file.seek(SeekFrom::Start(offset)).map(drop))
                    .map_err(&spool_error)?;
            }
            return Ok(None);
        }
        if let Some(bytes) = small {
            self.file()?.write_all(&bytes).map_err(&spool_error)?;
        }
        self.end += size;
        Ok(Some(ConvertedFile { id, len: size, offset }))
    }

    fn file(&mut self) -> Result<&mut File, Error> {
        if self.file.is_none() {
            let file = tempfile::tempfile_in(self.dir)
                .map_err(|source| Error::Spool { path: self.dir.to_owned(), source })?;
            self.file = Some(file);
        }
        self.file.as_mut().ok_or_else(|| Error::Spool {
            path: self.dir.to_owned(),
            source: io::Error::other("gone"),
        })
    }
}

fn spool_error(dir: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Spool { path: dir.to_owned(), source }
}

/// Returns the git blob id of what `hasher` was fed (header included).
fn blob_id(hasher: Sha1) -> Option<BlobId> {
    let hex: String = hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
    BlobId::from_hex(&hex)
}

fn archive_error(hex: &str, err: io::Error) -> Error {
    Error::Archive { commit: hex.to_owned(), reason: err.to_string() }
}

/// Returns the first line of what git said on stderr (bounded), reading the rest away.
fn first_line(mut stderr: impl Read) -> String {
    let mut head = Vec::new();
    let _ = (&mut stderr).take(4096).read_to_end(&mut head);
    let _ = io::copy(&mut stderr, &mut io::sink());
    let text = String::from_utf8_lossy(&head);
    text.lines().find(|line| !line.trim().is_empty()).unwrap_or_default().trim().to_owned()
}

/// A reader that stops (and says so) after `left` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.over = true;
                return Err(io::Error::other("git archive's output is too large"));
            }
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..want])?;
        self.left -= got as u64;
        Ok(got)
    }
}
