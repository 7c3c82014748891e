//! pushdeploy: zero-downtime blue/green deploys of a site on `git push`.

mod build;
mod cache;
mod check;
mod cli;
mod commands;
mod config;
mod error;
mod git;
mod grace;
mod history;
mod index;
mod lock;
mod pipeline;
mod release;
mod report;
mod templates;

use std::process::ExitCode;

fn main() -> ExitCode {
    git::configure_libgit2();
    report::init_tracing();
    let cli = cli::parse();
    match commands::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            report::error(&err);
            err.exit_code().into()
        }
    }
}
