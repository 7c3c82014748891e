//! Command-line interface: the subcommands and their flags.

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{
    badge, badge::BadgeArgs, deploy, deploy::DeployArgs, doctor, doctor::DoctorArgs, env,
    env::EnvArgs, hook, hook::HookArgs, init, init::InitArgs, log, log::LogArgs, logs,
    logs::LogsArgs, new_site, new_site::NewSiteArgs, reap, reap::ReapArgs, recorded, releases,
    releases::ReleasesArgs, rollback, rollback::RollbackArgs, serve, serve::ServeArgs, show,
    show::ShowArgs, status, status::StatusArgs, webhook_deploy, webhook_deploy::WebhookDeployArgs,
};
use crate::error::{Error, ExitCode};
use crate::notify::{self, NotifySendArgs};
use crate::report;
use crate::target_dir::history::Trigger;

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
    Releases(ReleasesArgs),
    Rollback(RollbackArgs),
    Doctor(DoctorArgs),
    Env(EnvArgs),
    NewSite(NewSiteArgs),
    Reap(ReapArgs),
    Serve(ServeArgs),
    #[command(hide = true)]
    WebhookDeploy(WebhookDeployArgs),
    Show(ShowArgs),
    Badge(BadgeArgs),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For example: `pushdeploy completions bash > /etc/bash_completion.d/pushdeploy`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page, pushdeploy(1), in roff.
    ///
    /// For example: `pushdeploy man > /usr/local/share/man/man1/pushdeploy.1`.
    Man,
    #[command(hide = true)]
    NotifySend(NotifySendArgs),
}

/// Parses the command line, exiting with clap's message and code 2 on a usage error.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    if matches!(
        cli.command,
        Command::Status(_)
            | Command::Log(_)
            | Command::Releases(_)
            | Command::Logs(_)
            | Command::Show(_)
            | Command::Badge(_)
            | Command::Doctor(_)
    ) {
        // These only read: root (or an operator) may look at the git user's site. libgit2
        // runs no program a repository's config names, and nothing is written.
        crate::git::trust_repository_owners();
    }
    match cli.command {
        Command::Init(args) => init::run(*args),
        Command::Hook(args) => recorded::run(None, Trigger::Push, || hook::run(args)),
        Command::Deploy(args) => {
            recorded::run(args.repo.clone(), Trigger::Deploy, || deploy::run(args))
        }
        Command::Status(args) => status::run(args),
        Command::Log(args) => log::run(args),
        Command::Releases(args) => releases::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Env(args) => env::run(args),
        Command::Serve(args) => serve::run(args),
        Command::WebhookDeploy(args) => {
            recorded::run(Some(args.repo.clone()), Trigger::Webhook, || webhook_deploy::run(args))
        }
        Command::Rollback(args) => {
            recorded::run(args.repo.clone(), Trigger::Rollback, || rollback::run(args))
        }
        Command::NewSite(args) => new_site::run(args),
        Command::Reap(args) => reap::run(args),
        Command::Show(args) => show::run(args),
        Command::Badge(args) => badge::run(args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pushdeploy", &mut out);
            report::stdout(&String::from_utf8_lossy(&out));
            Ok(ExitCode::Success)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out).map_err(|err| {
                Error::user("cannot render the man page", "report this as a bug").cause(err)
            })?;
            report::stdout(&String::from_utf8_lossy(&out));
            Ok(ExitCode::Success)
        }
        Command::NotifySend(args) => notify::run(args),
    }
}
