//! Rollback: back to the release before the live one, `--steps N` releases back, or to a named
//! revision. A kept release (`[retire] keep_previous`, or `keep = N`) is a release that is
//! already prepared, so going back to it is phase 2 alone: one rename into the idle slot when
//! it waits in `.pushdeploy/kept/`, then the switch; no rebuild. Otherwise the commit is
//! deployed again.
//!
//! "Back" goes by the order releases were first deployed (their `seq`), not by the history's
//! newest entries: rolling back twice goes two releases back, not back and forth.

use super::finish;
use super::switch::switch;
use super::{Clock, Options, Prepared, Request, Run, deploy_locked, lock_target};
use crate::config::Config;
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::report::{self, escape_path};
use crate::target_dir::history::{self, Outcome, Trigger};
use crate::target_dir::kept::{self, KeptRelease};
use crate::target_dir::record::{self, ReleaseRecord};
use crate::target_dir::{Layout, Live, Slot, link};

/// Rolls back to `rev`, or to the previous successful release. What to go back to is chosen
/// under the lock: a release that went live while this waited is what it goes back from.
pub fn rollback(
    config: &Config,
    repo: &Repo,
    rev: Option<&str>,
    options: Options,
) -> Result<ExitCode, Error> {
    rollback_steps(config, repo, rev, 1, options)
}

/// Rolls back to `rev`, or `steps` releases back from the live one (1: the one before it).
pub fn rollback_steps(
    config: &Config,
    repo: &Repo,
    rev: Option<&str>,
    steps: usize,
    options: Options,
) -> Result<ExitCode, Error> {
    let (layout, _lock) = lock_target(config)?;
    let wanted = match rev {
        Some(rev) => Some((repo.resolve(rev)?, rev.to_owned())),
        None => None,
    };
    if !options.dry_run
        && let Some(code) = switch_to_kept(config, repo, &layout, wanted.as_ref(), steps)?
    {
        return Ok(code);
    }
    let (commit, ref_name) = match wanted {
        Some(wanted) => wanted,
        None => previous_release(&layout, steps)?,
    };
    let request = Request {
        commit,
        ref_name,
        skip_if_superseded: false,
        options,
        trigger: Trigger::Rollback,
    };
    deploy_locked(config, repo, &layout, &request)
}

/// Returns the successful deploy `steps` back from the live release's own first deploy (by
/// the history's order, rollbacks left out), and its ref; when the live commit was never
/// deployed but by a rollback, the newest successful deploy of another commit.
fn previous_release(layout: &Layout, steps: usize) -> Result<(CommitId, String), Error> {
    let live = match layout.live()? {
        Some(live) => record::read(layout, live.slot)?.map(|record| record.commit),
        None => None,
    };
    let entries: Vec<_> = history::read_all(layout)?
        .into_iter()
        .filter(|entry| entry.result == Outcome::Live && entry.commit.is_some())
        .collect();
    let first_deploy = entries
        .iter()
        .rposition(|entry| entry.commit == live && entry.trigger != Trigger::Rollback);
    let earlier: Vec<_> = match first_deploy {
        Some(position) => entries[..position]
            .iter()
            .rev()
            .filter(|entry| entry.trigger != Trigger::Rollback && entry.commit != live)
            .collect(),
        None => entries.iter().rev().filter(|entry| entry.commit != live).collect(),
    };
    earlier
        .get(steps.saturating_sub(1))
        .and_then(|entry| Some((entry.commit?, entry.ref_name.clone())))
        .ok_or_else(|| {
            Error::user(
                "there is no earlier successful deploy to roll back to",
                "name the commit to go back to: `pushdeploy rollback REV`",
            )
        })
}

/// A kept release to go back to.
enum Choice {
    /// The one in the idle slot.
    Slot(ReleaseRecord),
    /// One in `.pushdeploy/kept/`.
    Kept(KeptRelease),
}

impl Choice {
    fn record(&self) -> &ReleaseRecord {
        match self {
            Choice::Slot(record) => record,
            Choice::Kept(kept) => &kept.record,
        }
    }
}

/// Chooses the kept release to go back to: the newest one of `wanted`'s commit, or the one
/// `steps` back from the live release by deploy order.
fn choose(
    layout: &Layout,
    live: &Live,
    wanted: Option<CommitId>,
    steps: usize,
) -> Result<Option<Choice>, Error> {
    let idle = live.slot.other();
    let mut candidates: Vec<Choice> = kept::list(layout).into_iter().map(Choice::Kept).collect();
    if let Some(record) = record::read(layout, idle)?
        && layout.slot_dir(idle).is_dir()
    {
        candidates.push(Choice::Slot(record));
    }
    candidates.sort_by_key(|choice| std::cmp::Reverse(choice.record().seq));
    if let Some(commit) = wanted {
        return Ok(candidates.into_iter().find(|choice| choice.record().commit == commit));
    }
    let live_seq = record::read(layout, live.slot)?.map_or(0, |record| record.seq);
    // A release a rollback deployed again (it was no longer kept) is the newest by number,
    // but stands where its commit was first deployed: the history says what came before.
    let newest = candidates.iter().all(|choice| choice.record().seq < live_seq);
    let live_by_rollback = history::read_all(layout)?
        .iter()
        .rev()
        .find(|entry| entry.result == Outcome::Live)
        .is_some_and(|entry| entry.trigger == Trigger::Rollback);
    if live_seq > 0 && !(newest && live_by_rollback) {
        let earlier = candidates.into_iter().filter(|choice| choice.record().seq < live_seq);
        if let Some(choice) = earlier.into_iter().nth(steps.saturating_sub(1)) {
            return Ok(Some(choice));
        }
        return Ok(None);
    }
    // Releases made before they were numbered, or deployed again by a rollback: the previous
    // one by the history.
    let Ok((previous, _)) = previous_release(layout, steps) else { return Ok(None) };
    Ok(candidates.into_iter().find(|choice| choice.record().commit == previous))
}

/// Switches back to a kept release when one matches. Returns `None` when none does (the
/// commit is then deployed again).
fn switch_to_kept(
    config: &Config,
    repo: &Repo,
    layout: &Layout,
    wanted: Option<&(CommitId, String)>,
    steps: usize,
) -> Result<Option<ExitCode>, Error> {
    let Some(live) = layout.live()? else { return Ok(None) };
    if let Some((commit, _)) = wanted
        && record::read(layout, live.slot)?.is_some_and(|record| record.commit == *commit)
    {
        report::line(&format!(
            "{} is already live in {}; nothing to do",
            commit.short(),
            live.slot
        ));
        return Ok(Some(ExitCode::Success));
    }
    let Some(choice) = choose(layout, &live, wanted.map(|(commit, _)| *commit), steps)? else {
        return Ok(None);
    };
    let idle = live.slot.other();
    let record = match choice {
        Choice::Slot(record) => {
            report::line(&format!(
                "rolling back to {}, kept in {idle}: no rebuild",
                record.commit.short()
            ));
            record
        }
        Choice::Kept(chosen) => bring_back(config, layout, idle, &chosen)?,
    };
    let commit = record.commit;
    let request = Request {
        commit,
        ref_name: record.ref_name.clone(),
        skip_if_superseded: false,
        options: Options::default(),
        trigger: Trigger::Rollback,
    };
    let mut run = Run {
        config,
        repo,
        layout,
        request: &request,
        live: Some(live),
        slot: idle,
        clock: Clock::start(),
    };
    let prepared = Prepared { record, index: None, kept: true, shared_since: None };
    Ok(Some(match switch(&mut run, prepared) {
        Ok(switched) => finish::live(&run, &switched),
        // The kept release stays where it is, unswitched.
        Err(failure) => finish::failed(&run, failure, false),
    }))
}

/// Moves a release kept in `.pushdeploy/kept/` into the idle slot, whose release is kept
/// there in its place (renames only); returns its record, now of the idle slot.
fn bring_back(
    config: &Config,
    layout: &Layout,
    idle: Slot,
    chosen: &KeptRelease,
) -> Result<ReleaseRecord, Error> {
    report::line(&format!(
        "rolling back to {}, kept in {}: moving it into {idle}, no rebuild",
        chosen.record.commit.short(),
        escape_path(&kept::kept_dir(layout))
    ));
    // The idle slot's instance (kept running by `keep_previous`) must not serve the release
    // that is about to be moved in under its working directory as if it were its own.
    if let Some(app) = &config.app
        && !app.strategy.is_single()
    {
        let _ = crate::app::systemd::stop(&crate::app::systemd::instance(app, idle));
    }
    let cannot = |err: crate::target_dir::Error| {
        Error::user(
            format!("cannot move the kept release {} into {idle}", chosen.record.commit.short()),
            "look at the error above, then run `pushdeploy rollback` again",
        )
        .cause(err)
    };
    if config.app.is_some() && chosen.record.slot != idle {
        // A build that wrote absolute paths (a virtualenv's scripts) wrote the other slot's.
        report::line(&format!(
            "warning: {} was built in {}, and runs from {idle} now: a build that wrote absolute paths into the release (a virtualenv's scripts) still names {}",
            chosen.record.commit.short(),
            chosen.record.slot,
            chosen.record.slot
        ));
    }
    kept::keep_slot(layout, idle).map_err(cannot)?;
    let record = kept::restore(layout, chosen, idle).map_err(cannot)?;
    // The renames must be on disk before the link points into the slot.
    link::sync_filesystem(&layout.target).map_err(|err| {
        Error::user("cannot sync the target's filesystem", "run `pushdeploy rollback` again")
            .cause(err)
    })?;
    kept::prune(layout, config.retire.keep).map_err(cannot)?;
    Ok(record)
}
