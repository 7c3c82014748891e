//! Rollback: back to the previous successful release, or to a named revision. A release kept
//! in the other slot (`[retire] keep_previous`) is a release that is already prepared, so going
//! back to it is phase 2 alone: one rename, no rebuild. Otherwise the commit is deployed again.

use super::finish;
use super::switch::switch;
use super::{Clock, Options, Prepared, Request, Run, deploy_locked, lock_target};
use crate::config::Config;
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::report;
use crate::target_dir::history::{self, Outcome, Trigger};
use crate::target_dir::{Layout, record};

/// Rolls back to `rev`, or to the previous successful release. What to go back to is chosen
/// under the lock: a release that went live while this waited is what it goes back from.
pub fn rollback(
    config: &Config,
    repo: &Repo,
    rev: Option<&str>,
    options: Options,
) -> Result<ExitCode, Error> {
    let (layout, _lock) = lock_target(config)?;
    let (commit, ref_name) = match rev {
        Some(rev) => (repo.resolve(rev)?, rev.to_owned()),
        None => previous_release(&layout)?,
    };
    if !options.dry_run
        && let Some(code) = switch_to_kept(config, repo, &layout, commit)?
    {
        return Ok(code);
    }
    let request = Request {
        commit,
        ref_name,
        skip_if_superseded: false,
        options,
        trigger: Trigger::Rollback,
    };
    deploy_locked(config, repo, &layout, &request)
}

/// Returns the newest successful deploy whose commit is not the live one, and its ref.
fn previous_release(layout: &Layout) -> Result<(CommitId, String), Error> {
    let live = match layout.live()? {
        Some(live) => record::read(layout, live.slot)?.map(|record| record.commit),
        None => None,
    };
    history::read_all(layout)?
        .into_iter()
        .rev()
        .filter(|entry| entry.result == Outcome::Live && entry.commit != live)
        .find_map(|entry| Some((entry.commit?, entry.ref_name)))
        .ok_or_else(|| {
            Error::user(
                "there is no earlier successful deploy to roll back to",
                "name the commit to go back to: `pushdeploy rollback REV`",
            )
        })
}

/// Switches back to the release kept in the other slot when it holds `commit`. Returns `None`
/// when no kept release matches (the commit is then deployed again).
fn switch_to_kept(
    config: &Config,
    repo: &Repo,
    layout: &Layout,
    commit: CommitId,
) -> Result<Option<ExitCode>, Error> {
    let Some(live) = layout.live()? else { return Ok(None) };
    if record::read(layout, live.slot)?.is_some_and(|record| record.commit == commit) {
        report::line(&format!(
            "{} is already live in {}; nothing to do",
            commit.short(),
            live.slot
        ));
        return Ok(Some(ExitCode::Success));
    }
    let kept = live.slot.other();
    let Some(record) = record::read(layout, kept)? else { return Ok(None) };
    if record.commit != commit || !layout.slot_dir(kept).is_dir() {
        return Ok(None);
    }
    report::line(&format!("rolling back to {}, kept in {kept}: no rebuild", commit.short()));
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
        slot: kept,
        clock: Clock::start(),
    };
    let prepared = Prepared { record, index: None, kept: true, shared_since: None };
    Ok(Some(match switch(&mut run, prepared) {
        Ok(switched) => finish::live(&run, &switched),
        // The kept release stays where it is, unswitched.
        Err(failure) => finish::failed(&run, failure, false),
    }))
}
