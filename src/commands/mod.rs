//! One module per subcommand (`cli` dispatches to their `run`), and opening the site they act on.

pub mod badge;
pub mod deploy;
pub mod doctor;
pub mod env;
pub mod hook;
pub mod init;
pub mod init_app;
mod init_rerun;
pub mod log;
pub mod logs;
pub mod new_site;
pub mod reap;
pub mod recorded;
pub mod releases;
pub mod rollback;
pub mod serve;
pub mod show;
pub mod status;
mod status_app;
pub mod webhook_deploy;

use std::path::PathBuf;

use crate::config::{self, Config};
use crate::error::Error;
use crate::git::Repo;
use crate::report;
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

/// Opens the repository of `--repo` (else `GIT_DIR`, else the current directory). A
/// repository another user owns is refused (see [`crate::git::trust_repository_owners`] for
/// the commands that only read), with the command line to run as its owner; a hint never
/// says to pass `--repo` when it was passed.
pub fn open_repo(flag: Option<PathBuf>) -> Result<Repo, Error> {
    let given = flag.is_some();
    let path = repo_path(flag);
    Repo::open(&path).map_err(|err| {
        if err.is_not_owned() {
            return not_owned(&path);
        }
        let error = Error::from(err);
        match given {
            true => Error::new(crate::error::Kind::Git, error.to_string()).hint(format!(
                "check that {} is the bare repository `pushdeploy init` made",
                report::escape_path(&path)
            )),
            false => error,
        }
    })
}

/// Returns the error for a repository another user owns: who owns it, and this very command
/// line run as that user.
fn not_owned(path: &std::path::Path) -> Error {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(path).map(|meta| meta.uid()).unwrap_or_default();
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |user| user.name)
    };
    let me = nix::unistd::geteuid().as_raw();
    let command: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, arg)| if i == 0 { "pushdeploy".to_owned() } else { shell_word(&arg) })
        .collect();
    Error::user(
        format!(
            "{} is owned by {} (uid {owner}), not by this user ({}, uid {me}); pushdeploy acts on a repository only as its owner, who runs the deploys",
            report::escape_path(path),
            name(owner),
            name(me)
        ),
        format!(
            "run it as {}: sudo -u {} {}",
            name(owner),
            shell_word(&name(owner)),
            command.join(" ")
        ),
    )
}

/// Returns `word` as one shell word: as it is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

/// Opens the site of `--repo` (else `GIT_DIR`, else the current directory): the repository and
/// the configuration in it.
pub fn open_site(flag: Option<PathBuf>) -> Result<Site, Error> {
    let repo = open_repo(flag)?;
    let config = config::load(repo.path())?;
    let layout = Layout::new(&config);
    Ok(Site { repo, config, layout })
}
