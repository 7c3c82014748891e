//! `pushdeploy show ID`: the stored output of one run.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::error::{Error, ExitCode};
use crate::report;
use crate::target_dir::history::{self, HistoryEntry};
use crate::target_dir::logs;

/// Prints the stored output of run ID: what the pusher saw, the build's output included,
/// then what its notifications reported. `pushdeploy log` lists the ids (`#ID`).
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The run's id, as `pushdeploy log` prints it (`12` or `#12`), or `last`
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print one JSON object: the history entry, the output, the notifications' report
    #[arg(long)]
    pub json: bool,
}

/// A run as `show --json` prints it.
#[derive(Serialize)]
struct Shown<'a> {
    entry: &'a HistoryEntry,
    output: &'a str,
    notify: Option<&'a str>,
}

pub fn run(args: ShowArgs) -> Result<ExitCode, Error> {
    let (layout, config) = super::recorded::open_history(args.repo)?;
    let bounds = config.map(|config| config.logs).unwrap_or_default();
    let entries = history::read_all(&layout)?;
    let wanted = args.id.trim_start_matches('#');
    let entry = match wanted {
        "last" => entries.iter().rev().find(|entry| entry.id.is_some()),
        _ => {
            let id: u64 = wanted.parse().map_err(|_| {
                Error::user(
                    format!("{:?} is not a run id", report::escape(&args.id)),
                    "give the number `pushdeploy log` prints after the time (`#12`), or `last`",
                )
            })?;
            entries.iter().rev().find(|entry| entry.id == Some(id))
        }
    };
    let Some(entry) = entry else {
        return Err(Error::user(
            format!("no run {} in the history of {}", args.id, report::escape_path(&layout.target)),
            "`pushdeploy log` lists the runs and their ids",
        ));
    };
    let id = entry.id.unwrap_or_default();
    let Some(output) = logs::read(&layout, id)? else {
        return Err(Error::user(
            format!(
                "the output of run #{id} is no longer kept (the newest {} runs' are, up to {} in all)",
                bounds.keep,
                report::bytes(bounds.max_bytes)
            ),
            "raise `keep` or `max_size` in [logs] of pushdeploy.toml to keep more",
        ));
    };
    let notify = logs::read_notify(&layout, id)?;
    if args.json {
        let shown = Shown { entry, output: &output, notify: notify.as_deref() };
        let json = serde_json::to_string_pretty(&shown).expect("a run serializes");
        report::stdout(&format!("{json}\n"));
        return Ok(ExitCode::Success);
    }
    let mut text = output;
    if let Some(notify) = notify.filter(|notify| !notify.is_empty()) {
        text.push_str("notifications:\n");
        text.push_str(&notify);
    }
    report::stdout(&text);
    Ok(ExitCode::Success)
}
