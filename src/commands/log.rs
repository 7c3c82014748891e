//! `pushdeploy log`: the deploy history.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, ExitCode};
use crate::report::{self, escape};
use crate::target_dir::history;

/// Lists deploys, newest first: when, log id, commit, result, slot, ref, who, durations.
///
/// Every run is there: deploys, failures before a deploy began (configuration, permissions,
/// lock, push options) as `error`, and pushes that deployed nothing as `ignored`. `#ID` names
/// its stored output: `pushdeploy show ID` (or `log --full ID`) prints it.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
    /// Print a JSON array of the entries instead of text
    #[arg(long)]
    json: bool,
    /// Show at most N deploys
    #[arg(short = 'n', long = "max-count", value_name = "N")]
    max_count: Option<usize>,
    /// Print the stored output of run ID instead (as `pushdeploy show ID`)
    #[arg(long, value_name = "ID")]
    full: Option<String>,
}

pub fn run(args: LogArgs) -> Result<ExitCode, Error> {
    if let Some(id) = args.full {
        return super::show::run(super::show::ShowArgs { repo: args.repo, id, json: args.json });
    }
    let (layout, _) = super::recorded::open_history(args.repo)?;
    let entries = history::read_all(&layout)?;
    let newest: Vec<_> =
        entries.into_iter().rev().take(args.max_count.unwrap_or(usize::MAX)).collect();
    if args.json {
        let json = serde_json::to_string_pretty(&newest).expect("history entries serialize");
        report::stdout(&format!("{json}\n"));
        return Ok(ExitCode::Success);
    }
    let mut out = String::new();
    for entry in &newest {
        let live_after =
            entry.time_to_live.map(|ttl| format!("live after {ttl:.2} s, ")).unwrap_or_default();
        let trigger = entry.trigger.name();
        let id = entry.id.map_or_else(|| "-".to_owned(), |id| format!("#{id}"));
        let commit = entry.commit.map_or_else(|| "-------".to_owned(), |commit| commit.short());
        let slot = entry.slot.map_or("-", |slot| slot.name());
        let ref_name =
            if entry.ref_name.is_empty() { "-".to_owned() } else { escape(&entry.ref_name) };
        out.push_str(&format!(
            "{}  {id:<4}  {commit}  {:<7} {slot:<5}  {}  ({trigger} by {}; {live_after}total {:.2} s)",
            entry.started_at,
            entry.result,
            ref_name,
            escape(&entry.pusher),
            entry.total,
        ));
        match (&entry.failed_stage, &entry.error) {
            (Some(stage), Some(error)) => {
                out.push_str(&format!(": failed at {stage}: {}", escape(error)));
            }
            (None, Some(error)) => out.push_str(&format!(": {}", escape(error))),
            _ => {}
        }
        out.push('\n');
    }
    if newest.is_empty() {
        out.push_str("no deploys yet\n");
    }
    report::stdout(&out);
    Ok(ExitCode::Success)
}
