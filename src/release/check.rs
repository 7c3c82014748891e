//! Containment checks: every symlink of a release resolves inside it, and what is served holds
//! only files, directories and symlinks.
//!
//! One resolver serves two views of a release: the pushed tree before anything is written
//! (`release::check_tree`, through an index of the tree's entries) and the release on disk
//! after the build and the grace step (through `lstat` and `readlink` of each component, never
//! following anything). Both resolve a symlink the way the kernel would, so that a link is
//! judged by where it leads in the tree it is served from, not by its text.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use tracing::instrument;

use crate::config::SymlinkPolicy;
use crate::git::{Entry, EntryKind};
use crate::report::escape_path;

/// The most symlinks followed while resolving one, as Linux allows (ELOOP).
pub const MAX_HOPS: usize = 40;

/// What is at a path of a release, as far as resolving a symlink cares.
pub enum Node {
    Dir,
    /// A symlink, with its target as raw bytes.
    Symlink(Vec<u8>),
    /// A file, or anything else that is neither a directory nor a symlink.
    Other,
    Missing,
}

/// A view of a release: what is at a path relative to its root, without following a symlink
/// at that path.
pub trait Tree {
    fn node(&self, path: &Path) -> io::Result<Node>;
}

/// Why a symlink is refused.
#[derive(Debug, thiserror::Error)]
pub enum Escape {
    #[error("is absolute; only relative links inside the release are allowed")]
    Absolute,
    #[error("leads out of the release")]
    OutOfRelease,
    #[error("is part of a symlink loop")]
    Loop,
    #[error("cannot be followed past {}: {source}", escape_path(path))]
    Unreadable { path: PathBuf, source: io::Error },
}

/// Returns the components of a relative path, as [`resolve_inside`] takes a directory.
pub fn components(path: &Path) -> Vec<OsString> {
    path.components().map(|c| c.as_os_str().to_owned()).collect()
}

/// Resolves a symlink target found in directory `dir` (relative to the release's root) the way
/// the kernel would, through the release's own symlinks, and fails if it ever leaves the
/// release. Returns the resolved path.
pub fn resolve_inside<T: Tree + ?Sized>(
    tree: &T,
    dir: Vec<OsString>,
    target: &[u8],
    hops: &mut usize,
) -> Result<Vec<OsString>, Escape> {
    if target.starts_with(b"/") {
        return Err(Escape::Absolute);
    }
    let mut current = dir;
    // Past a missing entry the kernel would fail; keep resolving lexically, conservatively.
    let mut dangling = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if current.pop().is_none() {
                    return Err(Escape::OutOfRelease);
                }
            }
            name => {
                current.push(OsStr::from_bytes(name).to_owned());
                if dangling {
                    continue;
                }
                let path: PathBuf = current.iter().collect();
                match tree.node(&path) {
                    Ok(Node::Symlink(target)) => {
                        *hops += 1;
                        if *hops > MAX_HOPS {
                            return Err(Escape::Loop);
                        }
                        current.pop();
                        current = resolve_inside(tree, current, &target, hops)?;
                    }
                    Ok(Node::Dir | Node::Other) => {}
                    Ok(Node::Missing) => dangling = true,
                    Err(source) => return Err(Escape::Unreadable { path, source }),
                }
            }
        }
    }
    Ok(current)
}

/// A release on disk, looked at with `lstat` and `readlink` only.
pub struct OnDisk<'a> {
    pub root: &'a Path,
}

impl Tree for OnDisk<'_> {
    fn node(&self, path: &Path) -> io::Result<Node> {
        let full = self.root.join(path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                Ok(Node::Symlink(fs::read_link(&full)?.into_os_string().into_vec()))
            }
            Ok(meta) if meta.is_dir() => Ok(Node::Dir),
            Ok(_) => Ok(Node::Other),
            // Under a file (ENOTDIR) nothing exists either: the kernel would fail there too.
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                Ok(Node::Missing)
            }
            Err(err) => Err(err),
        }
    }
}

/// Checks a symlink of the release on disk at `relative` (from the root) against the release as
/// it is now. Returns why it is refused.
pub fn symlink_on_disk(root: &Path, relative: &Path, target: &Path) -> Result<(), Escape> {
    let dir = relative.parent().map(components).unwrap_or_default();
    resolve_inside(&OnDisk { root }, dir, target.as_os_str().as_bytes(), &mut 0).map(drop)
}

/// What stands in the way of a publish directory.
#[derive(Debug)]
pub enum PublishProblem {
    /// This component of it (relative to the release's root) is a symlink.
    Symlink(PathBuf),
    /// It, or a directory above it, is something other than a directory.
    NotADirectory,
    Missing,
    Unreadable(PathBuf, io::Error),
}

/// Checks every component of `publish` (relative to `root`) with `lstat`: each must be a real
/// directory, or the link would serve wherever a symlink on the way leads.
pub fn publish_dir(root: &Path, publish: &Path) -> Result<(), PublishProblem> {
    // The release itself first: a build could have replaced its own directory.
    match fs::symlink_metadata(root) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(PublishProblem::Symlink(root.to_owned()));
        }
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(PublishProblem::NotADirectory),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(PublishProblem::Missing),
        Err(err) => return Err(PublishProblem::Unreadable(root.to_owned(), err)),
    }
    let mut relative = PathBuf::new();
    for component in publish.components() {
        if let Component::Normal(name) = component {
            relative.push(name);
        }
        let full = root.join(&relative);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PublishProblem::Symlink(relative));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(PublishProblem::NotADirectory),
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                return Err(PublishProblem::Missing);
            }
            Err(err) => return Err(PublishProblem::Unreadable(full, err)),
        }
    }
    Ok(())
}

/// Names a kind of file that is neither a regular file, a directory nor a symlink, for a
/// refusal: `a FIFO (named pipe)`, `a socket`, `a device node`.
pub fn special_kind(kind: &fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device node"
    } else {
        "neither a file, a directory nor a symlink"
    }
}

/// Why what is served was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused {}: {why}", escape_path(path))]
    Refused { path: PathBuf, why: String },
    #[error("cannot check {}: {source}", escape_path(path))]
    Io { path: PathBuf, source: io::Error },
}

/// Walks the served directory `served` (relative to the release's root `root`) with `lstat`,
/// never following a link, and refuses a symlink that resolves outside the release, a FIFO, a
/// socket or a device node. Paths in errors are relative to the release's root.
///
/// `allowed` lists the only links that may lead out: each a path relative to the root and the
/// exact target pushdeploy gave it (an app's links into `TARGET/shared/`).
#[instrument(skip_all)]
pub fn served(root: &Path, served: &Path, allowed: &[(PathBuf, PathBuf)]) -> Result<(), Error> {
    // The root itself is named `.`: with no `publish` an error reading it would otherwise
    // name an empty path ("cannot check : …").
    let relative_of = |path: &Path| match path.strip_prefix(root) {
        Ok(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
        Ok(relative) => relative.to_owned(),
        Err(_) => path.to_owned(),
    };
    let top = root.join(served);
    for entry in walkdir::WalkDir::new(&top).min_depth(1) {
        let entry = entry.map_err(|err| Error::Io {
            path: relative_of(err.path().unwrap_or(&top)),
            source: err.into(),
        })?;
        let kind = entry.file_type();
        if kind.is_dir() || kind.is_file() {
            continue;
        }
        let relative = relative_of(entry.path());
        let why = if kind.is_symlink() {
            let target = fs::read_link(entry.path())
                .map_err(|source| Error::Io { path: relative.clone(), source })?;
            if allowed.iter().any(|(path, to)| *path == relative && *to == target) {
                continue;
            }
            match symlink_on_disk(root, &relative, &target) {
                Ok(()) => continue,
                Err(why) => format!("symlink to {} {why}", escape_path(&target)),
            }
        } else {
            let what = special_kind(&kind);
            format!("is {what}; a published directory holds only files, directories and symlinks")
        };
        return Err(Error::Refused { path: relative, why });
    }
    Ok(())
}

/// Checks a whole tree before anything is written: every name is a plain file name, and every
/// symlink resolves inside the release.
#[instrument(skip_all)]
pub fn check_tree(entries: &[Entry], symlinks: SymlinkPolicy) -> Result<(), Error> {
    let mut index = TreeIndex(HashMap::with_capacity(entries.len()));
    for entry in entries {
        if let Err(why) = check_name(&entry.name) {
            return Err(Error::Refused { path: entry.path(), why: why.into() });
        }
        if index.0.insert((&entry.parent, &entry.name), &entry.kind).is_some() {
            return Err(Error::Refused {
                path: entry.path(),
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
            resolve_inside(&index, components(&entry.parent), target, &mut hops).map_err(
                |why| Error::Refused {
                    path: entry.path(),
                    why: format!(
                        "symlink to {} {why}",
                        escape_path(Path::new(OsStr::from_bytes(target)))
                    ),
                },
            )?;
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

/// The pushed tree as the resolver sees it, keyed by directory and name as borrowed from the
/// entries: a key of its own per entry (a path) cost as much memory as the entries themselves.
struct TreeIndex<'a>(HashMap<(&'a Path, &'a OsStr), &'a EntryKind>);

impl Tree for TreeIndex<'_> {
    fn node(&self, path: &Path) -> io::Result<Node> {
        let key = path.parent().zip(path.file_name());
        Ok(match key.and_then(|key| self.0.get(&key)) {
            Some(EntryKind::Symlink { target }) => Node::Symlink(target.clone()),
            Some(EntryKind::Dir | EntryKind::Submodule { .. }) => Node::Dir,
            Some(EntryKind::File { .. }) => Node::Other,
            None => Node::Missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn on_disk_links_are_judged_by_where_they_lead_now() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("release");
        fs::create_dir_all(root.join("public/docs")).unwrap();
        fs::create_dir_all(root.join("deep/a/b")).unwrap();
        symlink("docs", root.join("public/ok")).unwrap();
        symlink("../deep/a/b", root.join("public/d")).unwrap();
        symlink("d/../../../public", root.join("public/back")).unwrap();
        served(&root, Path::new("public"), &[]).unwrap();

        // `d` one level deep instead of three: the same text now climbs out.
        fs::remove_file(root.join("public/d")).unwrap();
        symlink("../deep", root.join("public/d")).unwrap();
        let err = served(&root, Path::new("public"), &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "refused public/back: symlink to d/../../../public leads out of the release"
        );
    }

    #[test]
    fn only_the_allowed_links_may_lead_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("release");
        let shared = tmp.path().join("shared/data");
        fs::create_dir_all(&shared).unwrap();
        fs::create_dir_all(root.join("app")).unwrap();
        symlink(&shared, root.join("data")).unwrap();
        let allowed = [(PathBuf::from("data"), shared.clone())];
        served(&root, Path::new(""), &allowed).unwrap();

        // The same target at another path, or the same path leading elsewhere: refused.
        symlink(&shared, root.join("app/data")).unwrap();
        let err = served(&root, Path::new(""), &allowed).unwrap_err().to_string();
        assert!(err.starts_with("refused app/data: symlink to "), "{err}");
        fs::remove_file(root.join("app/data")).unwrap();
        let other = [(PathBuf::from("data"), tmp.path().join("shared"))];
        let err = served(&root, Path::new(""), &other).unwrap_err().to_string();
        assert!(err.starts_with("refused data: symlink to "), "{err}");
        // A link that leads out through an allowed one is refused too.
        symlink("../data/x", root.join("app/x")).unwrap();
        let err = served(&root, Path::new(""), &allowed).unwrap_err().to_string();
        assert!(err.starts_with("refused app/x: symlink to ../data/x"), "{err}");
    }

    #[test]
    fn publish_components_are_checked_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("release");
        fs::create_dir_all(tmp.path().join("elsewhere/public")).unwrap();
        fs::create_dir_all(&root).unwrap();
        symlink(tmp.path().join("elsewhere"), root.join("out")).unwrap();
        match publish_dir(&root, Path::new("out/public")) {
            Err(PublishProblem::Symlink(path)) => assert_eq!(path, Path::new("out")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_release_root_is_named_dot_not_an_empty_path() {
        let tmp = tempfile::tempdir().unwrap();
        let err = served(&tmp.path().join("gone"), Path::new(""), &[]).unwrap_err().to_string();
        assert!(err.starts_with("cannot check .: "), "{err}");
    }
}

#[cfg(test)]
mod tree_tests {
    use super::*;

    fn dir(parent: &str, name: &str) -> Entry {
        Entry { parent: Path::new(parent).into(), name: name.into(), kind: EntryKind::Dir }
    }

    fn link(parent: &str, name: &str, target: &str) -> Entry {
        Entry {
            parent: Path::new(parent).into(),
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
