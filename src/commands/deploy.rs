//! `pushdeploy deploy`: the manual re-run.

use std::path::PathBuf;

use clap::Args;

use crate::deploy::{self, Options, Request};
use crate::error::{Error, ExitCode};
use crate::target_dir::history::Trigger;

/// Deploys a revision by hand, exactly as a push of the deploy branch would.
///
/// Without REV, deploys the tip of the deploy branch (after fixing a build, say). With REV (a
/// branch, tag or commit id), deploys that commit.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The revision to deploy [default: the deploy branch's tip]
    #[arg(value_name = "REV")]
    rev: Option<String>,
    /// Build without the build cache (the fresh result becomes the new cache)
    #[arg(long)]
    no_cache: bool,
    /// Do not run the configured build
    #[arg(long)]
    skip_build: bool,
    /// Write and build the release, then stop before the switch (the live site is unchanged)
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: DeployArgs) -> Result<ExitCode, Error> {
    let super::Site { repo, config, .. } = super::open_site(args.repo)?;
    let ref_name = args.rev.unwrap_or_else(|| config.branch_ref());
    if ref_name == config.branch_ref() && repo.ref_target(&ref_name)?.is_none() {
        return Err(Error::user(
            format!(
                "the branch {:?} has no commits in {} yet",
                config.branch,
                repo.path().display()
            ),
            format!("push it first: git push production {}", config.branch),
        ));
    }
    let options =
        Options { no_cache: args.no_cache, skip_build: args.skip_build, dry_run: args.dry_run };
    // What the tip (or any named revision) means is read once the lock is ours: a push that
    // goes live while this waits must not be followed by its older commit.
    let (layout, _lock) = deploy::lock_target(&config)?;
    let commit = repo.resolve(&ref_name)?;
    let request =
        Request { commit, ref_name, skip_if_superseded: false, options, trigger: Trigger::Deploy };
    deploy::deploy_locked(&config, &repo, &layout, &request)
}
