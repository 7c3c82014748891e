//! `pushdeploy rollback`: back to the previous good release.

use std::path::PathBuf;

use clap::Args;

use crate::deploy::{Options, rollback};
use crate::error::{Error, ExitCode};

/// Goes back to the previous successful release, or to REV.
///
/// With `[retire] keep_previous = true` the previous release is still in the other slot, and
/// rollback is instant: one rename, no rebuild; with `[retire] keep = N` so are the N - 2
/// before it (`pushdeploy releases` lists them). Rolling back twice goes two releases back. Otherwise the commit is deployed again through
/// the normal pipeline (materialize, build, switch). Either way it is recorded in the history
/// like any deploy. Failed deploys never count as releases to go back to.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The revision to go back to [default: the release live before the current one]
    #[arg(value_name = "REV")]
    rev: Option<String>,
    /// Go N releases back from the live one, by the order they were first deployed (a
    /// rollback of a rollback goes further back)
    #[arg(long, value_name = "N", conflicts_with = "rev", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
}

pub fn run(args: RollbackArgs) -> Result<ExitCode, Error> {
    let site = super::open_site(args.repo)?;
    let steps = args.steps as usize;
    rollback::rollback_steps(
        &site.config,
        &site.repo,
        args.rev.as_deref(),
        steps,
        Options::default(),
    )
}
