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
use crate::error::{Error, ExitCode};

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
