//! `pushdeploy status`: what is live.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::config;
use crate::error::{Error, ExitCode};
use crate::git::Repo;
use crate::report::escape_path;
use crate::target::history;
use crate::target::{Layout, Slot};

/// Shows the live slot, its commit and ref, and since when it is live.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// The status, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Status {
    target: PathBuf,
    link: String,
    slot: Option<Slot>,
    commit: Option<String>,
    #[serde(rename = "ref")]
    ref_name: Option<String>,
    live_since: Option<String>,
    /// The directory the link serves.
    path: Option<PathBuf>,
}

pub fn run(args: StatusArgs) -> Result<ExitCode, Error> {
    let repo = Repo::open(&super::repo_path(args.repo))?;
    let config = config::load(repo.path())?;
    let layout = Layout::new(&config);
    let live = layout.live()?;
    let record = match &live {
        Some(live) => history::read_record(&layout, live.slot)?,
        None => None,
    };
    let status = Status {
        target: config.target.clone(),
        link: config.link.clone(),
        slot: live.as_ref().map(|live| live.slot),
        commit: record.as_ref().map(|record| record.commit.clone()),
        ref_name: record.as_ref().map(|record| record.ref_name.clone()),
        live_since: record.as_ref().and_then(|record| record.live_since.clone()),
        path: live.as_ref().map(|live| config.target.join(&live.link_target)),
    };
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string(&status).expect("status serializes") + "\n";
    } else if let (Some(live), Some(path)) = (&live, &status.path) {
        let summary = status
            .commit
            .as_deref()
            .and_then(|hex| repo.resolve(hex).ok())
            .and_then(|commit| repo.summary(commit).ok())
            .map(|summary| format!(" {}", crate::report::escape(&summary)))
            .unwrap_or_default();
        let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".into());
        out.push_str(&format!("live:   {} -> {}\n", escape_path(&layout.link), escape_path(path)));
        out.push_str(&format!("slot:   {}\n", live.slot));
        out.push_str(&format!("commit: {}{summary}\n", field(&status.commit)));
        out.push_str(&format!("ref:    {}\n", crate::report::escape(&field(&status.ref_name))));
        out.push_str(&format!("since:  {}\n", field(&status.live_since)));
    } else {
        out = format!(
            "nothing is live yet in {}: push the branch {:?} to deploy\n",
            escape_path(&config.target),
            config.branch
        );
    }
    crate::report::stdout(&out);
    Ok(ExitCode::Success)
}
