//! Phase 2: a prepared release goes live. **activate**: its record written, the filesystem
//! synced, the link renamed onto it; **retire**: the release it replaced removed (or kept);
//! **record**: its index sealed, the grace's reaper started, the deploy refs and the history.

use std::path::Path;
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
use crate::target_dir::{kept, link, slots};

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
    app::settle(run, started);
    let Run { config, layout, slot, .. } = *run;
    // The release kept before this one is now pushed out by a good one: kept further back
    // (`[retire] keep` above 2), or moved to the trash, removed after the push is over.
    if let Err(err) = kept::retire_parked(layout, slot, config.retire.keep) {
        report::line(&format!("warning: could not retire the release parked in {slot}: {err}"));
    }
    record.live_since = Some(history::timestamp(SystemTime::now()));
    record.grace.start(config.retire.grace);
    if let Err(err) = record::write(layout, &record) {
        report::line(&format!("warning: {err}"));
    }
    // An instant rollback goes back to a kept release, and keeps the one it replaced.
    let retired = kept || retire(run);
    // The release that was live is kept: the links this deploy made to its files or dropped
    // from them moved their ctimes, which its index must not take for changes.
    let kept_old = run.live.as_ref().filter(|old| old.slot != slot && config.retire.keep_previous);
    if let (Some(old), Some(start)) = (kept_old, shared_since) {
        let window = (start, index::seal_time());
        index::add_window(layout, old.slot, window);
        // The releases in `.pushdeploy/kept/` share those inodes too.
        kept::add_window(layout, window);
    }
    self::record(run, &record, index.filter(|_| retired), time_to_live);
    Ok(Switched { record, time_to_live, kept })
}

/// The activate stage: the release's record, then `syncfs`, then one rename of a new link
/// over the live one. A kept release was synced when it was first deployed.
fn activate(run: &mut Run<'_>, record: &ReleaseRecord, kept: bool) -> Result<Duration, Failure> {
    let layout = run.layout;
    let failure = |err: &dyn std::fmt::Display| Failure::new(Stage::Activate, err, RETRY);
    let (activated, _) = run.clock.stage(Stage::Activate, || {
        if !kept {
            record::write(layout, record).map_err(|err| failure(&err))?;
            link::sync_filesystem(&layout.target).map_err(|err| failure(&err))?;
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
/// its files any more), the reaper of its grace, the deploy refs, the history line.
fn record(run: &Run<'_>, record: &ReleaseRecord, index: Option<Index>, time_to_live: Duration) {
    if let Some(mut index) = index {
        index.seal(record.commit);
        if let Err(err) = index::write(run.layout, run.slot, &index) {
            report::line(&format!("warning: cannot write the release's index: {err}"));
        }
    }
    record_deploy_refs(run.config, run.repo, record.commit, run.clock.started_at);
    finish::append(run, Outcome::Live, None, Some(time_to_live));
    // Last, once the index is written: the reaper adds its removal's window to it.
    if !record.grace.is_empty() || slots::trash_is_full(run.layout) {
        spawn_reaper(run.repo.path());
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
