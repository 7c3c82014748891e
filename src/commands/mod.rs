//! One module per subcommand; `run` dispatches.

pub mod deploy;
pub mod doctor;
pub mod hook;
pub mod init;
pub mod log;
pub mod new_site;
pub mod reap;
pub mod rollback;
pub mod status;

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::error::{Error, ExitCode};
use crate::git::Repo;
use crate::target::Layout;

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Hook(args) => hook::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Status(args) => status::run(args),
        Command::Log(args) => log::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Rollback(args) => rollback::run(args),
        Command::NewSite(args) => new_site::run(args),
        Command::Reap(args) => reap::run(args),
    }
}

/// Returns the repository a command acts on: `--repo`, else `GIT_DIR` (set when git runs a
/// hook), else the current directory.
pub fn repo_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GIT_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A site a command acts on: its bare repository, its configuration, its target's layout.
pub struct Site {
    pub repo: Repo,
    pub config: Config,
    pub layout: Layout,
}

/// Opens the site of `--repo` (else `GIT_DIR`, else the current directory): the repository and
/// the configuration in it.
pub fn open_site(flag: Option<PathBuf>) -> Result<Site, Error> {
    let repo = Repo::open(&repo_path(flag))?;
    let config = config::load(repo.path())?;
    let layout = Layout::new(&config);
    Ok(Site { repo, config, layout })
}
