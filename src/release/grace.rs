//! Skew protection: for `[retire] grace`, the files of the old release that the new one lacks
//! stay reachable under the link for that long after the switch.
//!
//! A browser that loaded `index.html` from the old release asks a moment later for
//! `app.OLD.css`; without this, the old tree is gone and the page breaks. Before the switch,
//! each such file is hard-linked (a symlink recreated, if it resolves inside the new release)
//! into the new release, at the same path under the served directory, and listed with its
//! deadline in the new release's record. Files the
//! new release has always come from the new release. A detached `pushdeploy reap` started by the
//! deploy removes them when their deadline passes, so no daemon is needed; after a reboot the
//! next deploy does not carry expired files over, and retires the rest with the old release.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::release::check;
use crate::report::escape_path;
use crate::target_dir::record::{Grace, GraceFile, now_ms};

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

/// A filesystem error of the grace step, with the path it happened to.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", escape_path(path))]
pub struct Error {
    pub path: PathBuf,
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error { path: path.to_owned(), source }
}

/// What the grace step carried into a new release.
#[derive(Debug, Default)]
pub struct Carried {
    pub grace: Grace,
    /// Files of the old release left out, one line each, for the pusher.
    pub warnings: Vec<String>,
}

/// Makes the files that `old_served` has and the new release's served directory
/// (`new_root/publish`) lacks reachable there.
///
/// Regular files are hard-linked (the same bytes, so nothing to check); symlinks are recreated
/// and kept only if they resolve inside the *new* release, exactly as a pushed symlink must:
/// the same text can lead elsewhere once the directories it climbs through have changed.
/// Anything else (a FIFO, a socket, a device) is never carried. Files the old release itself
/// kept for an even older one keep their original deadline, and expired ones are not carried
/// over, so no file outlives its grace by being passed along.
pub fn carry(
    old_served: &Path,
    old_grace: &Grace,
    new_root: &Path,
    publish: &Path,
) -> Result<Carried, Error> {
    let new_served = new_root.join(publish);
    let mut unlocked = Unlocked::default();
    let carried = carry_into(old_served, old_grace, new_root, publish, &new_served, &mut unlocked);
    // Modes go back even when carrying failed: the release is left as it was built.
    let restored = unlocked.restore();
    let carried = carried?;
    restored?;
    Ok(carried)
}

fn carry_into(
    old_served: &Path,
    old_grace: &Grace,
    new_root: &Path,
    publish: &Path,
    new_served: &Path,
    unlocked: &mut Unlocked,
) -> Result<Carried, Error> {
    let now = now_ms();
    let inherited: HashMap<&[u8], u64> =
        old_grace.files.iter().map(|file| (file.path.as_slice(), file.until_ms)).collect();
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut carried = Carried::default();
    // Symlinks are checked once every file is in place, since they may lead through them.
    let mut links: Vec<CarriedLink> = Vec::new();
    for entry in walkdir::WalkDir::new(old_served).min_depth(1) {
        let entry = entry.map_err(|err| Error {
            path: err.path().unwrap_or(old_served).to_owned(),
            source: err.into(),
        })?;
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(old_served) else { continue };
        let key = relative.as_os_str().as_bytes();
        let until = match inherited.get(key) {
            Some(&until) if until != 0 && until <= now => continue,
            Some(&until) => until,
            None => 0, // set by `Grace::start` once the new release is live
        };
        if !kind.is_file() && !kind.is_symlink() {
            carried.warnings.push(format!(
                "not keeping the old release's {} for `retire.grace`: it is not a regular file",
                escape_path(relative)
            ));
            continue;
        }
        if !make_parents(new_served, relative, &mut created, &mut carried.grace.dirs, unlocked)? {
            continue;
        }
        let dest = new_served.join(relative);
        if fs::symlink_metadata(&dest).is_ok() {
            continue; // the new release has this path: it is served from the new release
        }
        unlocked.writable(dest.parent().unwrap_or(new_served))?;
        let file = GraceFile { path: key.to_vec(), until_ms: until };
        if kind.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(at(entry.path()))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(at(&dest))?;
            links.push((relative.to_owned(), target, file));
        } else {
            if fs::hard_link(entry.path(), &dest).is_err() {
                fs::copy(entry.path(), &dest).map_err(at(&dest))?;
            }
            carried.grace.files.push(file);
        }
    }
    let kept = keep_links_inside(links, new_root, publish, new_served, unlocked, &mut carried)?;
    carried.grace.files.extend(kept);
    Ok(carried)
}

/// A symlink carried into the new release: its path under the served directory, its target,
/// and its grace entry.
type CarriedLink = (PathBuf, PathBuf, GraceFile);

/// Checks the carried symlinks against the new release as it is now, removing (with a warning)
/// each that leads out of it, until none is refused: taking one away can change where the
/// others lead. Returns the grace entries of those kept.
fn keep_links_inside(
    mut links: Vec<CarriedLink>,
    new_root: &Path,
    publish: &Path,
    new_served: &Path,
    unlocked: &mut Unlocked,
    carried: &mut Carried,
) -> Result<Vec<GraceFile>, Error> {
    loop {
        let mut refused = Vec::new();
        links.retain(|(relative, target, _)| {
            match check::symlink_on_disk(new_root, &publish.join(relative), target) {
                Ok(()) => true,
                Err(why) => {
                    refused.push((relative.clone(), why.to_string()));
                    false
                }
            }
        });
        if refused.is_empty() {
            return Ok(links.into_iter().map(|(_, _, file)| file).collect());
        }
        for (relative, why) in refused {
            let dest = new_served.join(&relative);
            unlocked.writable(dest.parent().unwrap_or(new_served))?;
            fs::remove_file(&dest).map_err(at(&dest))?;
            carried.warnings.push(format!(
                "not keeping the old release's {} for `retire.grace`: in the new release, its symlink target {why}",
                escape_path(&relative)
            ));
        }
    }
}

/// Creates the missing directories above `relative` in `root`. Returns false when something
/// that is not a directory stands in the way (the new release has a file there).
fn make_parents(
    root: &Path,
    relative: &Path,
    created: &mut HashSet<PathBuf>,
    dirs: &mut Vec<Vec<u8>>,
    unlocked: &mut Unlocked,
) -> Result<bool, Error> {
    let Some(parent) = relative.parent() else {
        return Ok(true);
    };
    let mut path = PathBuf::new();
    for component in parent.components() {
        path.push(component);
        if created.contains(&path) {
            continue;
        }
        let full = root.join(&path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                unlocked.writable(full.parent().unwrap_or(root))?;
                fs::create_dir(&full).map_err(at(&full))?;
                created.insert(path.clone());
                dirs.push(path.as_os_str().as_bytes().to_vec());
            }
            Err(source) => return Err(Error { path: full, source }),
        }
    }
    Ok(true)
}

/// Directories given owner write (and search) permission for a moment, with the modes they
/// had, so that pushdeploy can add or remove entries in a directory a build left read-only
/// (`chmod 555 public/vendor`) and then leave it exactly as built.
#[derive(Default)]
struct Unlocked {
    changed: Vec<(PathBuf, u32)>,
}

impl Unlocked {
    /// Makes `dir` writable by its owner until [`Unlocked::restore`].
    fn writable(&mut self, dir: &Path) -> Result<(), Error> {
        if self.changed.iter().any(|(changed, _)| changed == dir) {
            return Ok(());
        }
        let mode = fs::symlink_metadata(dir).map_err(at(dir))?.permissions().mode() & 0o7777;
        if mode & 0o300 != 0o300 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o300)).map_err(at(dir))?;
            self.changed.push((dir.to_owned(), mode));
        }
        Ok(())
    }

    /// Gives every directory made writable its mode back, the deepest first; reports the first
    /// that could not be restored.
    fn restore(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        while let Some((dir, mode)) = self.changed.pop() {
            if let Err(source) = fs::set_permissions(&dir, fs::Permissions::from_mode(mode)) {
                first_error.get_or_insert(Error { path: dir, source });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Removes the kept files whose deadline has passed from `served`, and the directories made
/// for them once empty. Returns what is still kept.
pub fn remove_expired(served: &Path, grace: &Grace) -> Result<Grace, Error> {
    let mut unlocked = Unlocked::default();
    let left = remove_expired_from(served, grace, &mut unlocked);
    let restored = unlocked.restore();
    let left = left?;
    restored?;
    Ok(left)
}

fn remove_expired_from(
    served: &Path,
    grace: &Grace,
    unlocked: &mut Unlocked,
) -> Result<Grace, Error> {
    let now = now_ms();
    let mut left = Grace::default();
    for file in &grace.files {
        if file.until_ms > now {
            left.files.push(file.clone());
            continue;
        }
        let path = served.join(path_of(&file.path));
        if fs::symlink_metadata(&path).is_err() {
            continue; // already gone
        }
        unlocked.writable(path.parent().unwrap_or(served))?;
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(Error { path, source: err });
            }
            _ => {}
        }
    }
    // Deepest first, so a parent is tried after its children.
    let mut deepest_first: Vec<&Vec<u8>> = grace.dirs.iter().collect();
    deepest_first.sort_by_key(|dir| std::cmp::Reverse(dir.iter().filter(|&&b| b == b'/').count()));
    let mut removed = HashSet::new();
    for dir in deepest_first {
        let full = served.join(path_of(dir));
        match fs::read_dir(&full).map(|mut entries| entries.next().is_none()) {
            Ok(true) => {
                unlocked.writable(full.parent().unwrap_or(served))?;
                fs::remove_dir(&full).map_err(at(&full))?;
            }
            Ok(false) => continue,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error { path: full, source }),
        }
        removed.insert(dir);
    }
    left.dirs = grace.dirs.iter().filter(|dir| !removed.contains(dir)).cloned().collect();
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn carries_only_what_the_new_release_lacks_and_removes_it_when_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        fs::create_dir_all(old.join("css")).unwrap();
        fs::create_dir_all(new.join("css")).unwrap();
        fs::write(old.join("index.html"), "old").unwrap();
        fs::write(new.join("index.html"), "new").unwrap();
        fs::write(old.join("css/app.1.css"), "one").unwrap();
        fs::write(new.join("css/app.2.css"), "two").unwrap();
        fs::create_dir_all(old.join("gone/deep")).unwrap();
        fs::write(old.join("gone/deep/x"), "x").unwrap();

        let mut kept = carry(&old, &Grace::default(), &new, Path::new("")).unwrap().grace;
        kept.start(Duration::from_secs(30));
        assert_eq!(fs::read_to_string(new.join("index.html")).unwrap(), "new");
        assert_eq!(fs::read_to_string(new.join("css/app.1.css")).unwrap(), "one");
        assert_eq!(fs::read_to_string(new.join("gone/deep/x")).unwrap(), "x");
        let mut paths: Vec<_> = kept.files.iter().map(|f| path_of(&f.path)).collect();
        paths.sort();
        assert_eq!(paths, [Path::new("css/app.1.css"), Path::new("gone/deep/x")]);

        assert_eq!(remove_expired(&new, &kept).unwrap(), kept, "nothing expired yet");
        let expired = Grace {
            files: kept.files.iter().map(|f| GraceFile { until_ms: 1, ..f.clone() }).collect(),
            dirs: kept.dirs.clone(),
        };
        assert!(remove_expired(&new, &expired).unwrap().is_empty());
        assert!(!new.join("css/app.1.css").exists() && !new.join("gone").exists());
        assert!(new.join("css/app.2.css").exists());
    }

    #[test]
    fn a_symlink_is_kept_only_if_it_stays_inside_the_new_release() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old/public"), tmp.path().join("new"));
        fs::create_dir_all(old.join("deep/a/b")).unwrap();
        fs::create_dir_all(new.join("public/deep")).unwrap();
        std::os::unix::fs::symlink("deep/a/b", old.join("d")).unwrap();
        std::os::unix::fs::symlink("d/../../../../x", old.join("climb")).unwrap();
        std::os::unix::fs::symlink("deep", old.join("fine")).unwrap();
        // The new release has `d` one level deep: `climb` would leave it.
        std::os::unix::fs::symlink("deep", new.join("public/d")).unwrap();

        let carried = carry(&old, &Grace::default(), &new, Path::new("public")).unwrap();
        let kept: Vec<_> = carried.grace.files.iter().map(|f| path_of(&f.path)).collect();
        assert_eq!(kept, [Path::new("fine")]);
        assert!(fs::symlink_metadata(new.join("public/climb")).is_err());
        assert_eq!(
            carried.warnings,
            [
                "not keeping the old release's climb for `retire.grace`: in the new release, its symlink target leads out of the release"
            ]
        );
    }

    #[test]
    fn read_only_directories_are_written_and_left_as_they_were() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        fs::create_dir_all(old.join("vendor")).unwrap();
        fs::create_dir_all(new.join("vendor")).unwrap();
        fs::write(old.join("vendor/b.js"), "b").unwrap();
        fs::set_permissions(new.join("vendor"), fs::Permissions::from_mode(0o555)).unwrap();

        let carried = carry(&old, &Grace::default(), &new, Path::new("")).unwrap();
        assert_eq!(fs::read_to_string(new.join("vendor/b.js")).unwrap(), "b");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&new.join("vendor")), 0o555);
        let expired = Grace {
            files: carried
                .grace
                .files
                .iter()
                .map(|f| GraceFile { until_ms: 1, ..f.clone() })
                .collect(),
            dirs: carried.grace.dirs.clone(),
        };
        assert!(remove_expired(&new, &expired).unwrap().is_empty());
        assert!(fs::symlink_metadata(new.join("vendor/b.js")).is_err());
        assert_eq!(mode(&new.join("vendor")), 0o555);
    }
}
