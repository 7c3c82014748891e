//! Kept releases (`[retire] keep = N`): beyond the live release and the previous one (kept in
//! its slot, as `keep_previous` does), the older ones wait in `.pushdeploy/kept/<seq>-<commit>/`
//! (its tree in `release/`, its `record.json` and `index`), not served, for a rollback with no
//! rebuild. Trees only ever move there and back by `rename(2)`: nothing is copied, and files
//! hard-linked between releases stay shared.
//!
//! Only entries pushdeploy made are touched: a directory of the kept directory, not a symlink,
//! named `<seq>-<hex>`, holding a record. Anything else there is left alone.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::index::{self, Index};
use super::layout::{Error, Layout, Live, Slot, make_state_dir};
use super::record::{self, ReleaseRecord};
use super::slots;

/// A release kept in `.pushdeploy/kept/`.
#[derive(Debug, Clone)]
pub struct KeptRelease {
    /// Its directory: `release/`, `record.json`, `index`.
    pub dir: PathBuf,
    /// Its record, as it was when it was last in a slot.
    pub record: ReleaseRecord,
}

impl KeptRelease {
    /// Returns its tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("release")
    }
}

/// Returns the directory kept releases wait in.
pub fn kept_dir(layout: &Layout) -> PathBuf {
    layout.state.join("kept")
}

/// Returns the releases kept in `.pushdeploy/kept/`, oldest deploy first.
pub fn list(layout: &Layout) -> Vec<KeptRelease> {
    let Ok(entries) = fs::read_dir(kept_dir(layout)) else { return Vec::new() };
    let mut kept: Vec<KeptRelease> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter(|entry| is_kept_name(&entry.file_name().to_string_lossy()))
        .filter_map(|entry| {
            let dir = entry.path();
            let text = fs::read_to_string(dir.join("record.json")).ok()?;
            let record = serde_json::from_str(&text).ok()?;
            let tree = fs::symlink_metadata(dir.join("release")).ok()?;
            tree.is_dir().then_some(KeptRelease { dir, record })
        })
        .collect();
    kept.sort_by_key(|kept| kept.record.seq);
    kept
}

/// Tells whether `name` is one pushdeploy gives a kept release: `<seq>-<hex>`.
fn is_kept_name(name: &str) -> bool {
    name.split_once('-').is_some_and(|(seq, commit)| {
        !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
            && !commit.is_empty()
            && commit.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Returns the sequence number of the next release: one more than any release pushdeploy
/// still has (in a slot, parked, or kept).
pub fn next_seq(layout: &Layout) -> u64 {
    let in_slots = Slot::ALL.into_iter().filter_map(|slot| record::read(layout, slot).ok()?);
    let parked = Slot::ALL.into_iter().filter_map(|slot| {
        let text = fs::read_to_string(layout.parked(slot).1).ok()?;
        serde_json::from_str::<ReleaseRecord>(&text).ok()
    });
    let kept = list(layout).into_iter().map(|kept| kept.record);
    in_slots.chain(parked).chain(kept).map(|record| record.seq).max().unwrap_or(0) + 1
}

/// Returns where a release is kept: `.pushdeploy/kept/<seq>-<short commit>`.
fn dir_for(layout: &Layout, record: &ReleaseRecord) -> PathBuf {
    kept_dir(layout).join(format!("{:06}-{}", record.seq, record.commit.short()))
}

/// Retires the release a deploy that went live pushed out of `slot` (parked aside while it
/// built there): kept in `.pushdeploy/kept/` when `keep` allows more than the live and the
/// previous release, removed otherwise; then the oldest kept beyond `keep` go.
pub fn retire_parked(layout: &Layout, slot: Slot, keep: usize) -> Result<(), Error> {
    let parked = layout.parked_dir(slot);
    let (tree, record_path, _) = layout.parked(slot);
    let record = fs::read_to_string(&record_path)
        .ok()
        .and_then(|text| serde_json::from_str::<ReleaseRecord>(&text).ok());
    match record {
        // The parked directory is laid out as a kept one is: one rename keeps it.
        Some(record) if keep > 2 && tree.is_dir() => {
            make_state_dir(&kept_dir(layout))?;
            let to = dir_for(layout, &record);
            slots::remove_path(&to)?;
            // The rename moves the tree's ctime: a window keeps its index trusted.
            let start = index::coarse_now();
            fs::rename(&parked, &to).map_err(Error::io(&parked))?;
            index::add_kept_window(layout, (start, index::window_end()));
        }
        _ => {
            slots::move_to_trash(layout, &parked, "parked")?;
        }
    }
    prune(layout, keep)
}

/// Moves the release in `slot` (not live) into `.pushdeploy/kept/`, emptying the slot; a slot
/// pushdeploy did not create is moved aside, and one without a record is removed.
pub fn keep_slot(layout: &Layout, slot: Slot) -> Result<(), Error> {
    slots::set_aside_foreign_slot(layout, slot)?;
    let from = layout.slot_dir(slot);
    let record = match record::read(layout, slot) {
        Ok(Some(record)) if from.is_dir() => record,
        _ => return slots::forget(layout, slot).and_then(|()| slots::remove_slot(layout, slot)),
    };
    make_state_dir(&kept_dir(layout))?;
    let to = dir_for(layout, &record);
    slots::remove_path(&to)?;
    fs::create_dir(&to).map_err(Error::io(&to))?;
    // The record goes last: until then the slot still has one, and stays known as a release.
    rename_if_present(&layout.index_path(slot), &to.join("index"))?;
    let start = index::coarse_now();
    fs::rename(&from, to.join("release")).map_err(Error::io(&from))?;
    index::add_kept_window(layout, (start, index::window_end()));
    fs::rename(layout.record_path(slot), to.join("record.json"))
        .map_err(Error::io(&layout.record_path(slot)))?;
    slots::remove_path(&layout.slot_marker(slot))
}

/// Puts a kept release into the empty `slot`, marks the slot as pushdeploy's and writes its
/// record (slot and link target rewritten for the slot it is now in). Returns the record.
pub fn restore(layout: &Layout, kept: &KeptRelease, slot: Slot) -> Result<ReleaseRecord, Error> {
    let mut record = kept.record.clone();
    let old = record.slot.name();
    record.link_target = match Path::new(&record.link_target).strip_prefix(old) {
        Ok(rest) => {
            Path::new(slot.name()).join(rest).to_string_lossy().trim_end_matches('/').into()
        }
        Err(_) => slot.name().to_owned(),
    };
    record.slot = slot;
    record.live_since = None;
    let to = layout.slot_dir(slot);
    let tree = kept.tree();
    // The marker comes first, as when a slot is made: a rollback killed between the two leaves
    // a slot still known as pushdeploy's, which the next deploy empties.
    slots::write_slot_marker(layout, slot, "pending")?;
    let start = index::coarse_now();
    fs::rename(&tree, &to).map_err(Error::io(&tree))?;
    index::add_kept_window(layout, (start, index::window_end()));
    slots::mark_slot(layout, slot)?;
    rename_if_present(&kept.dir.join("index"), &layout.index_path(slot))?;
    // What pushdeploy did to the shared inodes while it was kept is not a change to it.
    index::add_windows_at(&layout.index_path(slot), &index::kept_windows(layout));
    record::write(layout, &record).map_err(|err| match err {
        super::history::Error::Write { path, source }
        | super::history::Error::Read { path, source } => Error::Io { path, source },
        super::history::Error::Damaged { path, source } => {
            Error::Io { path, source: source.into() }
        }
    })?;
    slots::remove_path(&kept.dir)?;
    Ok(record)
}

/// Moves the oldest kept releases beyond `keep` into the trash (the live and the previous
/// release count, and are never in `.pushdeploy/kept/`).
pub fn prune(layout: &Layout, keep: usize) -> Result<(), Error> {
    let kept = list(layout);
    let excess = kept.len().saturating_sub(keep.saturating_sub(2));
    // Into the trash, as a retired slot goes: the detached remover empties it after the push
    // and adds the window of ctimes its removal moves to the slots' indexes.
    kept[..excess]
        .iter()
        .try_for_each(|old| slots::move_to_trash(layout, &old.dir, "kept").map(drop))
}

/// The oldest kept release, when a deploy into `slot` would discard it: the slot holds a
/// release (it goes to `.pushdeploy/kept/` once the deploy is live) and the kept ones are
/// already `keep - 2`. Its index (with the windows recorded for kept releases) is returned
/// for the diff route to vouch for it, or why it cannot be used.
pub enum Recyclable {
    /// Nothing would be discarded.
    Nothing,
    /// The release that would be discarded, unusable for the diff route, and why.
    Unusable(Box<KeptRelease>, String),
    /// The release and its index.
    Usable(Box<(KeptRelease, Index)>),
}

/// Returns the kept release a deploy into `slot` would discard (see [`Recyclable`]).
pub fn recyclable(layout: &Layout, slot: Slot, keep: usize) -> Recyclable {
    let previous = matches!(record::read(layout, slot), Ok(Some(_)))
        && fs::symlink_metadata(layout.slot_dir(slot)).is_ok_and(|meta| meta.is_dir());
    let kept = list(layout);
    let Some(oldest) = kept.first().filter(|_| previous && kept.len() >= keep.saturating_sub(2))
    else {
        return Recyclable::Nothing;
    };
    let unusable = |why: &str| Recyclable::Unusable(Box::new(oldest.clone()), why.to_owned());
    let Some(mut index) = index::read_at(&oldest.dir.join("index")) else {
        return unusable("it has no index (it was built)");
    };
    if index.commit != Some(oldest.record.commit) {
        return unusable("its index is of another commit");
    }
    if !oldest.record.grace.is_empty() {
        return unusable("it holds files kept for `retire.grace`");
    }
    let sealed = index.sealed;
    index.windows.extend(index::kept_windows(layout).into_iter().filter(|(_, end)| *end >= sealed));
    Recyclable::Usable(Box::new((oldest.clone(), index)))
}

/// Moves the kept release `oldest` into `slot` to be brought to a new commit (the diff
/// route), instead of discarding it once the deploy is live. The slot's release is parked
/// first, as for any deploy (kept once the deploy is live, put back if it fails). The slot
/// then has no record and no index: a deploy killed from here on leaves a slot the next one
/// empties, having put the parked release back; the recycled release is lost, as it would
/// have been. Renames only.
pub fn recycle(
    layout: &Layout,
    oldest: &KeptRelease,
    slot: Slot,
    live: Option<&Live>,
) -> Result<(), Error> {
    slots::vacate(layout, slot, live, true)?;
    // Out of `kept/` whole (tree, record and index) in one rename, so it is never listed
    // half there; what a killed deploy leaves in `recycled/` is removed by the next one.
    let staging = layout.recycled_dir();
    slots::remove_path(&staging)?;
    fs::rename(&oldest.dir, &staging).map_err(Error::io(&oldest.dir))?;
    slots::clear_new_link(layout)?;
    slots::write_slot_marker(layout, slot, "pending")?;
    let tree = staging.join("release");
    let to = layout.slot_dir(slot);
    fs::rename(&tree, &to).map_err(Error::io(&tree))?;
    slots::mark_slot(layout, slot)?;
    slots::remove_path(&staging)
}

/// Disk use of some trees: each one's own size, and what they use together.
#[derive(Debug, Default, Clone)]
pub struct DiskUse {
    /// Per tree, in the order given: the bytes of its blocks, each of its inodes once.
    pub each: Vec<u64>,
    /// All trees together, each inode once: files hard-linked between releases count once.
    pub total: u64,
}

/// Measures trees with `lstat` (never following a symlink), counting allocated blocks.
pub fn disk_use(trees: &[PathBuf]) -> DiskUse {
    let mut everywhere = HashSet::new();
    let mut usage = DiskUse::default();
    for tree in trees {
        let mut here = HashSet::new();
        let mut own = 0;
        for entry in walkdir::WalkDir::new(tree).follow_links(false).into_iter().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let bytes = meta.blocks() * 512;
            if here.insert((meta.dev(), meta.ino())) {
                own += bytes;
            }
            if everywhere.insert((meta.dev(), meta.ino())) {
                usage.total += bytes;
            }
        }
        usage.each.push(own);
    }
    usage
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), Error> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(Error::Io { path: from.into(), source: err })
        }
        _ => Ok(()),
    }
}
