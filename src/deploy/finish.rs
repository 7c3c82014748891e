//! How a deploy ends: its history entry, and the one line the pusher reads last. A deploy
//! that fails before the switch takes back what it wrote, here and only here.

use std::time::Duration;

use super::{Failure, Run};
use crate::error::ExitCode;
use crate::report::{self, escape, escape_path};
use crate::target_dir::history::{self, HistoryEntry, Outcome};
use crate::target_dir::record::{self, ReleaseRecord};
use crate::target_dir::slots;
use crate::target_dir::{durable, logs};

/// A release that went live.
pub(super) struct Switched {
    pub record: ReleaseRecord,
    /// From the start of the deploy to the link switch.
    pub time_to_live: Duration,
    /// An instant rollback: the release it replaced stays.
    pub kept: bool,
}

/// Ends a deploy that failed before the switch: what it wrote is taken back (a release parked
/// aside goes back into its slot), and the pusher is told the live site is unchanged. With
/// `take_back` false (an instant rollback, whose slot holds a kept release) nothing is removed.
pub(super) fn failed(run: &Run<'_>, failure: Failure, take_back: bool) -> ExitCode {
    if take_back {
        let _ = slots::discard(run.layout, run.slot, run.live.as_ref());
    }
    let outcome = if failure.rolled_back { Outcome::RolledBack } else { Outcome::Failed };
    append(run, outcome, Some(&failure), None);
    report::line(&format!(
        "failed at {}: {}; the live site is unchanged ({}); {}",
        failure.stage,
        failure.reason,
        describe_live(run),
        failure.hint
    ));
    ExitCode::DeployFailed
}

/// Ends a dry run: the release was written, built and verified; it is taken back unswitched.
pub(super) fn dry_run(run: &Run<'_>) -> ExitCode {
    let _ = slots::discard(run.layout, run.slot, run.live.as_ref());
    append(run, Outcome::DryRun, None, None);
    report::line(&format!(
        "dry run: {} ({}) was written{} and verified in {}; not activated, the live site is unchanged ({})",
        run.request.commit.short(),
        escape(&run.request.ref_name),
        if run.build_command().is_some() { ", built" } else { "" },
        report::seconds(run.clock.started.elapsed()),
        describe_live(run)
    ));
    ExitCode::Success
}

/// Ends a deploy that went live with the line that says where and how fast.
pub(super) fn live(run: &Run<'_>, switched: &Switched) -> ExitCode {
    let how = match (switched.kept, &run.live) {
        (true, Some(replaced)) => {
            format!("instant rollback; the release it replaced stays in {}", replaced.slot)
        }
        _ => format!("done in {}", report::seconds(run.clock.started.elapsed())),
    };
    report::line(&format!(
        "live: {} ({}) in {}: {} -> {} (live after {}, {how})",
        run.request.commit.short(),
        escape(&run.request.ref_name),
        run.slot,
        escape_path(&run.layout.link),
        switched.record.link_target,
        report::seconds(switched.time_to_live),
    ));
    ExitCode::Success
}

/// Appends the deploy's history entry; a history that cannot be written is a warning, since
/// the deploy itself is over.
pub(super) fn append(
    run: &Run<'_>,
    result: Outcome,
    failure: Option<&Failure>,
    time_to_live: Option<Duration>,
) {
    let entry = HistoryEntry {
        id: None,
        started_at: history::timestamp(run.clock.started_at),
        commit: Some(run.request.commit),
        ref_name: run.request.ref_name.clone(),
        slot: Some(run.slot),
        result,
        trigger: run.request.trigger,
        pusher: history::pusher(),
        failed_stage: failure.map(|failure| failure.stage),
        error: failure.map(|failure| failure.reason.clone()),
        stages: run.clock.stages.clone(),
        time_to_live: time_to_live.map(|ttl| ttl.as_secs_f64()),
        total: run.clock.started.elapsed().as_secs_f64(),
    };
    if let Err(err) = logs::record(run.layout, entry) {
        report::line(&format!("warning: {err}"));
    }
    // On disk before the pusher reads the outcome: the history line, and for a deploy that
    // went live the rename of the link and what was written since the release was synced.
    if let Err(err) = durable::flush() {
        report::line(&format!("warning: cannot flush the switch and its records to disk: {err}"));
    }
}

/// Says what is live, for a failure line: `blue, 1a2b3c4` or `nothing deployed yet`.
fn describe_live(run: &Run<'_>) -> String {
    match &run.live {
        None => "nothing deployed yet".to_owned(),
        Some(live) => match record::read(run.layout, live.slot) {
            Ok(Some(record)) => format!("{}, {}", live.slot, record.commit.short()),
            _ => live.slot.to_string(),
        },
    }
}
