//! `pushdeploy rollback`: back to the previous good release.

use std::path::PathBuf;

use clap::Args;

use crate::config::{self, Config};
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::pipeline::{self, Options, Request};
use crate::target::Layout;
use crate::target::history;

/// Goes back to the previous successful release, or to REV.
///
/// With `[retire] keep_previous = true` the previous release is still in the other slot, and
/// rollback is instant: one rename, no rebuild. Otherwise the commit is deployed again through
/// the normal pipeline (materialize, build, switch). Either way it is recorded in the history
/// like any deploy. Failed deploys never count as releases to go back to.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
    /// The revision to go back to [default: the release live before the current one]
    #[arg(value_name = "REV")]
    rev: Option<String>,
}

pub fn run(args: RollbackArgs) -> Result<ExitCode, Error> {
    let repo = Repo::open(&super::repo_path(args.repo))?;
    let config = config::load(repo.path())?;
    rollback(&config, &repo, args.rev.as_deref(), Options::default())
}

/// Rolls back to `rev`, or to the previous successful release.
pub fn rollback(
    config: &Config,
    repo: &Repo,
    rev: Option<&str>,
    options: Options,
) -> Result<ExitCode, Error> {
    // The release to go back to is chosen under the lock: one that went live while this
    // waited is what a rollback goes back from.
    let (layout, _lock) = pipeline::lock_target(config)?;
    let (commit, ref_name) = match rev {
        Some(rev) => (repo.resolve(rev)?, rev.to_owned()),
        None => previous_release(&layout)?,
    };
    if let Some(code) = pipeline::switch_to_kept(config, repo, &layout, commit)? {
        return Ok(code);
    }
    let request =
        Request { commit, ref_name, skip_if_superseded: false, options, trigger: "rollback" };
    pipeline::deploy_locked(config, repo, layout, &request)
}

/// Returns the newest successful deploy whose commit is not the live one, and its ref.
fn previous_release(layout: &Layout) -> Result<(CommitId, String), Error> {
    let live = match layout.live()? {
        Some(live) => history::read_record(layout, live.slot)?.map(|record| record.commit),
        None => None,
    };
    history::read_all(layout)?
        .into_iter()
        .rev()
        .filter(|entry| entry.result == "live" && Some(&entry.commit) != live.as_ref())
        .find_map(|entry| CommitId::from_hex(&entry.commit).map(|commit| (commit, entry.ref_name)))
        .ok_or_else(|| {
            Error::user(
                "there is no earlier successful deploy to roll back to",
                "name the commit to go back to: `pushdeploy rollback REV`",
            )
        })
}
