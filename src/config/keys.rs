//! One function per key or table: each turns what the file holds into what [`Config`] holds,
//! fills in the default, and names the line of a value it refuses.
//!
//! [`Config`]: super::Config

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{self, check_inside_release, check_link_name};
use super::raw::{self, Source};
use super::{Build, Error, Retire};
use super::{DEFAULT_BRANCH, DEFAULT_BUILD_TIMEOUT, DEFAULT_LINK, DEFAULT_UMASK};
use crate::git;

/// Returns the deploy branch: `branch`, which must be a valid branch name.
pub fn branch(source: Source, branch: Option<Spanned<String>>) -> Result<String, Error> {
    let Some(branch) = branch else { return Ok(DEFAULT_BRANCH.to_owned()) };
    let name = branch.get_ref();
    if !git::is_valid_branch_name(name) {
        return Err(
            source.invalid_at(&branch, format!("`branch`: {name:?} is not a valid branch name"))
        );
    }
    Ok(branch.into_inner())
}

/// Returns the target and the link name, which are checked together: the link's name decides
/// which repository locations inside the target a deploy would move aside.
pub fn target_and_link(
    source: Source,
    target: Spanned<PathBuf>,
    link: Option<Spanned<String>>,
) -> Result<(PathBuf, String), Error> {
    if !target.get_ref().is_absolute() {
        let shown = target.get_ref().display();
        return Err(
            source.invalid_at(&target, format!("`target`: {shown} is not an absolute path"))
        );
    }
    let link = match link {
        Some(link) => match check_link_name(link.get_ref()) {
            Ok(()) => link.into_inner(),
            Err(why) => {
                return Err(source.invalid_at(&link, format!("`link`: {:?} {why}", link.get_ref())));
            }
        },
        None => DEFAULT_LINK.to_owned(),
    };
    if let Err(why) = check::target_location(target.get_ref(), repo_of(source.path), &link) {
        return Err(source.invalid_at(&target, format!("`target`: {why}")));
    }
    Ok((target.into_inner(), link))
}

/// Returns the umask: `umask`, in octal, which may leave others' write bit unmasked only with
/// `world_writable = true`.
pub fn umask(
    source: Source,
    umask: Option<Spanned<String>>,
    world_writable: Option<bool>,
) -> Result<u32, Error> {
    let Some(written) = umask else { return Ok(DEFAULT_UMASK) };
    let shown = written.get_ref();
    let Some(umask) = parse_umask(shown) else {
        return Err(source.invalid_at(
            &written,
            format!("`umask`: {shown:?} is not an octal umask such as \"022\""),
        ));
    };
    // Others' write bit left unmasked: anyone on the machine could change what is served.
    if check::lets_others_write(umask) && !world_writable.unwrap_or(false) {
        return Err(source.invalid_at(
            &written,
            format!(
                "`umask`: {shown:?} lets every user write into the releases; use a umask that \
                 keeps others from writing, such as \"022\", or add `world_writable = true` if \
                 every user of this machine may change the site"
            ),
        ));
    }
    Ok(umask)
}

/// Returns the `[build]` table; without one, nothing is built and the release is served whole.
pub fn build(source: Source, build: Option<raw::Build>) -> Result<Build, Error> {
    let Some(build) = build else {
        return Ok(Build { timeout: DEFAULT_BUILD_TIMEOUT, ..Build::default() });
    };
    let publish = match build.publish {
        Some(publish) => Some(inside_release(source, publish, "build.publish")?),
        None => None,
    };
    let timeout = match build.timeout {
        Some(timeout) => duration(source, &timeout, "build.timeout", false)?,
        None => DEFAULT_BUILD_TIMEOUT,
    };
    let command = match build.command {
        Some(command) if command.get_ref().trim().is_empty() => {
            return Err(source.invalid_at(
                &command,
                "`build.command` is empty; remove it to deploy without a build".into(),
            ));
        }
        command => command.map(Spanned::into_inner),
    };
    let cache = build
        .cache
        .into_iter()
        .map(|path| inside_release(source, path, "build.cache"))
        .collect::<Result<_, _>>()?;
    let git_history = build.git_history.unwrap_or(false);
    let allow_no_index = build.allow_no_index.unwrap_or(false);
    Ok(Build { command, publish, timeout, cache, env: build.env, git_history, allow_no_index })
}

/// The most releases `[retire] keep` may keep.
pub const MAX_KEPT: usize = 1000;

/// Returns the `[retire]` table; without one, the old release is retired at once.
pub fn retire(source: Source, retire: Option<raw::Retire>) -> Result<Retire, Error> {
    let Some(retire) = retire else { return Ok(Retire::default()) };
    let grace = match retire.grace {
        Some(grace) => duration(source, &grace, "retire.grace", true)?,
        None => Duration::ZERO,
    };
    let keep = match retire.keep {
        Some(keep) => match usize::try_from(*keep.get_ref()) {
            Ok(keep @ 1..=MAX_KEPT) => keep,
            _ => {
                return Err(source.invalid_at(
                    &keep,
                    format!(
                        "`retire.keep`: {} is not a number of releases from 1 to {MAX_KEPT}",
                        keep.get_ref()
                    ),
                ));
            }
        },
        None => 1,
    };
    let keep = if retire.keep_previous == Some(true) { keep.max(2) } else { keep };
    Ok(Retire { grace, keep_previous: keep >= 2, keep })
}

/// Returns a path inside the release that `key` names (`publish`, a `cache` entry).
pub(super) fn inside_release(
    source: Source,
    path: Spanned<PathBuf>,
    key: &str,
) -> Result<PathBuf, Error> {
    match check_inside_release(path.get_ref()) {
        Ok(()) => Ok(path.into_inner()),
        Err(why) => {
            Err(source.invalid_at(&path, format!("`{key}`: {} {why}", path.get_ref().display())))
        }
    }
}

/// Returns the repository a configuration file at `path` belongs to (the file lives at
/// `REPO/pushdeploy.toml`).
fn repo_of(path: &Path) -> &Path {
    path.parent().filter(|repo| !repo.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Parses a duration value such as `"90s"` or `"10m"`; zero only where `zero_ok`.
pub(super) fn duration(
    source: Source,
    value: &Spanned<String>,
    key: &str,
    zero_ok: bool,
) -> Result<Duration, Error> {
    match humantime::parse_duration(value.get_ref().trim()) {
        Ok(duration) if zero_ok || !duration.is_zero() => Ok(duration),
        _ => Err(source.invalid_at(
            value,
            format!("`{key}`: {:?} is not a duration such as \"90s\" or \"10m\"", value.get_ref()),
        )),
    }
}

/// Parses an octal umask, with or without a `0o` prefix.
fn parse_umask(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8).ok().filter(|umask| *umask <= 0o777)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::parse;
    use crate::config::tests::parse_err;

    #[test]
    fn relative_target_is_refused() {
        let err = parse_err("target = \"srv/www\"\n");
        assert_eq!(err, "/r/pushdeploy.toml: line 1: `target`: srv/www is not an absolute path");
    }

    #[test]
    fn link_with_slash_is_refused() {
        let err = parse_err("target = \"/srv\"\nlink = \"a/b\"\n");
        assert!(err.contains("line 2") && err.contains("without `/`"), "{err}");
    }

    #[test]
    fn publish_may_not_climb() {
        let err = parse_err("target = \"/srv\"\n[build]\npublish = \"../x\"\n");
        assert!(err.contains("line 3") && err.contains("`..`"), "{err}");
    }

    #[test]
    fn cache_paths_stay_inside() {
        let text = "target = \"/s\"\n[build]\ncache = [\"resources/_gen\", \"node_modules\"]\n";
        let config = parse(Path::new("p"), text).unwrap();
        assert_eq!(config.build.cache, [Path::new("resources/_gen"), Path::new("node_modules")]);
        let err = parse_err("target = \"/s\"\n[build]\ncache = [\"/abs\"]\n");
        assert!(err.contains("line 3") && err.contains("`build.cache`"), "{err}");
    }

    #[test]
    fn retire_keep_counts_releases_and_keep_previous_is_two() {
        let keep = |text: &str| {
            let retire = parse(Path::new("p"), &format!("target = \"/s\"\n{text}")).unwrap().retire;
            (retire.keep, retire.keep_previous)
        };
        assert_eq!(keep(""), (1, false));
        assert_eq!(keep("[retire]\nkeep_previous = true\n"), (2, true));
        assert_eq!(keep("[retire]\nkeep = 10\n"), (10, true));
        assert_eq!(keep("[retire]\nkeep = 1\nkeep_previous = true\n"), (2, true));
        assert_eq!(
            parse_err("target = \"/s\"\n[retire]\nkeep = 0\n"),
            "/r/pushdeploy.toml: line 3: `retire.keep`: 0 is not a number of releases from 1 to 1000"
        );
    }

    #[test]
    fn retire_grace_defaults_to_zero_and_parses() {
        assert!(parse(Path::new("p"), "target = \"/s\"\n").unwrap().retire.grace.is_zero());
        let config = parse(Path::new("p"), "target = \"/s\"\n[retire]\ngrace = \"30s\"\n").unwrap();
        assert_eq!(config.retire.grace, Duration::from_secs(30));
        assert!(
            parse_err("target = \"/s\"\n[retire]\ngrace = \"1 fortnight\"\n")
                .contains("`retire.grace`")
        );
    }

    #[test]
    fn umask_letting_others_write_needs_world_writable() {
        let err = parse_err("target = \"/s\"\numask = \"020\"\n");
        assert!(
            err.starts_with("/r/pushdeploy.toml: line 2: `umask`: \"020\" lets every user write"),
            "{err}"
        );
        let text = "target = \"/s\"\numask = \"000\"\nworld_writable = true\n";
        let config = parse(Path::new("p"), text).unwrap();
        assert!(config.releases_world_writable());
        assert!(
            !parse(Path::new("p"), "target = \"/s\"\numask = \"002\"\n")
                .unwrap()
                .releases_world_writable()
        );
    }

    #[test]
    fn timeout_parses_durations() {
        let config =
            parse(Path::new("p"), "target = \"/s\"\n[build]\ntimeout = \"1m 30s\"\n").unwrap();
        assert_eq!(config.build.timeout, Duration::from_secs(90));
        assert!(parse_err("target = \"/s\"\n[build]\ntimeout = \"soon\"\n").contains("line 3"));
    }
}
