//! The build's environment: what it is building and where, cache directories for Hugo, npm
//! and pip kept with the target, and with `[build] git_history` a git view of the release's
//! commit.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Failure, RETRY, Run};
use crate::git::CommitId;
use crate::report::escape_path;
use crate::target_dir::history::Stage;
use crate::target_dir::layout::{TOOL_CACHES, make_state_dir};
use crate::target_dir::slots::remove_path;
use crate::target_dir::{self, Layout};

/// The file in the release that makes it a work tree of the build's git directory.
const GIT_LINK: &str = ".git";

/// Returns the build's environment: what it is building and where, the tools' cache
/// directories (`HUGO_CACHEDIR`, `npm_config_cache`, `PIP_CACHE_DIR`), then `[build.env]`.
/// Creates the directories it names, and the git view of `git_history`.
pub(super) fn build_env(run: &Run<'_>, dir: &Path) -> Result<Vec<(String, String)>, Failure> {
    let Run { config, repo, layout, request, slot, .. } = *run;
    // libgit2 spells a bare repository's path with a trailing slash.
    let repo_path: PathBuf = repo.path().components().collect();
    let mut env = vec![
        ("PUSHDEPLOY_COMMIT".to_owned(), request.commit.hex()),
        ("PUSHDEPLOY_REF".to_owned(), request.ref_name.clone()),
        ("PUSHDEPLOY_BRANCH".to_owned(), config.branch.clone()),
        ("PUSHDEPLOY_SLOT".to_owned(), slot.name().to_owned()),
        ("PUSHDEPLOY_RELEASE_DIR".to_owned(), dir.to_string_lossy().into_owned()),
        ("PUSHDEPLOY_TARGET".to_owned(), layout.target.to_string_lossy().into_owned()),
        ("PUSHDEPLOY_REPO".to_owned(), repo_path.to_string_lossy().into_owned()),
    ];
    // Each tool's cache is the target's own, never a shared or the git user's one. Without
    // `HUGO_CACHEDIR` Hugo caches in `$TMPDIR/hugo_cache/<directory name>`, and that name is
    // `blue` or `green` for every site: whichever user builds first owns it, and every other
    // user's build then fails with `permission denied`. npm and pip would fill the git user's
    // home (`~/.npm`, `~/.cache/pip`) with every site's downloads.
    for (tool, var) in TOOL_CACHES {
        if !sets_var(&config.build.env, var) {
            let dir = tool_cache_dir(layout, tool)?;
            env.push((var.to_owned(), dir.to_string_lossy().into_owned()));
        }
    }
    if config.build.git_history {
        link_git_history(layout, &repo_path, request.commit, dir)?;
    }
    env.extend(config.build.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

/// Says whether `[build.env]` sets `var`. npm reads its `npm_config_*` variables in any case
/// (`NPM_CONFIG_CACHE` too), so for those any spelling counts.
fn sets_var(env: &BTreeMap<String, String>, var: &str) -> bool {
    if var.starts_with("npm_config_") {
        env.keys().any(|key| key.eq_ignore_ascii_case(var))
    } else {
        env.contains_key(var)
    }
}

/// Returns the cache directory of `tool` in the state directory, created when missing.
fn tool_cache_dir(layout: &Layout, tool: &str) -> Result<PathBuf, Failure> {
    let tools = layout.tool_caches();
    let dir = tools.join(tool);
    make_state_dir(&tools).and_then(|()| make_state_dir(&dir)).map_err(|err| {
        let reason = format!("cannot prepare the build's cache directory: {err}");
        Failure::new(Stage::Build, reason, state_hint(&err))
    })?;
    Ok(dir)
}

/// Makes `dir` a work tree of `commit` for the build, so that `git log` there (Hugo's
/// `enableGitInfo`) sees the commit's history: `dir/.git` names `TARGET/.pushdeploy/build.git`,
/// a git directory made afresh for each build, whose HEAD is `commit` and whose objects are
/// the repository's, read through an alternate.
///
/// Not `GIT_DIR` set to the repository: its HEAD is the branch tip, not the commit a `deploy
/// REV` or a rollback builds; what git writes (a commit, a fetch, a gc) would land in it; a
/// `git` the build runs for another repository would act on it; and current Hugo (0.168, not
/// 0.111) passes no `GIT_*` variable to the git it runs (its `security.exec.osEnv`). A `.git`
/// file is found by every git that runs in the release, and only there.
fn link_git_history(
    layout: &Layout,
    repo: &Path,
    commit: CommitId,
    dir: &Path,
) -> Result<(), Failure> {
    let git_dir = layout.build_git_dir();
    let io_failure = |path: &Path, err: io::Error| {
        let reason = format!(
            "cannot prepare the git history for the build (`build.git_history`): {}: {err}",
            escape_path(path)
        );
        Failure::new(Stage::Build, reason, RETRY)
    };
    // Afresh, so that nothing an earlier build wrote there (objects, refs, links) is reused.
    remove_path(&git_dir).and_then(|()| make_state_dir(&git_dir)).map_err(|err| {
        let reason = format!("cannot prepare the git history for the build: {err}");
        Failure::new(Stage::Build, reason, state_hint(&err))
    })?;
    let mut alternates = format!("{}\n", repo.join("objects").display());
    // In a pre-receive hook the pushed objects are still in git's quarantine.
    if let Some(quarantine) = std::env::var_os("GIT_QUARANTINE_PATH") {
        alternates.push_str(&format!("{}\n", Path::new(&quarantine).display()));
    }
    let files = [
        ("objects/info/alternates", alternates),
        ("HEAD", format!("{}\n", commit.hex())),
        ("config", "[core]\n\trepositoryformatversion = 0\n\tbare = false\n".to_owned()),
    ];
    for sub in ["objects/info", "refs"] {
        let path = git_dir.join(sub);
        fs::create_dir_all(&path).map_err(|err| io_failure(&path, err))?;
    }
    for (name, text) in files {
        let path = git_dir.join(name);
        write_new(&path, &text).map_err(|err| io_failure(&path, err))?;
    }
    let link = dir.join(GIT_LINK);
    write_new(&link, &format!("gitdir: {}\n", git_dir.display()))
        .map_err(|err| io_failure(&link, err))
}

/// Removes the `.git` file `link_git_history` put into the release, so that it is never
/// served (a release without `publish` is served whole). Anything else the build left there
/// is the build's output, checked like the rest of it.
pub(super) fn unlink_git_history(dir: &Path) -> Result<(), Failure> {
    let link = dir.join(GIT_LINK);
    match fs::symlink_metadata(&link) {
        Ok(meta) if meta.is_file() => fs::remove_file(&link).map_err(|err| {
            let reason = format!("cannot remove {}: {err}", escape_path(&link));
            Failure::new(Stage::Build, reason, RETRY)
        }),
        _ => Ok(()),
    }
}

/// Writes `text` into a new file at `path`; an existing file or link there is an error, so
/// nothing is written through a link.
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    OpenOptions::new().write(true).create_new(true).open(path)?.write_all(text.as_bytes())
}

/// Returns what to do about a state directory `make_state_dir` refused or could not make.
fn state_hint(err: &target_dir::Error) -> String {
    match err {
        target_dir::Error::StateDir { hint, .. } => hint.clone(),
        _ => RETRY.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_env_overrides_npms_cache_in_any_case_and_the_others_exactly() {
        let env = |key: &str| BTreeMap::from([(key.to_owned(), "/elsewhere".to_owned())]);
        assert!(sets_var(&env("NPM_CONFIG_CACHE"), "npm_config_cache"));
        assert!(sets_var(&env("npm_config_cache"), "npm_config_cache"));
        assert!(!sets_var(&env("npm_config_offline"), "npm_config_cache"));
        assert!(sets_var(&env("PIP_CACHE_DIR"), "PIP_CACHE_DIR"));
        // pip reads only the upper-case name: a lower-case one sets nothing.
        assert!(!sets_var(&env("pip_cache_dir"), "PIP_CACHE_DIR"));
    }
}
