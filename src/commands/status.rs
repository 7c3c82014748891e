//! `pushdeploy status`: what is live.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::error::{Error, ExitCode};
use crate::git::CommitId;
use crate::report::escape_path;
use crate::target_dir::{Slot, record};

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
    commit: Option<CommitId>,
    #[serde(rename = "ref")]
    ref_name: Option<String>,
    live_since: Option<String>,
    /// The directory the link serves.
    path: Option<PathBuf>,
    /// An app's instances and proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<super::status_app::AppStatus>,
}

pub fn run(args: StatusArgs) -> Result<ExitCode, Error> {
    let super::Site { repo, config, layout } = super::open_site(args.repo)?;
    let live = layout.live()?;
    let record = match &live {
        Some(live) => record::read(&layout, live.slot)?,
        None => None,
    };
    let status = Status {
        target: config.target.clone(),
        link: config.link.clone(),
        slot: live.as_ref().map(|live| live.slot),
        commit: record.as_ref().map(|record| record.commit),
        ref_name: record.as_ref().map(|record| record.ref_name.clone()),
        live_since: record.as_ref().and_then(|record| record.live_since.clone()),
        path: live.as_ref().map(|live| config.target.join(&live.link_target)),
        app: config.app.as_ref().map(|app| {
            super::status_app::status(app, &config.target, live.as_ref().map(|live| live.slot))
        }),
    };
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string(&status).expect("status serializes") + "\n";
    } else if let (Some(live), Some(path)) = (&live, &status.path) {
        let summary = status
            .commit
            .and_then(|commit| repo.summary(commit).ok())
            .map(|summary| format!(" {}", crate::report::escape(&summary)))
            .unwrap_or_default();
        let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".into());
        out.push_str(&format!("live:   {} -> {}\n", escape_path(&layout.link), escape_path(path)));
        out.push_str(&format!("slot:   {}\n", live.slot));
        let commit = status.commit.map(|commit| commit.hex());
        out.push_str(&format!("commit: {}{summary}\n", field(&commit)));
        out.push_str(&format!("ref:    {}\n", crate::report::escape(&field(&status.ref_name))));
        out.push_str(&format!("since:  {}\n", field(&status.live_since)));
        if let (Some(app), Some(app_status)) = (&config.app, &status.app) {
            out.push_str(&super::status_app::text(app, app_status));
        }
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
