//! `pushdeploy init` run again on a repository already set up: without `--target` it keeps the
//! configuration as it is (and rewrites the hooks), and a configuration that differs only in
//! comments is no reason to refuse.

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{self, Config};
use crate::error::Error;
use crate::report::escape_path;

/// Returns the configuration already in REPO, kept as it is, for `init REPO` without
/// `--target`: what it needs to rewrite the hooks.
pub fn existing_config(repo: &Path, app: bool) -> Result<(PathBuf, String, Config), Error> {
    let path = repo.join(config::FILE_NAME);
    if app {
        return Err(Error::user(
            "--app needs --target DIR",
            "pass --target with the site's target",
        ));
    }
    let text = fs::read_to_string(&path).map_err(|err| {
        Error::user(
            format!("{} cannot be read ({err}), and no --target was given", escape_path(&path)),
            "pass --target DIR to set the repository up",
        )
    })?;
    let config = config::parse(&path, &text).map_err(|err| {
        Error::user(
            format!("{err}"),
            format!("fix {} first; init without --target keeps it as it is", escape_path(&path)),
        )
    })?;
    Ok((config.target.clone(), text, config))
}

/// Tells whether two configuration texts say the same: equal as TOML tables, whatever their
/// comments, blank lines and formatting.
pub fn same_toml(old: &[u8], new: &str) -> bool {
    let table = |text: &str| text.parse::<toml::Table>().ok();
    std::str::from_utf8(old).ok().and_then(table).is_some_and(|old| Some(old) == table(new))
}
