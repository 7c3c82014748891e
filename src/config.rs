//! `REPO/pushdeploy.toml`: the file's serde types, validation, and defaults.
//!
//! The file is parsed into `raw` types that mirror it (with spans, so errors can name the line),
//! then validated into [`Config`], which is all the pipeline ever reads. A later table (say
//! `[retire]`) is one more optional field in `raw::File` and one more field in `Config`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::report::escape_path;

/// The configuration file's name inside the bare repository.
pub const FILE_NAME: &str = "pushdeploy.toml";
/// The deploy branch when the file names none.
pub const DEFAULT_BRANCH: &str = "main";
/// The link name when the file names none.
pub const DEFAULT_LINK: &str = "public_html";
/// How long a build may run when the file does not say.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Names under the target that pushdeploy owns, so the link may not take them.
const RESERVED_NAMES: [&str; 3] = ["blue", "green", ".pushdeploy"];

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
    pub build: Build,
    pub retire: Retire,
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

/// The `[retire]` table: what happens to the release that stops being live.
#[derive(Debug, Clone, Default)]
pub struct Retire {
    /// How long files of the old release that the new one lacks stay reachable under the link
    /// (skew protection). Zero retires the old release at once.
    pub grace: Duration,
    /// Keep the previous release in its slot until the next deploy, for an instant rollback.
    pub keep_previous: bool,
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
        self.umask & 0o002 == 0
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

mod raw {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub branch: Option<Spanned<String>>,
        pub target: Spanned<PathBuf>,
        pub link: Option<Spanned<String>>,
        pub umask: Option<Spanned<String>>,
        pub world_writable: Option<bool>,
        pub symlinks: Option<SymlinkPolicy>,
        pub mode: Option<Mode>,
        pub build: Option<Build>,
        pub retire: Option<Retire>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Retire {
        pub grace: Option<Spanned<String>>,
        pub keep_previous: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Build {
        pub command: Option<Spanned<String>>,
        pub publish: Option<Spanned<PathBuf>>,
        pub timeout: Option<Spanned<String>>,
        #[serde(default)]
        pub cache: Vec<Spanned<PathBuf>>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        pub git_history: Option<bool>,
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
    let invalid = |span: Option<Range<usize>>, message: String| Error::Invalid {
        path: path.to_owned(),
        line: span.map_or(1, |span| line_of(text, span.start)),
        message,
    };
    let file: raw::File = toml::from_str(text).map_err(|err| {
        // serde names an unknown key but not a mistyped one: quote the line so both are named.
        let quoted = err
            .span()
            .and_then(|span| {
                text.get(..span.start).map(|before| before.rfind('\n').map_or(0, |i| i + 1))
            })
            .and_then(|start| text[start..].lines().next())
            .map(|line| format!(" (in `{}`)", line.trim()))
            .unwrap_or_default();
        invalid(err.span(), format!("{}{quoted}", one_line(err.message())))
    })?;

    let branch = match file.branch {
        Some(branch) => {
            let name = branch.get_ref();
            if !git2::Branch::name_is_valid(name).unwrap_or(false) {
                return Err(invalid(
                    Some(branch.span()),
                    format!("`branch`: {name:?} is not a valid branch name"),
                ));
            }
            branch.into_inner()
        }
        None => DEFAULT_BRANCH.to_owned(),
    };

    let target_span = file.target.span();
    let target = file.target.into_inner();
    if !target.is_absolute() {
        return Err(invalid(
            Some(target_span),
            format!("`target`: {} is not an absolute path", target.display()),
        ));
    }

    let link = match file.link {
        Some(link) => {
            let span = link.span();
            let link = link.into_inner();
            if let Err(why) = check_link_name(&link) {
                return Err(invalid(Some(span), format!("`link`: {link:?} {why}")));
            }
            link
        }
        None => DEFAULT_LINK.to_owned(),
    };
    if let Err(why) = check_target_location(&target, repo_of(path), &link) {
        return Err(invalid(Some(target_span), format!("`target`: {why}")));
    }

    let umask = match &file.umask {
        Some(umask) => parse_umask(umask.get_ref()).ok_or_else(|| {
            invalid(
                Some(umask.span()),
                format!("`umask`: {:?} is not an octal umask such as \"022\"", umask.get_ref()),
            )
        })?,
        None => 0o022,
    };
    let world_writable = file.world_writable.unwrap_or(false);
    // Others' write bit left unmasked: anyone on the machine could change what is served.
    if let Some(written) = file.umask.as_ref().filter(|_| umask & 0o002 == 0 && !world_writable) {
        let shown = written.get_ref();
        return Err(invalid(
            Some(written.span()),
            format!(
                "`umask`: {shown:?} lets every user write into the releases; use a umask that \
                 keeps others from writing, such as \"022\", or add `world_writable = true` if \
                 every user of this machine may change the site"
            ),
        ));
    }

    let symlinks = file.symlinks.unwrap_or_default();

    let build = match file.build {
        None => Build { timeout: DEFAULT_BUILD_TIMEOUT, ..Build::default() },
        Some(build) => {
            let publish = match build.publish {
                Some(publish) => {
                    let span = publish.span();
                    let publish = publish.into_inner();
                    if let Err(why) = check_inside_release(&publish) {
                        return Err(invalid(
                            Some(span),
                            format!("`build.publish`: {} {why}", publish.display()),
                        ));
                    }
                    Some(publish)
                }
                None => None,
            };
            let timeout = match build.timeout {
                Some(timeout) => duration(&timeout, "build.timeout", false)
                    .map_err(|(span, message)| invalid(span, message))?,
                None => DEFAULT_BUILD_TIMEOUT,
            };
            let command = match build.command {
                Some(command) if command.get_ref().trim().is_empty() => {
                    return Err(invalid(
                        Some(command.span()),
                        "`build.command` is empty; remove it to deploy without a build".into(),
                    ));
                }
                command => command.map(Spanned::into_inner),
            };
            let mut cache = Vec::with_capacity(build.cache.len());
            for path in build.cache {
                let span = path.span();
                let path = path.into_inner();
                if let Err(why) = check_inside_release(&path) {
                    return Err(invalid(
                        Some(span),
                        format!("`build.cache`: {} {why}", path.display()),
                    ));
                }
                cache.push(path);
            }
            let git_history = build.git_history.unwrap_or(false);
            Build { command, publish, timeout, cache, env: build.env, git_history }
        }
    };

    let retire = match file.retire {
        None => Retire::default(),
        Some(retire) => Retire {
            grace: match retire.grace {
                Some(grace) => duration(&grace, "retire.grace", true)
                    .map_err(|(span, message)| invalid(span, message))?,
                None => Duration::ZERO,
            },
            keep_previous: retire.keep_previous.unwrap_or(false),
        },
    };

    let mode = file.mode.unwrap_or_default();

    Ok(Config { path: path.to_owned(), branch, target, link, umask, symlinks, mode, build, retire })
}

/// Returns the repository a configuration file at `path` belongs to (the file lives at
/// `REPO/pushdeploy.toml`).
fn repo_of(path: &Path) -> &Path {
    path.parent().filter(|repo| !repo.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Explains why `target` is a directory no deploy may write into, or accepts it.
///
/// A deploy creates `blue/`, `green/`, the link and `.pushdeploy/` in the target and moves
/// aside what it finds there under those names, so `/` or a home directory would be filled
/// with them, a target inside the repository would put releases among git's files, and a
/// repository under one of those names would be moved aside by the first deploy. A repository
/// elsewhere in the target is left alone, as is anything else already there. Paths are
/// compared as the kernel resolves them (symlinks, `..`), so a spelling cannot hide a trap.
fn check_target_location(target: &Path, repo: &Path, link: &str) -> Result<(), String> {
    let own_dir = "give the site a directory of its own, such as /srv/www/example.com";
    let shown = escape_path(target);
    let resolved = resolve(target);
    if resolved.parent().is_none() {
        return Err(format!("{shown} is the root directory; {own_dir}"));
    }
    let homes = [
        std::env::var_os("HOME").map(PathBuf::from),
        nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|user| user.dir),
    ];
    if homes
        .into_iter()
        .flatten()
        .filter(|home| home.is_absolute())
        .any(|home| resolve(&home) == resolved)
    {
        return Err(format!("{shown} is the home directory of this user; {own_dir}"));
    }
    let repo = match std::path::absolute(repo) {
        Ok(repo) => resolve(&repo),
        Err(_) => return Ok(()),
    };
    if resolved == repo {
        return Err(format!("{shown} is the repository itself; {own_dir}"));
    }
    if resolved.starts_with(&repo) {
        return Err(format!("{shown} is inside the repository {}; {own_dir}", escape_path(&repo)));
    }
    if let Ok(inside) = repo.strip_prefix(&resolved)
        && let Some(Component::Normal(first)) = inside.components().next()
        && let Some(first) = first.to_str()
        && (RESERVED_NAMES.contains(&first)
            || first.starts_with(".pushdeploy")
            || first == link
            || first == format!(".{link}.pushdeploy-new"))
    {
        return Err(format!(
            "{shown} holds the repository {} at `{first}`, a name pushdeploy writes to; move the \
             repository elsewhere or choose another target",
            escape_path(&repo)
        ));
    }
    Ok(())
}

/// Returns `path` as the kernel would resolve it: the longest part that exists canonicalized
/// (symlinks and `..` followed), the rest appended with `.` and `..` applied lexically.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            for component in rest.into_iter().rev() {
                match component {
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => resolved.push(name),
                    _ => {}
                }
            }
            return resolved;
        }
        let mut components = existing.components();
        match components.next_back() {
            Some(last @ (Component::Normal(_) | Component::ParentDir | Component::CurDir)) => {
                rest.push(last);
                existing = components.as_path();
            }
            _ => return path.to_owned(),
        }
    }
}

/// Explains why a link name is unusable, or accepts it.
pub fn check_link_name(link: &str) -> Result<(), &'static str> {
    if link.is_empty() || link == "." || link == ".." {
        Err("is not a file name")
    } else if link.contains('/') || link.contains('\0') {
        Err("must be a plain file name inside the target, without `/`")
    } else if RESERVED_NAMES.contains(&link) || link.starts_with(".pushdeploy") {
        Err("is a name pushdeploy uses for itself; choose another, such as \"public_html\"")
    } else {
        Ok(())
    }
}

/// Explains why a path inside the release (publish or cache) is unusable, or accepts it.
pub fn check_inside_release(publish: &Path) -> Result<(), &'static str> {
    let mut normal = 0;
    for component in publish.components() {
        match component {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            _ => return Err("must be a relative path inside the release, without `..`"),
        }
    }
    if normal == 0 { Err("names the release itself; leave `publish` out instead") } else { Ok(()) }
}

/// Parses a duration value such as `"90s"` or `"10m"`; zero only where `zero_ok`.
fn duration(
    value: &Spanned<String>,
    key: &str,
    zero_ok: bool,
) -> Result<Duration, (Option<Range<usize>>, String)> {
    match humantime::parse_duration(value.get_ref().trim()) {
        Ok(duration) if zero_ok || !duration.is_zero() => Ok(duration),
        _ => Err((
            Some(value.span()),
            format!("`{key}`: {:?} is not a duration such as \"90s\" or \"10m\"", value.get_ref()),
        )),
    }
}

fn parse_umask(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8).ok().filter(|umask| *umask <= 0o777)
}

/// Returns the 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns `value` as a TOML string literal.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
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

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse_err("target = \"/srv\"\n[build]\ncomand = \"make\"\n");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("comand"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse_err("target = \"/srv\"\nbranch = 3\n");
        assert_eq!(
            err,
            "/r/pushdeploy.toml: line 2: invalid type: integer `3`, expected a string (in `branch = 3`)"
        );
    }

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
    fn enums_name_their_choices() {
        let config =
            parse(Path::new("p"), "target = \"/s\"\nmode = \"pre-receive\"\nsymlinks = \"none\"\n")
                .unwrap();
        assert_eq!((config.mode, config.symlinks), (Mode::PreReceive, SymlinkPolicy::None));
        let err = parse_err("target = \"/s\"\nsymlinks = \"outside\"\n");
        assert!(
            err.contains("line 2") && err.contains("`inside`") && err.contains("`none`"),
            "{err}"
        );
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
    fn targets_that_are_root_or_the_repository_are_refused() {
        let own = "give the site a directory of its own, such as /srv/www/example.com";
        assert_eq!(
            parse_err("target = \"/\"\n"),
            format!("/r/pushdeploy.toml: line 1: `target`: / is the root directory; {own}")
        );
        assert!(parse_err("target = \"/usr/..\"\n").contains("/usr/.. is the root directory"));
        assert!(parse_err("target = \"/r\"\n").contains("/r is the repository itself"));
        assert!(parse_err("target = \"/r/www\"\n").contains("is inside the repository /r;"));
        let err = parse(Path::new("/srv/www/blue/pushdeploy.toml"), "target = \"/srv/www\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds the repository /srv/www/blue at `blue`"), "{err}");
        // Beside the slots, under a name of its own, the repository is left alone.
        parse(Path::new("/srv/www/site.git/pushdeploy.toml"), "target = \"/srv/www\"\n").unwrap();
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
