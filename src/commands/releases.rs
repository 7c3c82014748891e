//! `pushdeploy releases`: the releases kept for an instant rollback.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, ExitCode};
use crate::report::{self, escape};
use crate::target_dir::history::{self, Outcome, Stage};
use crate::target_dir::kept;
use crate::target_dir::record;

/// Lists the kept releases, newest deploy first: number, commit, when it was deployed, its
/// size, and which is live, previous (in the other slot) or kept in `.pushdeploy/kept/`; then
/// the deploys since the oldest of them that failed their checks (never kept). The total
/// disk they use counts each file once, however many releases hard-link it.
///
/// `pushdeploy rollback REV` (or `--steps N`) goes back to any of them with no rebuild.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
}

pub fn run(args: ReleasesArgs) -> Result<ExitCode, Error> {
    let site = super::open_site(args.repo)?;
    let layout = &site.layout;
    let live = layout.live()?.map(|live| live.slot);
    // (record, tree, where)
    let mut rows = Vec::new();
    for slot in live.into_iter().chain(live.map(|slot| slot.other())) {
        if let Some(record) = record::read(layout, slot)?
            && layout.slot_dir(slot).is_dir()
        {
            let place = if Some(slot) == live { "live" } else { "previous" };
            rows.push((record, layout.slot_dir(slot), format!("{place} ({slot})")));
        }
    }
    for kept in kept::list(layout).into_iter().rev() {
        let tree = kept.tree();
        rows.push((kept.record, tree, "kept".to_owned()));
    }
    rows.sort_by_key(|(record, _, _)| std::cmp::Reverse(record.seq));
    let trees: Vec<PathBuf> = rows.iter().map(|(_, tree, _)| tree.clone()).collect();
    let disk = kept::disk_use(&trees);
    let mut out = String::new();
    for ((record, _, place), size) in rows.iter().zip(&disk.each) {
        out.push_str(&format!(
            "{:>4}  {}  {}  {:>10}  {place}  {}\n",
            record.seq,
            record.commit.short(),
            record.live_since.as_deref().unwrap_or(&record.built_at),
            report::bytes(*size),
            escape(&record.ref_name),
        ));
    }
    let oldest = rows.iter().map(|(record, _, _)| record.built_at.clone()).min();
    let failed: Vec<_> = history::read_all(layout)?
        .into_iter()
        .filter(|entry| {
            matches!(entry.result, Outcome::Failed | Outcome::RolledBack)
                && matches!(
                    entry.failed_stage,
                    Some(Stage::Verify | Stage::Release | Stage::Activate)
                )
                && oldest.as_ref().is_some_and(|oldest| entry.started_at >= *oldest)
        })
        .collect();
    for entry in failed.iter().rev() {
        out.push_str(&format!(
            "   -  {}  {}  {:>10}  failed its check at {}, not kept: {}\n",
            entry.commit.map_or_else(|| "-------".to_owned(), |commit| commit.short()),
            entry.started_at,
            "-",
            entry.failed_stage.map_or("-", |stage| stage.name()),
            escape(entry.error.as_deref().unwrap_or("")),
        ));
    }
    if rows.is_empty() {
        out.push_str("no releases yet\n");
    } else {
        out.push_str(&format!(
            "{} (keep = {}), {} on disk, each file counted once however many releases hard-link it\n",
            report::things(rows.len() as u64, "release"),
            site.config.retire.keep,
            report::bytes(disk.total),
        ));
    }
    report::stdout(&out);
    Ok(ExitCode::Success)
}
