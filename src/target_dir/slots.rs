//! What happens to slot directories: made empty for a deploy (recording that pushdeploy made
//! them), moved aside when pushdeploy did not make them, retired, removed.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::instrument;

use super::layout::{Error, Layout, Live, Slot, make_state_dir};
use super::record::ReleaseRecord;
use super::{index, record};
use crate::report::escape_path;

/// Empties `slot` (the one that is not live) and what interrupted deploys left behind, then
/// creates its directory, empty, recording that pushdeploy made it. What pushdeploy did not
/// make is moved aside, never deleted.
#[instrument(skip_all, fields(slot = %slot))]
pub fn prepare(layout: &Layout, slot: Slot) -> Result<PathBuf, Error> {
    clear_new_link(layout)?;
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
pub fn clear_new_link(layout: &Layout) -> Result<(), Error> {
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
pub(super) fn write_slot_marker(layout: &Layout, slot: Slot, text: &str) -> Result<(), Error> {
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

/// Retires a release that is no longer live: it is renamed into the trash, so the slot is free
/// at once, and [`empty_trash`] removes it later (a detached `pushdeploy reap`, or the next
/// deploy if that one was interrupted). A slot pushdeploy did not create (a release set up by
/// hand that pushdeploy took over) is moved aside instead.
#[instrument(skip_all, fields(slot = %slot))]
pub fn retire(layout: &Layout, slot: Slot) -> Result<(), Error> {
    set_aside_foreign_slot(layout, slot)?;
    let dir = layout.slot_dir(slot);
    if fs::symlink_metadata(&dir).is_err() {
        return remove_path(&layout.slot_marker(slot));
    }
    move_to_trash(layout, &dir, slot.name())?;
    remove_path(&layout.slot_marker(slot))
}

/// Renames a tree of pushdeploy's into the trash under a name of its own (a remover may still
/// be emptying an earlier one). Returns whether there was anything to move.
pub fn move_to_trash(layout: &Layout, path: &Path, what: &str) -> Result<bool, Error> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    let trash = layout.trash();
    make_state_dir(&trash)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let parked = trash.join(format!("{what}-{}-{nanos}", std::process::id()));
    fs::rename(path, &parked).map_err(Error::io(path))?;
    Ok(true)
}

/// Tells whether the trash holds anything to remove.
pub fn trash_is_full(layout: &Layout) -> bool {
    fs::read_dir(layout.trash()).is_ok_and(|mut entries| entries.next().is_some())
}

/// Empties the trash, holding its lock: a remover already at work is waited for (it
/// finishes soon, and two must not remove the same tree), and what an interrupted one left
/// is removed. Removing drops links to inodes the releases in the slots may share, which moves
/// their ctimes: the span of ctimes the removal may have caused is added as a window to the
/// index of each slot in `tell`, before the lock is released (a deploy waits for the lock
/// before it reads an index). Returns that span; `None` when the trash was empty.
pub fn empty_trash(
    layout: &Layout,
    tell: &[Slot],
) -> Result<Option<(index::Timestamp, index::Timestamp)>, Error> {
    let trash = layout.trash();
    if !trash.is_dir() {
        return Ok(None);
    }
    let lock_path = layout.trash_lock_path();
    let _lock = super::lock::acquire(&lock_path, |_| {})
        .map_err(|super::lock::Error::Lock { path, source }| Error::Io { path, source })?;
    if !trash_is_full(layout) {
        return Ok(None);
    }
    let start = index::coarse_now();
    for entry in fs::read_dir(&trash).map_err(Error::io(&trash))? {
        let entry = entry.map_err(Error::io(&trash))?;
        remove_path(&entry.path())?;
    }
    let window = (start, index::seal_time());
    for slot in tell {
        index::add_window(layout, *slot, window);
    }
    // Kept releases share inodes with what was removed too.
    index::add_kept_window(layout, window);
    Ok(Some(window))
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

/// Empties `slot` for a new release: what interrupted deploys left, a release kept there
/// (`[retire] keep_previous`, parked aside until the deploy goes live), then the slot itself.
/// Returns its new, empty directory.
pub fn empty_for_release(
    layout: &Layout,
    slot: Slot,
    live: Option<&Live>,
    keep_previous: bool,
) -> Result<PathBuf, Error> {
    vacate(layout, slot, live, keep_previous)?;
    prepare(layout, slot)
}

/// Clears `slot` for a new release (see [`empty_for_release`]), leaving no directory there.
pub fn vacate(
    layout: &Layout,
    slot: Slot,
    live: Option<&Live>,
    keep_previous: bool,
) -> Result<(), Error> {
    // A kept release parked by a deploy that was killed goes back first; one parked from
    // the live slot is obsolete (the deploy that parked it went live).
    if let Some(live) = live {
        remove_path(&layout.parked_dir(live.slot))?;
    }
    restore_parked(layout, slot)?;
    clear_recycled(layout)?;
    if keep_previous {
        park_kept(layout, slot)?;
    }
    forget(layout, slot)?;
    remove_tree(layout, slot, live)
}

/// What the idle slot holds, for the diff route (`release::diff`).
pub enum Kept {
    /// No release.
    Nothing,
    /// A release that cannot be updated in place, and why (for the pusher).
    Unusable(String),
    /// A release of pushdeploy's, its record and the index that will vouch for it.
    Usable(Box<(ReleaseRecord, index::Index)>),
}

/// Returns the release kept in `slot` (`[retire] keep_previous`), after putting back one a
/// killed deploy parked aside, and moving aside a directory pushdeploy did not create.
pub fn kept_release(layout: &Layout, slot: Slot, live: Option<&Live>) -> Result<Kept, Error> {
    settle_idle(layout, slot, live)?;
    if !fs::symlink_metadata(layout.slot_dir(slot)).is_ok_and(|meta| meta.is_dir()) {
        return Ok(Kept::Nothing);
    }
    let unusable = |why: &str| Ok(Kept::Unusable(why.to_owned()));
    let Ok(Some(record)) = record::read(layout, slot) else {
        return unusable("it has no record (a deploy into it was interrupted)");
    };
    let Some(index) = index::read(layout, slot) else {
        return unusable("it has no index (it was built, or a deploy into it was interrupted)");
    };
    if index.commit != Some(record.commit) {
        return unusable("its index is of another commit");
    }
    if !record.grace.is_empty() {
        return unusable("it holds files kept for `retire.grace`");
    }
    Ok(Kept::Usable(Box::new((record, index))))
}

/// Puts back what a killed deploy left aside (a parked release, a recycled one half-moved),
/// and moves aside a directory pushdeploy did not create in `slot`.
pub fn settle_idle(layout: &Layout, slot: Slot, live: Option<&Live>) -> Result<(), Error> {
    if let Some(live) = live {
        remove_path(&layout.parked_dir(live.slot))?;
    }
    restore_parked(layout, slot)?;
    clear_recycled(layout)?;
    set_aside_foreign_slot(layout, slot)
}

/// Takes back what a deploy that did not go live wrote into `slot`, and puts a release parked
/// there back. Nothing visible changed, so nothing visible changes now either.
pub fn discard(layout: &Layout, slot: Slot, live: Option<&Live>) -> Result<(), Error> {
    forget(layout, slot)?;
    remove_tree(layout, slot, live)?;
    restore_parked(layout, slot)
}

/// Empties the trash (see [`empty_trash`]), telling the index of both slots.
pub fn empty_trash_for_all(layout: &Layout) -> Result<(), Error> {
    empty_trash(layout, &Slot::ALL).map(drop)
}

/// Forgets what `slot` holds (its record and index), before it is emptied. A slot directory
/// pushdeploy did not create is moved aside first, while its record can still vouch for a
/// release made before pushdeploy recorded which slots it created.
pub fn forget(layout: &Layout, slot: Slot) -> Result<(), Error> {
    set_aside_foreign_slot(layout, slot)?;
    record::remove(layout, slot)?;
    index::remove(layout, slot).map_err(Error::io(&layout.index_path(slot)))
}

/// Removes a slot's tree, or moves it aside if pushdeploy did not create it. Removing it drops
/// links to inodes the live release may share (a release hard-linked from it), which moves
/// their ctime; the live index is told that this window of ctimes is ours, so it does not
/// distrust every file for it.
fn remove_tree(layout: &Layout, slot: Slot, live: Option<&Live>) -> Result<(), Error> {
    let start = index::coarse_now();
    // What a detached removal did not finish goes too, inside the same window.
    let trashed = empty_trash(layout, &[])?.is_some();
    let present = fs::symlink_metadata(layout.slot_dir(slot)).is_ok();
    remove_slot(layout, slot)?;
    // Only when something was removed that a live or kept release may share inodes with.
    if trashed || present {
        let window = (start, index::window_end());
        if let Some(live) = live.filter(|live| live.slot != slot) {
            index::add_window(layout, live.slot, window);
        }
        index::add_kept_window(layout, window);
    }
    Ok(())
}

/// Moves the release kept in `slot` (`[retire] keep_previous`) aside while a deploy builds
/// there, so that a failed deploy never pushes a good release out: only a deploy that goes
/// live replaces it. Renames only; nothing is copied.
fn park_kept(layout: &Layout, slot: Slot) -> Result<(), Error> {
    // Only a release of pushdeploy's own is kept; a directory it did not create goes aside.
    set_aside_foreign_slot(layout, slot)?;
    if !layout.record_path(slot).exists() || !layout.slot_dir(slot).is_dir() {
        return Ok(());
    }
    let (tree, record, index) = layout.parked(slot);
    let parked = layout.parked_dir(slot);
    fs::create_dir_all(&parked).map_err(Error::io(&parked))?;
    // The rename moves the tree's ctime: a window keeps its index trusted (parked, then
    // kept, it takes the windows recorded for kept releases when it is back in a slot).
    let start = index::coarse_now();
    rename(&layout.slot_dir(slot), &tree)?;
    index::add_kept_window(layout, (start, index::window_end()));
    rename(&layout.record_path(slot), &record)?;
    rename_if_present(&layout.index_path(slot), &index)
}

/// Puts a parked release back into `slot`, replacing what a failed deploy left there.
fn restore_parked(layout: &Layout, slot: Slot) -> Result<(), Error> {
    let (tree, record, index) = layout.parked(slot);
    if !tree.is_dir() {
        return Ok(());
    }
    remove_slot(layout, slot)?;
    rename(&tree, &layout.slot_dir(slot))?;
    mark_slot(layout, slot)?;
    rename_if_present(&record, &layout.record_path(slot))?;
    rename_if_present(&index, &layout.index_path(slot))?;
    index::add_windows_at(&layout.index_path(slot), &index::kept_windows(layout));
    remove_path(&layout.parked_dir(slot))
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(Error::io(from))
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), Error> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(Error::Io { path: from.into(), source: err })
        }
        _ => Ok(()),
    }
}

/// Removes what a deploy killed while recycling a kept release left between `kept/` and its
/// slot (that release is lost, as it would have been).
pub fn clear_recycled(layout: &Layout) -> Result<(), Error> {
    remove_path(&layout.recycled_dir())
}
