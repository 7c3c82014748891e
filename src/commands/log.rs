//! `pushdeploy log`: the deploy history.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, ExitCode};
use crate::report::{self, escape};
use crate::target_dir::history;

/// Lists deploys, newest first: when, commit, ref, slot, result, durations, who.
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
}

pub fn run(args: LogArgs) -> Result<ExitCode, Error> {
    let site = super::open_site(args.repo)?;
    let entries = history::read_all(&site.layout)?;
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
        out.push_str(&format!(
            "{}  {}  {:<7} {:<5}  {}  ({trigger} by {}; {live_after}total {:.2} s)",
            entry.started_at,
            entry.commit.short(),
            entry.result,
            entry.slot,
            escape(&entry.ref_name),
            escape(&entry.pusher),
            entry.total,
        ));
        if let (Some(stage), Some(error)) = (&entry.failed_stage, &entry.error) {
            out.push_str(&format!(": failed at {stage}: {}", escape(error)));
        }
        out.push('\n');
    }
    if newest.is_empty() {
        out.push_str("no deploys yet\n");
    }
    report::stdout(&out);
    Ok(ExitCode::Success)
}
