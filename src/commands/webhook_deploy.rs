//! `pushdeploy webhook-deploy`: what `serve` runs, once a delivery's branch is fetched.

use std::path::PathBuf;

use clap::Args;

use crate::deploy::{self, Options, Request};
use crate::error::{Error, ExitCode};
use crate::previews;
use crate::report::{self, escape};
use crate::target_dir::history::Trigger;

/// Deploys the fetched tip of a branch for `pushdeploy serve` (not meant to be run by hand:
/// use `pushdeploy deploy`). Runs as a push would: under the lock, skipped if a newer fetch
/// or push moved the branch meanwhile, recorded with the trigger `webhook`.
#[derive(Debug, Args)]
pub struct WebhookDeployArgs {
    /// The bare repository
    #[arg(long, value_name = "REPO")]
    pub repo: PathBuf,
    /// The branch that was fetched
    #[arg(long, value_name = "BRANCH")]
    branch: String,
}

pub fn run(args: WebhookDeployArgs) -> Result<ExitCode, Error> {
    let super::Site { repo, config, .. } = super::open_site(Some(args.repo))?;
    if args.branch != config.branch {
        if previews::previewed(&config, &args.branch).is_none() {
            return Err(Error::user(
                format!(
                    "{} is neither the deploy branch {:?} nor a preview's",
                    escape(&args.branch),
                    config.branch
                ),
                "only the deploy branch and `[previews] branches` deploy from a webhook",
            ));
        }
        return match repo.ref_target(&format!("refs/heads/{}", args.branch))? {
            Some(commit) => previews::deploy(
                &config,
                &repo,
                &args.branch,
                commit,
                Options::default(),
                Trigger::Webhook,
            ),
            None => previews::remove(&config, &args.branch),
        };
    }
    let ref_name = config.branch_ref();
    let Some(commit) = repo.ref_target(&ref_name)? else {
        report::line(&format!("nothing to deploy: {} does not exist", escape(&ref_name)));
        return Ok(ExitCode::Success);
    };
    let request = Request {
        commit,
        ref_name,
        // Another delivery (or a push) may move the branch while this one waits for the lock.
        skip_if_superseded: true,
        options: Options::default(),
        trigger: Trigger::Webhook,
    };
    deploy::deploy(&config, &repo, &request)
}
