//! Submodules: each gitlink that the commit's own `.gitmodules` names is deployed at its pinned
//! commit, read from a cache of the submodule's repository (`cache`), nested ones too.
//!
//! The result is one more [`Part`] per submodule: its entries with paths relative to the
//! release's root, and the repository they are read from. The gitlink itself becomes a plain
//! directory entry of the tree that holds it, so the caller checks the combined tree (a
//! theme's symlink is judged where it lands in the release) and writes each part with the same
//! writer, the superproject's first.

mod cache;
mod gitmodules;

use std::path::{Path, PathBuf};

use crate::git::{self, CommitId, Entry, EntryKind, Repo};
use crate::report::{self, escape, escape_path};
use crate::target_dir::layout::make_state_dir;

/// How deep submodules may nest (a submodule of a submodule of …).
const MAX_DEPTH: usize = 8;
/// The largest `.gitmodules` read.
const MAX_GITMODULES: u64 = 1024 * 1024;

/// A submodule's tree: entries with paths relative to the release's root, and the cache
/// repository their blobs are read from.
pub struct Part {
    pub repo: Repo,
    pub entries: Vec<Entry>,
}

/// Why a submodule cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "submodule {}: cannot fetch commit {commit} from {}: {reason}",
        escape_path(path),
        escape(url)
    )]
    Fetch { path: PathBuf, url: String, commit: CommitId, reason: String },
    #[error("submodule {}: {} has no commit {commit}", escape_path(path), escape(url))]
    Missing { path: PathBuf, url: String, commit: CommitId },
    #[error("submodule {}: refused its URL {}: {why}", escape_path(path), escape(url))]
    Url { path: PathBuf, url: String, why: &'static str },
    #[error("cannot read {}: {reason}", escape_path(path))]
    Gitmodules { path: PathBuf, reason: String },
    #[error("submodule {}: its cache is unusable: {reason}", escape_path(path))]
    Cache { path: PathBuf, reason: String },
    #[error("submodule {}: {source}", escape_path(path))]
    Read { path: PathBuf, source: git::Error },
    #[error("submodule {}: submodules nest more than {MAX_DEPTH} deep", escape_path(path))]
    TooDeep { path: PathBuf },
}

impl Error {
    /// Returns what to do about it.
    pub fn hint(&self) -> String {
        const SKIP: &str = "or set `submodules = \"skip\"` in pushdeploy.toml to deploy it as an empty directory, as `git archive` does";
        match self {
            Error::Fetch { url, commit, .. } => format!(
                "make {} reachable from this server (and commit {} pushed to it), {SKIP}",
                escape(url),
                commit.short()
            ),
            Error::Missing { url, commit, .. } => {
                format!(
                    "push commit {} to {} (it may exist only on your machine), {SKIP}",
                    commit.short(),
                    escape(url)
                )
            }
            Error::Url { .. } | Error::Gitmodules { .. } | Error::TooDeep { .. } => {
                format!("fix .gitmodules and push again, {SKIP}")
            }
            Error::Cache { .. } | Error::Read { .. } => format!("deploy again, {SKIP}"),
        }
    }
}

/// Resolves every gitlink of `entries` (the tree of a commit of `repo`) that `.gitmodules`
/// names: fetches its commit into its cache in `cache_dir` when missing, turns the gitlink
/// into a directory entry, and returns the submodules' trees, each before those nested in it.
/// A gitlink that `.gitmodules` does not name stays a gitlink (an empty directory, warned).
pub fn resolve(repo: &Repo, entries: &mut [Entry], cache_dir: &Path) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let base = repo.path().to_string_lossy().into_owned();
    fill(repo, &base, Path::new(""), entries, cache_dir, &mut parts, 0)?;
    Ok(parts)
}

/// Resolves the gitlinks of one tree, whose root is at `prefix` in the release and whose
/// relative submodule URLs resolve against `base`; recurses into each submodule's own.
fn fill(
    repo: &Repo,
    base: &str,
    prefix: &Path,
    entries: &mut [Entry],
    cache_dir: &Path,
    parts: &mut Vec<Part>,
    depth: usize,
) -> Result<(), Error> {
    let gitlinks: Vec<usize> = (0..entries.len())
        .filter(|&i| matches!(entries[i].kind, EntryKind::Submodule { .. }))
        .collect();
    if gitlinks.is_empty() {
        return Ok(());
    }
    let modules = read_gitmodules(repo, prefix, entries)?;
    for i in gitlinks {
        let EntryKind::Submodule { commit } = entries[i].kind else { continue };
        let path = entries[i].path();
        let inside = path.strip_prefix(prefix).unwrap_or(&path);
        let Some(module) = modules.iter().find(|module| module.path == inside) else { continue };
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep { path });
        }
        let url_error = |why| Error::Url { path: path.clone(), url: module.url.clone(), why };
        let url = gitmodules::resolve_url(base, &module.url).map_err(url_error)?;
        gitmodules::check_url(&url).map_err(url_error)?;
        let sub = fetch(cache_dir, &module.name, &url, commit, &path)?;
        let mut sub_entries = sub
            .tree_entries(commit)
            .map_err(|source| Error::Read { path: path.clone(), source })?;
        let mut parents = git::Parents::default();
        for entry in &mut sub_entries {
            entry.parent = match entry.parent.as_os_str().is_empty() {
                true => parents.get(&path),
                false => parents.get(&path.join(&entry.parent)),
            };
        }
        entries[i].kind = EntryKind::Dir;
        // This part is written before the ones nested in it, which need its directories.
        let at = parts.len();
        fill(&sub, &url, &path, &mut sub_entries, cache_dir, parts, depth + 1)?;
        parts.insert(at, Part { repo: sub, entries: sub_entries });
    }
    Ok(())
}

/// Returns the modules the `.gitmodules` file at the root of the tree at `prefix` names, or
/// none when it has no such file.
fn read_gitmodules(
    repo: &Repo,
    prefix: &Path,
    entries: &[Entry],
) -> Result<Vec<gitmodules::Module>, Error> {
    let file = entries.iter().find(|entry| *entry.parent == *prefix && entry.name == ".gitmodules");
    let Some(Entry { kind: EntryKind::File { blob, .. }, .. }) = file else {
        return Ok(Vec::new());
    };
    let path = prefix.join(".gitmodules");
    let error = |reason: String| Error::Gitmodules { path: path.clone(), reason };
    let content = repo
        .read_small_blob(*blob, MAX_GITMODULES)
        .map_err(|err| error(err.to_string()))?
        .ok_or_else(|| error(format!("it is larger than {}", report::bytes(MAX_GITMODULES))))?;
    gitmodules::parse(&content).map_err(error)
}

/// Returns the cache of the submodule at `path` holding `commit`, fetched from `url` when it
/// was missing, and says which.
fn fetch(
    cache_dir: &Path,
    name: &str,
    url: &str,
    commit: CommitId,
    path: &Path,
) -> Result<Repo, Error> {
    let cache_error = |reason: String| Error::Cache { path: path.to_owned(), reason };
    make_state_dir(cache_dir).map_err(|err| cache_error(err.to_string()))?;
    let cache = cache::path_for(cache_dir, name, url);
    let shown = escape_path(path);
    match cache::ensure(&cache, url, commit) {
        Ok((repo, cache::Outcome::Cached)) => {
            report::line(&format!("submodule {shown}: {} from the cache", commit.short()));
            Ok(repo)
        }
        Ok((repo, cache::Outcome::Fetched(took))) => {
            report::line(&format!(
                "submodule {shown}: fetched {} from {} in {}",
                commit.short(),
                escape(url),
                report::seconds(took)
            ));
            Ok(repo)
        }
        Err(cache::Problem::Fetch(reason)) => {
            Err(Error::Fetch { path: path.to_owned(), url: url.to_owned(), commit, reason })
        }
        Err(cache::Problem::Missing) => {
            Err(Error::Missing { path: path.to_owned(), url: url.to_owned(), commit })
        }
        Err(cache::Problem::Cache(reason)) => Err(cache_error(reason)),
    }
}
