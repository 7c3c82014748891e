//! Command-line interface: the subcommands and their flags.

use clap::{Parser, Subcommand};

use crate::commands::{
    deploy, deploy::DeployArgs, doctor, doctor::DoctorArgs, env, env::EnvArgs, hook,
    hook::HookArgs, init, init::InitArgs, log, log::LogArgs, logs, logs::LogsArgs, new_site,
    new_site::NewSiteArgs, reap, reap::ReapArgs, rollback, rollback::RollbackArgs, serve,
    serve::ServeArgs, status, status::StatusArgs, webhook_deploy,
    webhook_deploy::WebhookDeployArgs,
};
use crate::error::{Error, ExitCode};

/// Zero-downtime deploys of a site on `git push`.
///
/// pushdeploy runs as the post-receive hook of a bare repository. On each push of the deploy
/// branch it writes the pushed commit into whichever of TARGET/blue or TARGET/green is not
/// live, runs the build, switches the served symlink (TARGET/public_html) with one atomic
/// rename, and removes the old release. A failure before the switch leaves the live site as it
/// was.
///
/// Set PUSHDEPLOY_LOG (e.g. `debug`) for operator tracing on stderr.
#[derive(Debug, Parser)]
#[command(name = "pushdeploy", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: its arguments are much larger than the other commands'.
    Init(Box<InitArgs>),
    Hook(HookArgs),
    Deploy(DeployArgs),
    Status(StatusArgs),
    Log(LogArgs),
    Logs(LogsArgs),
    Rollback(RollbackArgs),
    Doctor(DoctorArgs),
    Env(EnvArgs),
    NewSite(NewSiteArgs),
    Reap(ReapArgs),
    Serve(ServeArgs),
    #[command(hide = true)]
    WebhookDeploy(WebhookDeployArgs),
}

/// Parses the command line, exiting with clap's message and code 2 on a usage error.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Init(args) => init::run(*args),
        Command::Hook(args) => hook::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Status(args) => status::run(args),
        Command::Log(args) => log::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Env(args) => env::run(args),
        Command::Rollback(args) => rollback::run(args),
        Command::NewSite(args) => new_site::run(args),
        Command::Reap(args) => reap::run(args),
        Command::Serve(args) => serve::run(args),
        Command::WebhookDeploy(args) => webhook_deploy::run(args),
    }
}
