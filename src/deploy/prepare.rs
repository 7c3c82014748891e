//! Phase 1: everything before anything is visible. The slot that is not live is emptied
//! (prepare), the commit's tree is checked and written into it (materialize), built (build),
//! and what will be served is checked (verify). Returns a [`Prepared`] release.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::build_env::{build_env, unlink_git_history};
use super::{Failure, RETRY, Run};
use crate::app::shared;
use crate::config::{Config, SubmodulePolicy};
use crate::git::{Entry, EntryKind, Repo};
use crate::release::attributes::{self, Converted};
use crate::release::build;
use crate::release::cache::Cache;
use crate::release::check;
use crate::release::diff;
use crate::release::grace;
use crate::release::publish;
use crate::release::submodules;
use crate::release::write::{self, Base, Tree};
use crate::report::{self, escape, escape_path};
use crate::target_dir::history::{self, Stage};
use crate::target_dir::index::{self, Index};
use crate::target_dir::record::{self, Grace, ReleaseRecord};
use crate::target_dir::{Layout, Live, kept, slots};

/// A release ready in its slot: what activation needs, as plain data.
#[derive(Debug)]
pub struct Prepared {
    /// Its record: commit, ref, where the link will point, the files it keeps for the grace.
    pub record: ReleaseRecord,
    /// Its files' index, when no build ran (see `target_dir::index`).
    pub index: Option<Index>,
    /// A release kept from an earlier deploy (an instant rollback): already synced, and the
    /// release it replaces is kept in turn.
    pub kept: bool,
    /// When this deploy started to change links to inodes the live release may share (linking
    /// from it, or renaming over files of the kept release): with `keep_previous` the live
    /// release is kept, and its index is told these ctimes are pushdeploy's own.
    pub shared_since: Option<index::Timestamp>,
}

/// What to do about build output that `check::served` refused.
const BUILD_OUTPUT_HINT: &str = "make the build leave only files, directories and symlinks that stay inside the release, then push again";

/// Runs phase 1 in the run's idle slot.
pub(super) fn prepare(run: &mut Run<'_>) -> Result<Prepared, Failure> {
    if let Some(prepared) = update_kept(run)? {
        return Ok(prepared);
    }
    let dir = prepare_slot(run)?;
    let shared_since = Some(index::coarse_now());
    let mut index = materialize(run, &dir)?;
    build(run, &dir)?;
    let record = verify(run, &dir)?;
    if let (Some(index), Some(app)) = (&mut index, &run.config.app) {
        // What was at a shared path is gone: the next deploy must not hard-link through the
        // link, from shared/, what this index says the commit had there.
        index.files.retain(|path, _| !app.shared.iter().any(|shared| path.starts_with(shared)));
    }
    Ok(Prepared { record, index, kept: false, shared_since })
}

/// Reads and checks the new commit's tree for the diff route, as `materialize` does: returns
/// its entries, the files `.gitattributes` converts, and how many entries it had before.
fn new_tree(run: &Run<'_>) -> Result<(Vec<Entry>, Converted, usize), Failure> {
    let Run { config, repo, layout, request, .. } = *run;
    let entries = repo.tree_entries(request.commit).map_err(|err| {
        Failure::new(Stage::Materialize, err, "check the repository with `git fsck`")
    })?;
    check::check_tree(&entries, config.symlinks).map_err(refused_path)?;
    let all = entries.len();
    let (entries, converted) = attributes::apply(repo, request.commit, entries, &layout.state)
        .map_err(|err| {
            let hint = "check the repository's .gitattributes and `git archive` of the commit";
            Failure::new(Stage::Materialize, err, hint)
        })?;
    Ok((entries, converted, all))
}

/// The diff route (`release::diff`): when the idle slot holds a release kept by
/// `[retire] keep_previous` that its index vouches for, the changes between its commit and the
/// new one are applied to it, instead of writing the whole tree into an emptied slot. With
/// `[retire] keep` above 2 that release must survive whole (it goes to `.pushdeploy/kept/`
/// once the deploy is live); the oldest kept release, which the deploy would discard when
/// `kept/` is full, is recycled instead: moved into the slot and brought to the new commit.
/// Returns `None` for the full route, having said why in one line when a kept release was
/// there to reuse.
fn update_kept(run: &mut Run<'_>) -> Result<Option<Prepared>, Failure> {
    let Run { config, repo, layout, request, slot, .. } = *run;
    // A build could change any file, and a dry run must leave the kept release as it is.
    let applies = config.retire.keep_previous
        && !request.options.dry_run
        && config.app.is_none()
        && run.build_command().is_none();
    if !applies {
        return Ok(None);
    }
    let recycling = config.retire.keep > 2;
    let full_route = |why: &str, kept: &Kept| {
        let which = match kept {
            Kept::Recycled(oldest) => {
                format!("the oldest kept release ({}) is not reused", oldest.record.commit.short())
            }
            Kept::InSlot => format!("the release kept in {slot} is not reused"),
        };
        report::line(&format!("{which}: {why}; writing the whole tree"));
        Ok(None)
    };
    let started = std::time::Instant::now();
    let live = run.live.as_ref();
    // The kept release is vouched for (its index, and `lstat` of every entry it lists) on a
    // thread of its own while this one reads and checks the new commit's tree, then lists
    // the changes since the kept release's commit (sent as soon as it is known), with the
    // repository already open and the new commit's trees in its cache: at 100,000 files the
    // index and the new tree are each most of the deploy.
    let mode_mask = !config.umask;
    let dir = layout.slot_dir(slot);
    let slot_dir = &dir;
    let (commit_sent, commit_received) = std::sync::mpsc::channel();
    let (found, new_tree, changes) = std::thread::scope(|scope| {
        let found = scope.spawn(move || {
            // A build orphaned by a killed deploy must not write into the slot being
            // prepared; a detached removal must be over before the kept release is looked at.
            build::stop_orphans(&layout.build_pgid_path(), &layout.target);
            slots::empty_trash_for_all(layout)?;
            let (kept, usable) = if recycling {
                slots::settle_idle(layout, slot, live)?;
                match kept::recyclable(layout, slot, config.retire.keep) {
                    kept::Recyclable::Nothing => return Ok(None),
                    kept::Recyclable::Unusable(oldest, why) => (Kept::Recycled(oldest), Err(why)),
                    kept::Recyclable::Usable(found) => {
                        let (oldest, index) = *found;
                        let record = oldest.record.clone();
                        (Kept::Recycled(Box::new(oldest)), Ok((record, index)))
                    }
                }
            } else {
                match slots::kept_release(layout, slot, live)? {
                    slots::Kept::Nothing => return Ok(None),
                    slots::Kept::Unusable(why) => (Kept::InSlot, Err(why)),
                    slots::Kept::Usable(found) => (Kept::InSlot, Ok(*found)),
                }
            };
            if let Ok((record, _)) = &usable {
                let _ = commit_sent.send(record.commit);
            }
            let tree = match &kept {
                Kept::Recycled(oldest) => oldest.tree(),
                Kept::InSlot => slot_dir.clone(),
            };
            let usable = usable.and_then(|(record, index)| {
                diff::vouch(&tree, &index, mode_mask)?;
                Ok((record, index))
            });
            Ok(Some((kept, usable)))
        });
        let new_tree = new_tree(run);
        // Nothing is sent when there is no usable release: the sender is gone with the thread.
        // The diff walks the new commit's trees recursively: only once they passed the checks.
        let changes = match &new_tree {
            Ok(_) => commit_received.recv().ok().map(|old| repo.tree_changes(old, request.commit)),
            Err(_) => None,
        };
        (found.join(), new_tree, changes)
    });
    let Ok(found) = found else {
        return Err(Failure::new(
            Stage::Prepare,
            "the thread reading the kept release panicked",
            RETRY,
        ));
    };
    let found: Result<_, crate::target_dir::Error> = found;
    let Some((kept, usable)) = found.map_err(|err| Failure::new(Stage::Prepare, err, RETRY))?
    else {
        return Ok(None);
    };
    let (record, mut index) = match usable {
        Ok(usable) => usable,
        Err(why) => return full_route(&why, &kept),
    };
    let changes = match changes {
        Some(Ok(changes)) => changes,
        Some(Err(err)) => {
            return full_route(
                &format!("the changes since its commit cannot be read: {err}"),
                &kept,
            );
        }
        None => {
            return new_tree.and_then(|_| full_route("its commit is not in the repository", &kept));
        }
    };
    if let Err(why) = diff::check_changes(&changes, &index, mode_mask) {
        return full_route(&why, &kept);
    }
    let (entries, converted, all) = new_tree?;
    if entries.len() != all || !converted.is_empty() {
        return full_route("`.gitattributes` rules change the new commit's files", &kept);
    }
    if entries.iter().any(|entry| matches!(entry.kind, EntryKind::Submodule { .. })) {
        return full_route("the new commit has submodules", &kept);
    }
    run.clock.stages.push((Stage::Prepare, started.elapsed().as_secs_f64()));

    let shared_since = Some(index::coarse_now());
    let (applied, took) = run.clock.stage(Stage::Materialize, || {
        let failure = |err| Failure::new(Stage::Materialize, err, RETRY);
        match &kept {
            // The release in the slot is parked (kept once this deploy is live), the oldest
            // kept one takes its place.
            Kept::Recycled(oldest) => kept::recycle(layout, oldest, slot, live).map_err(failure)?,
            // From here on the slot no longer holds what its record says: without its record
            // and index, a deploy killed part-way leaves a slot the next one empties.
            Kept::InSlot => slots::forget(layout, slot).map_err(failure)?,
        }
        diff::apply(repo, &dir, &changes, &entries, &mut index).map_err(|err| {
            let hint = if err.is_no_space() { free_space_hint(layout) } else { RETRY.to_owned() };
            Failure::new(Stage::Materialize, err, hint)
        })
    });
    let applied = applied?;
    for warning in &applied.warnings {
        report::line(&format!("warning: {warning}"));
    }
    let which = match &kept {
        Kept::Recycled(_) => format!("the oldest kept release, moved into {slot}"),
        Kept::InSlot => format!("the release kept in {slot}"),
    };
    report::line(&format!(
        "applied the changes since {} to {which}: wrote {}, removed {} ({}) in {}",
        record.commit.short(),
        report::things(applied.written, "file"),
        applied.removed,
        report::bytes(applied.bytes),
        report::seconds(took)
    ));
    let record = verify(run, &dir)?;
    Ok(Some(Prepared { record, index: Some(index), kept: false, shared_since }))
}

/// Which kept release the diff route starts from.
enum Kept {
    /// The one in the idle slot (`keep_previous`, `keep = 2`).
    InSlot,
    /// The oldest in `.pushdeploy/kept/`, which this deploy would discard (`keep` above 2).
    Recycled(Box<kept::KeptRelease>),
}

/// The prepare stage: empties the idle slot (and whatever interrupted deploys left), after
/// stopping a build that a killed deploy left running in it.
fn prepare_slot(run: &mut Run<'_>) -> Result<PathBuf, Failure> {
    let Run { config, layout, slot, .. } = *run;
    let live = run.live.as_ref();
    let (dir, _) = run.clock.stage(Stage::Prepare, || {
        // A build orphaned by a killed deploy must not write into the slot being prepared.
        build::stop_orphans(&layout.build_pgid_path(), &layout.target);
        // A deploy killed right after its switch left the release it pushed out parked: it
        // is kept (`[retire] keep`) as that deploy would have kept it.
        if let Some(live) = live {
            kept::retire_parked(layout, live.slot, config.retire.keep)?;
        }
        slots::empty_for_release(layout, slot, live, config.retire.keep_previous)
    });
    dir.map_err(|err| Failure::new(Stage::Prepare, err, RETRY))
}

/// The materialize stage: checks the commit's tree and writes it into `dir`, hard-linking the
/// files an unmodified live release already holds. Returns the new release's index.
fn materialize(run: &mut Run<'_>, dir: &Path) -> Result<Option<Index>, Failure> {
    let Run { config, repo, layout, request, .. } = *run;
    // Hard links are safe only while nothing writes into files in place; a build might, so
    // a release that is built is always written afresh.
    let no_build = run.build_command().is_none();
    let live = run.live.as_ref();
    let mut exact = false;
    let (written, took) = run.clock.stage(Stage::Materialize, || {
        let entries = repo.tree_entries(request.commit).map_err(|err| {
            Failure::new(Stage::Materialize, err, "check the repository with `git fsck`")
        })?;
        check::check_tree(&entries, config.symlinks).map_err(refused_path)?;
        let all = entries.len();
        let (mut entries, converted) =
            attributes::apply(repo, request.commit, entries, &layout.state).map_err(|err| {
                let hint = "check the repository's .gitattributes and `git archive` of the commit";
                Failure::new(Stage::Materialize, err, hint)
            })?;
        // After export-ignore: a submodule it leaves out is not fetched either.
        let parts = submodule_parts(config, layout, repo, &mut entries)?;
        // A symlink is judged by the tree it is served from: export-ignore took entries out of
        // it, and submodules add theirs where they land in the release.
        if entries.len() != all || !parts.is_empty() {
            let mut release = entries.clone();
            release.extend(parts.iter().flat_map(|part| part.entries.iter().cloned()));
            check::check_tree(&release, config.symlinks).map_err(refused_path)?;
        }
        let none = Converted::default();
        exact = entries.len() == all
            && converted.is_empty()
            && parts.is_empty()
            && config.app.as_ref().is_none_or(|app| app.shared.is_empty())
            && !entries.iter().any(|entry| matches!(entry.kind, EntryKind::Submodule { .. }));
        let mut trees = vec![Tree { repo, entries: &entries, converted: &converted }];
        trees.extend(parts.iter().map(|part| Tree {
            repo: &part.repo,
            entries: &part.entries,
            converted: &none,
        }));
        let base = live
            .filter(|_| no_build)
            .and_then(|live| trusted_index(layout, live))
            .map(|(live, index)| Base { dir: layout.slot_dir(live.slot), index });
        let failure = |err: crate::release::Error| {
            let hint = if err.is_no_space() { free_space_hint(layout) } else { RETRY.to_owned() };
            Failure::new(Stage::Materialize, err, hint)
        };
        write::check_space(&trees, base.as_ref(), &layout.target).map_err(failure)?;
        write::materialize_all(&trees, dir, base, config.umask, no_build).map_err(failure)
    });
    let (written, mut index) = written?;
    if let Some(index) = &mut index {
        // The index then stands for the commit's tree itself (the diff route's condition).
        index.exact = exact;
    }
    for warning in &written.warnings {
        report::line(&format!("warning: {warning}"));
    }
    let linked = match written.linked {
        0 => String::new(),
        n => format!(" and hard-linked {}", report::things(n, "unchanged file")),
    };
    report::line(&format!(
        "wrote {}{linked} ({}) in {}",
        report::things(written.files - written.linked, "file"),
        report::bytes(written.bytes),
        report::seconds(took)
    ));
    Ok(index)
}

/// Returns the failure for a tree that `check_tree` refused.
fn refused_path(err: check::Error) -> Failure {
    Failure::new(
        Stage::Materialize,
        err,
        "remove or fix that path in the repository and push again",
    )
}

/// Resolves the commit's submodules (unless `submodules = "skip"`).
fn submodule_parts(
    config: &Config,
    layout: &Layout,
    repo: &Repo,
    entries: &mut [Entry],
) -> Result<Vec<submodules::Part>, Failure> {
    if config.submodules == SubmodulePolicy::Skip {
        return Ok(Vec::new());
    }
    submodules::resolve(repo, entries, &layout.submodules_dir())
        .map_err(|err| Failure::new(Stage::Materialize, &err, err.hint()))
}

/// What to do about a build that failed.
const BUILD_HINT: &str = "fix the build and push again (its output is above)";

/// The build stage, when a build is configured and not skipped: the cache moved in, the
/// build run (streamed, timed, every process of it gone when it ends), the cache kept.
fn build(run: &mut Run<'_>, dir: &Path) -> Result<(), Failure> {
    let Run { config, layout, request, .. } = *run;
    if request.options.skip_build && config.build.command.is_some() {
        report::line("build skipped, as asked (skip-build)");
    }
    let Some(command) = run.build_command() else { return Ok(()) };
    let cache = Cache::new(&layout.state, &config.build.cache, config.build.publish.as_deref());
    let failure = |err: &dyn std::fmt::Display| Failure::new(Stage::Build, err, BUILD_HINT);
    report::line(&format!("building: {}", escape(command)));
    let build = build::Build {
        command,
        dir,
        env: build_env(run, dir)?,
        timeout: config.build.timeout,
        pgid_file: &layout.build_pgid_path(),
    };
    let (result, took) = run.clock.stage(Stage::Build, || {
        if request.options.no_cache {
            report::line("build cache: not used for this deploy");
        } else {
            let lines = cache.restore(dir).map_err(|err| failure(&err))?;
            lines.iter().for_each(|line| report::line(line));
        }
        build::run(&build).map_err(|err| match err.not_found_hint(&build.env, &config.path) {
            Some(hint) => Failure::new(Stage::Build, &err, format!("{BUILD_HINT}; {hint}")),
            None => failure(&err),
        })?;
        unlink_git_history(dir)?;
        cache.save(dir).map_err(|err| match err.is_no_space() {
            true => Failure::new(Stage::Build, &err, free_space_hint(layout)),
            false => failure(&err),
        })
    });
    result?;
    report::line(&format!("built in {}", report::seconds(took)));
    Ok(())
}

/// The verify stage: an app's `shared` paths become links into `TARGET/shared/`; the publish
/// directory is a real, non-empty directory of the release; the live release's files the new
/// one lacks are carried over for the grace; and what will be served holds nothing that leads
/// out of the release but those links. Returns the release's record.
fn verify(run: &mut Run<'_>, dir: &Path) -> Result<ReleaseRecord, Failure> {
    let Run { config, layout, request, .. } = *run;
    let built = run.build_command().is_some();
    let live = run.live.as_ref();
    let mut record = release_record(run);
    // In this order: the grace step writes into what the build left, and the check sees both.
    let (verified, _) = run.clock.stage(Stage::Verify, || {
        let shared = match &config.app {
            Some(app) => {
                shared::link(app, &layout.target, dir)
                    .map_err(|err| Failure::new(Stage::Verify, err.reason, err.hint))?;
                shared::links(app, &layout.target)
            }
            None => Vec::new(),
        };
        check_publish(config, dir)?;
        if built {
            check_build_output(config, dir)?;
        }
        // A dry run stops before the switch: there is nothing to keep reachable, and it must
        // leave no trace of a grace in the live release's files either.
        let keeping = !config.retire.grace.is_zero() && !request.options.dry_run;
        if let Some(live) = live.filter(|_| keeping) {
            record.grace =
                carry_old_files(layout, live, dir, publish_dir(config), config.retire.grace)?;
        }
        // Without a build, a grace step and shared links, the release is the pushed tree, which
        // `check_tree` checked entry by entry before anything was written: nothing else is in
        // it. A link that leads out through a shared link is refused here.
        if built || !record.grace.files.is_empty() || !shared.is_empty() {
            check::served(dir, publish_dir(config), &shared).map_err(|err| {
                let hint = if built { BUILD_OUTPUT_HINT } else { RETRY };
                Failure::new(Stage::Verify, err, hint)
            })?;
        }
        Ok(())
    });
    verified?;
    Ok(record)
}

/// Checks what a build published, before the grace step can carry old files into it: an
/// `index.html` (else `/` answers with an error), and says so when the release is served whole
/// although it holds the sources' own files.
fn check_build_output(config: &Config, dir: &Path) -> Result<(), Failure> {
    let served = dir.join(publish_dir(config));
    if !config.build.allow_no_index && !publish::has_index(&served) {
        let what = match &config.build.publish {
            Some(publish) => format!("the publish directory {}", escape_path(publish)),
            None => "the release".to_owned(),
        };
        let hint = format!(
            "make the build write index.html there, fix `build.publish`, or set `allow_no_index = true` in [build] of {}",
            escape_path(&config.path)
        );
        return Err(Failure::new(Stage::Verify, format!("{what} has no index.html"), hint));
    }
    if let Some((problem, fix)) = sources_served(config, &served) {
        report::line(&format!("warning: {problem}; {fix}"));
    }
    Ok(())
}

/// Says so when a build runs without `publish` and the served release holds the sources'
/// own files (`hugo.toml`, `package.json`, ...): what is served, and how to serve only what
/// the build wrote.
pub fn sources_served(config: &Config, served: &Path) -> Option<(String, String)> {
    if config.build.command.is_none() || config.build.publish.is_some() {
        return None;
    }
    let found = publish::source_files_in(served);
    (!found.is_empty()).then(|| {
        (
            format!("the whole release is served, sources included ({})", found.join(", ")),
            format!(
                "set `publish` in [build] of {} to the directory the build writes (public for Hugo, dist for Vite, _site for Jekyll and Eleventy)",
                escape_path(&config.path)
            ),
        )
    })
}

/// Returns the served directory, relative to the release.
fn publish_dir(config: &Config) -> &Path {
    config.build.publish.as_deref().unwrap_or(Path::new(""))
}

fn free_space_hint(layout: &Layout) -> String {
    format!("free space on the filesystem of {}, then push again", escape_path(&layout.target))
}

/// Returns the live release's index when it describes the live release.
fn trusted_index<'l>(layout: &Layout, live: &'l Live) -> Option<(&'l Live, Index)> {
    let record = record::read(layout, live.slot).ok()??;
    let index = index::read(layout, live.slot)?;
    (index.commit == Some(record.commit)).then_some((live, index))
}

/// Keeps the live release's files that the new release in `dir` lacks reachable for the grace
/// period, under its served directory `publish`.
fn carry_old_files(
    layout: &Layout,
    live: &Live,
    dir: &Path,
    publish: &Path,
    grace: Duration,
) -> Result<Grace, Failure> {
    let failure = |reason: String| Failure::new(Stage::Verify, reason, RETRY);
    let old_grace = record::read(layout, live.slot)
        .map_err(|err| failure(err.to_string()))?
        .map(|record| record.grace)
        .unwrap_or_default();
    let carried = grace::carry(&layout.target.join(&live.link_target), &old_grace, dir, publish)
        .map_err(|err| {
            failure(format!("cannot keep the old release's files for `retire.grace`: {err}"))
        })?;
    for warning in &carried.warnings {
        report::line(&format!("warning: {warning}"));
    }
    let kept = carried.grace;
    if !kept.files.is_empty() {
        report::line(&format!(
            "kept {} of the old release reachable for {} (retire.grace)",
            report::things(kept.files.len() as u64, "file"),
            humantime::format_duration(grace)
        ));
    }
    Ok(kept)
}

/// Checks that what the link will point at is a real, non-empty directory of the release.
fn check_publish(config: &Config, dir: &Path) -> Result<(), Failure> {
    let (served, what) = match &config.build.publish {
        Some(publish) => (dir.join(publish), format!("publish directory {}", escape_path(publish))),
        None => (dir.to_owned(), "release".to_owned()),
    };
    let hint = match &config.build.publish {
        Some(_) => format!(
            "make the build write it, or fix `build.publish` in {}",
            escape_path(&config.path)
        ),
        None => "push a commit that has files in it".to_owned(),
    };
    // lstat, not stat, on every component: a symlink anywhere on the way could lead anywhere.
    let problem = match check::publish_dir(dir, publish_dir(config)) {
        Ok(()) => None,
        Err(check::PublishProblem::Symlink(path)) => {
            let reason = format!(
                "refused {}: is a symlink; the {what} and the directories above it must be real directories of the release",
                escape_path(&path)
            );
            return Err(Failure::new(Stage::Verify, reason, hint));
        }
        Err(check::PublishProblem::NotADirectory) => Some("is not a directory"),
        Err(check::PublishProblem::Missing) => Some("does not exist"),
        Err(check::PublishProblem::Unreadable(path, err)) => {
            let reason = format!("cannot check the {what}: {}: {err}", escape_path(&path));
            return Err(Failure::new(Stage::Verify, reason, hint));
        }
    };
    if let Some(problem) = problem {
        return Err(Failure::new(Stage::Verify, format!("the {what} {problem}"), hint));
    }
    let empty = fs::read_dir(&served).map(|mut entries| entries.next().is_none()).unwrap_or(true);
    if empty {
        return Err(Failure::new(Stage::Verify, format!("the {what} is empty"), hint));
    }
    Ok(())
}

/// Returns the record of the release being prepared; its grace is filled in by `verify`.
fn release_record(run: &Run<'_>) -> ReleaseRecord {
    let Run { config, request, slot, .. } = *run;
    let link_target = match &config.build.publish {
        Some(publish) => Path::new(slot.name()).join(publish),
        None => PathBuf::from(slot.name()),
    };
    ReleaseRecord {
        slot,
        commit: request.commit,
        ref_name: request.ref_name.clone(),
        link_target: link_target.to_string_lossy().into_owned(),
        built_at: history::timestamp(SystemTime::now()),
        live_since: None,
        seq: crate::target_dir::kept::next_seq(run.layout),
        grace: Grace::default(),
    }
}
