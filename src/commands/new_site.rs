//! `pushdeploy new-site`: start a site from a template.

use std::path::PathBuf;

use clap::Args;

use crate::config;
use crate::error::{Error, ExitCode};
use crate::git::Repo;
use crate::report::{self, escape_path};
use crate::templates::Template;

/// Creates a new site from a template, as a git repository ready to push.
///
/// Writes the template's files into DIR (which must not exist or be empty), makes DIR a git
/// repository on the deploy branch with one commit, and with --remote adds the remote
/// `production`. Then: `git -C DIR push production main`. Set the server's repository up with
/// `pushdeploy init REPO --target DIR --template TEMPLATE` so it builds the site the same way.
#[derive(Debug, Args)]
pub struct NewSiteArgs {
    /// The template to start from
    #[arg(value_enum, value_name = "TEMPLATE")]
    template: Template,
    /// The directory to create the site in
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The branch of the first commit
    #[arg(long, value_name = "BRANCH", default_value = config::DEFAULT_BRANCH)]
    branch: String,
    /// Adds this URL (or path) as the remote `production`
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
}

pub fn run(args: NewSiteArgs) -> Result<ExitCode, Error> {
    let shown = escape_path(&args.dir);
    let occupied = std::fs::read_dir(&args.dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || args.dir.is_file() {
        return Err(Error::user(
            format!("{shown} already exists and is not empty; nothing was written"),
            "choose a new directory for the site",
        ));
    }
    let files = args.template.write_to(&args.dir).map_err(|err| {
        Error::user(
            format!("cannot write the site into {shown}"),
            "check the directory's permissions",
        )
        .cause(err)
    })?;
    let template = format!("{:?}", args.template).to_lowercase();
    let commit = Repo::init_with_commit(
        &args.dir,
        &args.branch,
        &format!("New site from the {template} template"),
    )?;
    report::line(&format!(
        "wrote {files} files of the {template} template into {shown} and committed them as {}",
        commit.short()
    ));
    match &args.remote {
        Some(url) => {
            Repo::add_remote(&args.dir, "production", url)?;
            report::line(&format!("next: git -C {shown} push production {}", args.branch));
        }
        None => report::line(&format!(
            "next: git -C {shown} remote add production SERVER:REPO && git -C {shown} push production {}",
            args.branch
        )),
    }
    Ok(ExitCode::Success)
}
