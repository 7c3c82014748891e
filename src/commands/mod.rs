//! One module per subcommand (`cli` dispatches to their `run`), and opening the site they act on.

pub mod deploy;
pub mod doctor;
pub mod hook;
pub mod init;
pub mod init_app;
pub mod log;
pub mod new_site;
pub mod reap;
pub mod recorded;
pub mod rollback;
pub mod show;
pub mod status;
mod status_app;

use std::path::PathBuf;

use crate::config::{self, Config};
use crate::error::Error;
use crate::git::Repo;
use crate::target_dir::Layout;

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
