//! pushdeploy: zero-downtime blue/green deploys of a site on `git push`.

mod app;
mod cli;
mod commands;
mod config;
mod deploy;
mod error;
mod git;
mod notify;
mod previews;
mod release;
mod report;
mod target_dir;
mod templates;
mod webhook;

use std::process::ExitCode;

fn main() -> ExitCode {
    git::configure_libgit2();
    report::init_tracing();
    let cli = cli::parse();
    match cli::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            err.print();
            err.exit_code().into()
        }
    }
}
