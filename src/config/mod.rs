//! `REPO/pushdeploy.toml`: the file's serde types, validation, and defaults.
//!
//! The file is parsed into [`raw`] types that mirror it (with spans, so errors can name the
//! line), then each key or table is validated by its function in [`keys`] into [`Config`],
//! which is all the pipeline ever reads; [`check`] holds the rules that know the filesystem
//! rather than TOML. A new table is one more optional field in `raw::File`, one more function
//! in `keys` and one more field in `Config`.

mod app;
mod app_proxy;
mod app_raw;
mod check;
mod keys;
mod previews;
mod raw;
mod reporting;
mod tables_raw;
mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use app::{App, Proxy, ProxyKind, Strategy, default_env_dir, default_unit_name, env_problem};
pub use previews::Previews;
use raw::Source;
pub use raw::toml_string;
pub use reporting::{LogBounds, Notify};
pub use webhook::{MIN_SECRET_LEN, Provider, Secret, Webhook};

/// The configuration file's name inside the bare repository.
pub const FILE_NAME: &str = "pushdeploy.toml";
/// The deploy branch when the file names none.
pub const DEFAULT_BRANCH: &str = "main";
/// The link name when the file names none.
pub const DEFAULT_LINK: &str = "public_html";
/// How long a build may run when the file does not say.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The umask when the file names none.
pub const DEFAULT_UMASK: u32 = 0o022;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// The branch whose pushes deploy (short name, e.g. `main`).
    pub branch: String,
    /// The absolute directory that holds the slots, the link and the state.
    pub target: PathBuf,
    /// The link's file name inside `target`.
    pub link: String,
    /// The umask releases are written with (and the build runs with).
    pub umask: u32,
    /// Which symlinks a pushed tree may hold.
    pub symlinks: SymlinkPolicy,
    /// Which hook deploys.
    pub mode: Mode,
    /// What a submodule (a gitlink with a `.gitmodules` entry) deploys as.
    pub submodules: SubmodulePolicy,
    pub build: Build,
    pub retire: Retire,
    /// The `[app]` table: an app run by systemd behind a proxy, rather than a site alone.
    pub app: Option<App>,
    /// The `[webhook]` table: deploys of pushes to a hosted repository, via `pushdeploy serve`.
    pub webhook: Option<Webhook>,
    /// The `[previews]` table: branches deployed each into `TARGET/previews/<slug>/`.
    pub previews: Option<Previews>,
    /// Set on the configuration of a preview (derived from production's): the preview's slug.
    /// A preview leaves the repository's deploy refs to production.
    pub preview_of: Option<String>,
    /// `[logs]`: how many runs' output is kept in `TARGET/.pushdeploy/logs/`.
    pub logs: LogBounds,
    /// `[notify]`: who is told how a deploy ended.
    pub notify: Notify,
}

/// Which symlinks a pushed tree may hold: `symlinks = "inside"` (the default) or `"none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SymlinkPolicy {
    /// Symlinks that resolve inside the release.
    #[default]
    Inside,
    /// No symlinks at all.
    None,
}

/// What a submodule deploys as: `submodules = "fetch"` (the default) or `"skip"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubmodulePolicy {
    /// Its files at the pinned commit, fetched from the URL in `.gitmodules` into a cache.
    #[default]
    Fetch,
    /// An empty directory, as `git archive` makes it, with a warning.
    Skip,
}

/// The `[retire]` table: what happens to the release that stops being live.
#[derive(Debug, Clone)]
pub struct Retire {
    /// How long files of the old release that the new one lacks stay reachable under the link
    /// (skew protection). Zero retires the old release at once.
    pub grace: Duration,
    /// Keep the previous release in its slot until the next deploy, for an instant rollback
    /// (`keep_previous = true`, or `keep` of 2 or more).
    pub keep_previous: bool,
    /// How many releases are kept, the live one included (`keep`; 2 with `keep_previous`, 1
    /// without either): those beyond the live and the previous one wait in
    /// `.pushdeploy/kept/` for `pushdeploy rollback`.
    pub keep: usize,
}

impl Default for Retire {
    fn default() -> Retire {
        Retire { grace: Duration::ZERO, keep_previous: false, keep: 1 }
    }
}

/// Which hook deploys: `post-receive` (the push is accepted first) or `pre-receive` (a failed
/// deploy rejects the push, and the branch does not move).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    PostReceive,
    PreReceive,
}

impl Mode {
    /// Returns the mode's name, as the file spells it (and as the hook is named).
    pub fn name(self) -> &'static str {
        match self {
            Mode::PostReceive => "post-receive",
            Mode::PreReceive => "pre-receive",
        }
    }
}

/// The `[build]` table.
#[derive(Debug, Clone, Default)]
pub struct Build {
    /// Run by `sh -c` in the new release directory.
    pub command: Option<String>,
    /// The subdirectory of the release the link points at.
    pub publish: Option<PathBuf>,
    pub timeout: Duration,
    /// Paths in the release kept between builds (e.g. `resources/_gen`).
    pub cache: Vec<PathBuf>,
    /// Extra environment for the build, applied after pushdeploy's own variables.
    pub env: BTreeMap<String, String>,
    /// Lets the build read the git history of the release's commit (`git log` in the release).
    pub git_history: bool,
    /// Lets a build publish a directory without an `index.html` (an API's JSON files, say);
    /// otherwise that fails verify, since `/` would answer with an error.
    pub allow_no_index: bool,
}

impl Config {
    /// Returns the full name of the deploy branch's ref.
    pub fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// Returns the path of the link.
    pub fn link_path(&self) -> PathBuf {
        self.target.join(&self.link)
    }

    /// Tells whether releases are written writable by every user, which validation allows only
    /// with `world_writable = true`.
    pub fn releases_world_writable(&self) -> bool {
        check::lets_others_write(self.umask)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: line {line}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, message: String },
}

impl Error {
    /// Returns what to do about the error.
    pub fn hint(&self) -> String {
        match self {
            Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "run `pushdeploy init REPO --target DIR` to set this repository up, or pass --repo"
                    .into()
            }
            Error::Read { .. } => "check the file's permissions".into(),
            Error::Invalid { path, .. } => format!("fix {} and try again", path.display()),
        }
    }
}

/// Reads and validates `REPO/pushdeploy.toml`.
pub fn load(repo: &Path) -> Result<Config, Error> {
    let path = repo.join(FILE_NAME);
    let text = std::fs::read_to_string(&path)
        .map_err(|source| Error::Read { path: path.clone(), source })?;
    parse(&path, &text)
}

/// Validates the text of a configuration file; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
    let source = Source { path, text };
    let file = source.file()?;
    let target_span = file.target.span();
    let branch = keys::branch(source, file.branch)?;
    let (target, link) = keys::target_and_link(source, file.target, file.link)?;
    let umask = keys::umask(source, file.umask, file.world_writable)?;
    let build = keys::build(source, file.build)?;
    let retire = keys::retire(source, file.retire)?;
    let app = app::app(source, file.app, &target, target_span)?;
    let webhook = webhook::webhook(source, file.webhook)?;
    let previews = previews::previews(source, file.previews, app.is_some())?;
    let logs = reporting::logs(source, file.logs)?;
    let notify = reporting::notify(source, file.notify)?;
    Ok(Config {
        path: path.to_owned(),
        branch,
        target,
        link,
        umask,
        symlinks: file.symlinks.unwrap_or_default(),
        mode: file.mode.unwrap_or_default(),
        submodules: file.submodules.unwrap_or_default(),
        build,
        retire,
        app,
        webhook,
        previews,
        preview_of: None,
        logs,
        notify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the error `parse` gives for `text` in a repository at `/r`.
    pub(super) fn parse_err(text: &str) -> String {
        parse(Path::new("/r/pushdeploy.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_in() {
        let config = parse(Path::new("p"), "target = \"/srv/www\"\n").unwrap();
        assert_eq!(config.branch, "main");
        assert_eq!(config.link, "public_html");
        assert_eq!(config.umask, 0o022);
        assert_eq!(config.build.timeout, DEFAULT_BUILD_TIMEOUT);
        assert!(config.build.command.is_none());
    }
}
