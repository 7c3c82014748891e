//! Phase 2: a prepared release goes live. **activate**: its record written, the filesystem
//! synced, the link renamed onto it; **retire**: the release it replaced removed (or kept);
//! **record**: its index sealed, the grace's reaper started, the deploy refs and the history.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::app;
use super::finish::{self, Switched};
use super::{Failure, Prepared, RETRY, Run};
use crate::config::{Config, Mode};
use crate::git::{CommitId, Repo};
use crate::report;
use crate::target_dir::history::{self, Outcome, Stage};
use crate::target_dir::index::{self, Index};
use crate::target_dir::record::{self, ReleaseRecord};
use crate::target_dir::{durable, kept, link, slots};

/// The ref that names the live commit.
pub const LIVE_REF: &str = "refs/deploys/live";

/// Runs phase 2: makes the prepared release live, then retires and records. Only what comes
/// before the link moves can fail (an app's gate, its proxy switch and check, which points
/// the proxy back; the rename); from there on, a problem is a warning.
pub(super) fn switch(run: &mut Run<'_>, prepared: Prepared) -> Result<Switched, Failure> {
    let switched = switch_and_retire(run, prepared);
    if run.config.app.is_some() {
        // The deploy ended, either way, with everything where it should be.
        crate::app::progress::clear(&run.layout.target);
    }
    switched
}

fn switch_and_retire(run: &mut Run<'_>, prepared: Prepared) -> Result<Switched, Failure> {
    let Prepared { mut record, index, kept, shared_since } = prepared;
    let started = app::start(run, record.commit, kept)?;
    let time_to_live = match activate(run, &record, kept) {
        Ok(time_to_live) => time_to_live,
        Err(failure) => {
            app::abandon(started);
            return Err(failure);
        }
    };
    if run.config.app.is_some() {
        // An app's old instance drains next, for up to its stop timeout: the link's rename is
        // made durable now, as a site's is by the flush before its live line.
        if let Err(err) = durable::flush() {
            report::line(&format!("warning: cannot flush the switch to disk: {err}"));
        }
    }
    app::settle(run, started);
    let Run { config, layout, slot, .. } = *run;
    // The release kept before this one is now pushed out by a good one: kept further back
    // (`[retire] keep` above 2), or moved to the trash, removed after the push is over.
    if let Err(err) = kept::retire_parked(layout, slot, config.retire.keep) {
        report::line(&format!("warning: could not retire the release parked in {slot}: {err}"));
    }
    record.live_since = Some(history::timestamp(SystemTime::now()));
    record.grace.start(config.retire.grace);
    // An instant rollback goes back to a kept release, and keeps the one it replaced.
    let retired = kept || retire(run);
    // The release that was live is kept: the links this deploy made to its files or dropped
    // from them moved their ctimes, which its index must not take for changes.
    let kept_old = run.live.as_ref().filter(|old| old.slot != slot && config.retire.keep_previous);
    if let (Some(old), Some(start)) = (kept_old, shared_since) {
        let window = (start, index::seal_time());
        index::add_window(layout, old.slot, window);
        // The releases in `.pushdeploy/kept/` share those inodes too.
        index::add_kept_window(layout, window);
    }
    self::record(run, &record, index.filter(|_| retired), time_to_live);
    Ok(Switched { record, time_to_live, kept })
}

/// The activate stage: the release's record, then `syncfs`, then one rename of a new link
/// over the live one. A kept release was synced when it was first deployed.
///
/// The record is written under a temporary name, synced by the same `syncfs` as the release,
/// and renamed into place before the link: whatever the link points at has its record, with
/// one journal commit for both (a record synced on its own was one more).
fn activate(run: &mut Run<'_>, record: &ReleaseRecord, kept: bool) -> Result<Duration, Failure> {
    let layout = run.layout;
    let failure = |err: &dyn std::fmt::Display| Failure::new(Stage::Activate, err, RETRY);
    let (activated, _) = run.clock.stage(Stage::Activate, || {
        if !kept {
            let staged = record::stage(layout, record).map_err(|err| failure(&err))?;
            link::sync_filesystem(&layout.target).map_err(|err| failure(&err))?;
            staged.persist().map_err(|err| failure(&err))?;
        }
        link::activate(layout, Path::new(&record.link_target)).map_err(|err| failure(&err))
    });
    activated?;
    Ok(run.clock.started.elapsed())
}

/// The retire stage: the release that was live is removed, or kept for an instant rollback
/// (`[retire] keep_previous`). Returns whether nothing of it is left to share files with the
/// new release.
fn retire(run: &mut Run<'_>) -> bool {
    let Run { config, layout, slot, .. } = *run;
    let old = run.live.as_ref().filter(|old| old.slot != slot);
    let (retired, _) = run.clock.stage(Stage::Retire, || match old {
        Some(old) if config.retire.keep_previous => {
            report::line(&format!(
                "kept the previous release in {} for an instant `pushdeploy rollback`",
                old.slot
            ));
            true
        }
        Some(old) => slots::forget(layout, old.slot)
            .and_then(|()| slots::retire(layout, old.slot))
            .map_err(|err| {
                report::line(&format!(
                    "warning: could not remove the old release in {}: {err}; the next deploy retries",
                    old.slot
                ))
            })
            .is_ok(),
        None => true,
    });
    retired
}

/// The record stage: the new release's index (sealed only once nothing of this deploy touches
/// its files any more) and its record as live, the deploy refs, the history line, the reaper
/// of its grace.
///
/// Durability costs one `syncfs` here, where each file was synced on its own: the record and
/// the index are written under temporary names, the history line appended, and one flush
/// (`durable::flush`, inside `finish::append`) puts them on disk with the rename of the link,
/// before the pusher is told. Only then are the record and the index renamed into place, so a
/// crash leaves each whole, old or new; the renames are synced with the run's log at its end.
fn record(run: &Run<'_>, record: &ReleaseRecord, index: Option<Index>, time_to_live: Duration) {
    let warn = |what: &str, err: &dyn std::fmt::Display| {
        report::line(&format!("warning: cannot write the release's {what}: {err}"));
    };
    let staged_index = index.and_then(|mut index| {
        index.seal(record.commit);
        index::stage(run.layout, run.slot, &index).map_err(|err| warn("index", &err)).ok()
    });
    let staged_record = record::stage(run.layout, record).map_err(|err| warn("record", &err)).ok();
    record_deploy_refs(run.config, run.repo, record.commit, run.clock.started_at);
    finish::append(run, Outcome::Live, None, Some(time_to_live));
    if let Some(staged) = staged_record
        && let Err(err) = staged.persist()
    {
        warn("record", &err);
    }
    if let Some(staged) = staged_index
        && let Err(err) = index::persist(run.layout, run.slot, staged)
    {
        warn("index", &err);
    }
    // Once the index is in place: the reaper adds its removal's window to it.
    if !record.grace.is_empty() || slots::trash_is_full(run.layout) {
        request_reaper(run.repo.path());
    }
}

/// The repositories whose reaper this run starts when it ends ([`start_reapers`]).
static REAPERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Asks for `pushdeploy reap` to start once the run has ended.
fn request_reaper(repo: &Path) {
    let mut reapers = REAPERS.lock().unwrap_or_else(PoisonError::into_inner);
    if !reapers.iter().any(|known| known == repo) {
        reapers.push(repo.to_owned());
    }
}

/// Starts the reapers the run's deploys asked for. Called last, once the run's history and
/// log are on disk: the removal of a whole old release, started earlier, lands in the journal
/// commit that the run's last sync waits for (tens of milliseconds at 1,000 files on ext4).
pub fn start_reapers() {
    let reapers = std::mem::take(&mut *REAPERS.lock().unwrap_or_else(PoisonError::into_inner));
    for repo in reapers {
        spawn_reaper(&repo);
    }
}

/// Points `refs/deploys/live` at what went live, and leaves one ref per deploy, so that
/// `git fetch production 'refs/deploys/*:refs/deploys/*'` shows what is and was live. In
/// pre-receive mode the pushed objects are still in quarantine, so the post-receive hook does
/// it once git has accepted them.
pub fn record_deploy_refs(config: &Config, repo: &Repo, commit: CommitId, when: SystemTime) {
    // A preview's deploys would move production's `refs/deploys/live`.
    if config.preview_of.is_some() {
        return;
    }
    if config.mode == Mode::PreReceive && std::env::var_os("GIT_QUARANTINE_PATH").is_some() {
        return;
    }
    let stamp = humantime::format_rfc3339_seconds(when).to_string().replace([':', '-'], "");
    let per_deploy = format!("refs/deploys/{stamp}-{}", commit.short());
    for name in [LIVE_REF, per_deploy.as_str()] {
        if let Err(err) = repo.set_ref(name, commit, "pushdeploy: deployed") {
            report::line(&format!("warning: cannot update {name}: {err}"));
        }
    }
}

/// Starts `pushdeploy reap` in the background to remove the retired release (the trash) and
/// the kept files when their grace ends, so the push is over once the link has switched. Its
/// output goes nowhere: git waits for every holder of the hook's stderr to close it.
fn spawn_reaper(repo: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("reap")
            .arg("--repo")
            .arg(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
    });
    if let Err(err) = spawned {
        report::line(&format!(
            "warning: cannot start `pushdeploy reap` ({err}); the old release and kept files go at the next deploy"
        ));
    }
}
