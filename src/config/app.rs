//! The `[app]` table: an app that systemd runs in each slot (a template unit, one instance per
//! slot, each on its own port), its health check, its proxy and its check through the proxy.
//!
//! Everything here ends up in files another program parses (the unit, its environment files,
//! an HTTP request line), so each value is checked for what would break out of its place
//! there: a newline, a `%` systemd would expand, a user that would own the releases.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::Error;
pub use super::app_proxy::Proxy;
pub use super::app_raw::{ProxyKind, Strategy};
use super::app_raw::{RawApp, RawHealth, RawPorts};
use super::keys::{duration, inside_release};
use super::raw::Source;

/// How long a stopped instance may take to finish its requests before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the `release` command may run before systemd stops it.
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a new instance may take to answer its health path.
pub const DEFAULT_HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// The directory that holds each app's environment directory by default.
pub const DEFAULT_ENV_PARENT: &str = "/etc/pushdeploy";
/// The health path when the file names none.
pub const DEFAULT_HEALTH_PATH: &str = "/health";

/// A validated `[app]` table.
#[derive(Debug, Clone)]
pub struct App {
    /// The unit's name part: the unit is `pushdeploy-NAME@.service`.
    pub name: String,
    /// Run by `/bin/sh -c` in the slot, with `PORT` set.
    pub command: String,
    /// How a deploy makes the new release live.
    pub strategy: Strategy,
    /// Each slot's port; with `restart` and `reload` both are the one `port`.
    pub ports: Ports,
    /// `socket`: the address `pushdeploy-NAME.socket` listens on (`ListenStream=`).
    pub listen: Option<std::net::SocketAddr>,
    /// `reload`: the unit's `ExecReload=` command.
    pub reload: Option<String>,
    /// The unit's `User=`: never root (unless `allow_root`), never the git user.
    pub user: String,
    /// Run once per deploy before the new instance takes traffic (migrations).
    pub release: Option<String>,
    /// How long `release` may run (the release unit's `TimeoutStartSec=`).
    pub release_timeout: Duration,
    pub stop_timeout: Duration,
    /// Paths in each release linked to `TARGET/shared/` (SQLite files, uploads).
    pub shared: Vec<PathBuf>,
    /// The environment of the instance and of `release`.
    pub env: BTreeMap<String, String>,
    /// Where the unit's environment files are (`[app.env]`, the secrets `pushdeploy env`
    /// edits, each slot's `PORT`): a directory of root's, never in the target, whose owner
    /// could otherwise point them, by a symlink, at any file root can read.
    pub env_dir: PathBuf,
    pub health: Health,
    pub proxy: Proxy,
    pub check: Option<Check>,
}

/// Each slot's port on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub blue: u16,
    pub green: u16,
}

/// The `[app.health]` table: `GET http://127.0.0.1:PORT{path}` must answer 2xx in time.
#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub deadline: Duration,
}

/// The `[app.check]` table: a URL through the proxy the new release must answer with 2xx.
#[derive(Debug, Clone)]
pub struct Check {
    pub url: String,
}

/// Returns the `[app]` table; `target` (with its span) is checked too, since the unit names it.
pub fn app(
    source: Source,
    raw: Option<RawApp>,
    target: &Path,
    target_span: Range<usize>,
) -> Result<Option<App>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    if let Some(bad) = target.to_string_lossy().chars().find(|c| !is_unit_path_char(*c)) {
        return Err(source.invalid(
            Some(target_span),
            format!(
                "`target`: an app's target may not hold {bad:?}, which the systemd unit would \
                 have to quote; use letters, digits and `/._-+@:,`"
            ),
        ));
    }
    let name = match raw.name {
        Some(name) => unit_name(source, name)?,
        None => default_unit_name(target),
    };
    let command = one_line(source, raw.command, "app.command")?;
    let strategy_span = raw.strategy.as_ref().map(Spanned::span);
    let strategy = strategy(source, raw.strategy)?;
    let ports = match (strategy.is_single(), raw.ports, raw.port) {
        (false, Some(pair), None) => ports(source, pair)?,
        (true, None, Some(port)) => {
            let port = one_port(source, &port, "app.port")?;
            Ports { blue: port, green: port }
        }
        (single, ports, port) => {
            let span = port.map(|p| p.span()).or(ports.map(|p| p.blue.span())).or(strategy_span);
            let want = if single {
                "one instance on one port: set `port = 8001`, not `ports`"
            } else {
                "one instance per slot: set `ports = { blue = 8001, green = 8002 }`, not `port`"
            };
            return Err(source.invalid(
                span,
                format!("`app.port`: the {} strategy runs {want}", strategy.name()),
            ));
        }
    };
    let listen = listen(source, strategy, raw.listen, strategy_span.clone())?;
    let reload = match (strategy, raw.reload) {
        (Strategy::Reload, Some(reload)) => Some(one_line(source, reload, "app.reload")?),
        (Strategy::Reload, None) => {
            return Err(source.invalid(
                strategy_span,
                "`app.reload`: the reload strategy needs the command that reloads the app (the \
                 unit's ExecReload=), such as gunicorn's in README's \"Strategies\""
                    .to_owned(),
            ));
        }
        (_, Some(reload)) => {
            return Err(source.invalid_at(
                &reload,
                format!("`app.reload` is for `strategy = \"reload\"`, not {:?}", strategy.name()),
            ));
        }
        (_, None) => None,
    };
    let user = user(source, raw.user, raw.allow_root.unwrap_or(false), &RunningUser::current())?;
    let release =
        raw.release.map(|release| one_line(source, release, "app.release")).transpose()?;
    let release_timeout = match raw.release_timeout {
        Some(timeout) => duration(source, &timeout, "app.release_timeout", false)?,
        None => DEFAULT_RELEASE_TIMEOUT,
    };
    let stop_timeout = match raw.stop_timeout {
        Some(timeout) => duration(source, &timeout, "app.stop_timeout", false)?,
        None => DEFAULT_STOP_TIMEOUT,
    };
    let shared = shared(source, raw.shared)?;
    let env = env(source, raw.env)?;
    let env_dir = match raw.env_dir {
        Some(dir) => env_dir(source, dir)?,
        None => default_env_dir(&name),
    };
    let health = health(source, raw.health)?;
    let proxy = super::app_proxy::proxy(source, raw.proxy, target, &name)?;
    let allowed = match strategy {
        Strategy::BlueGreen => true,
        Strategy::Socket => proxy == Proxy::None,
        Strategy::Restart | Strategy::Reload => !matches!(proxy, Proxy::Haproxy { .. }),
    };
    if !allowed {
        return Err(source.invalid(
            strategy_span,
            format!(
                "`app.proxy.kind`: {:?} does not go with the {} strategy ({})",
                proxy.kind().name(),
                strategy.name(),
                if strategy == Strategy::Socket {
                    "clients reach `listen`, which a proxy of your own may point at"
                } else {
                    "use caddy, nginx or none"
                }
            ),
        ));
    }
    let check = raw.check.map(|check| check_url(source, check.url)).transpose()?;
    Ok(Some(App {
        name,
        command,
        strategy,
        ports,
        listen,
        reload,
        user,
        release,
        release_timeout,
        stop_timeout,
        shared,
        env,
        env_dir,
        health,
        proxy,
        check,
    }))
}

/// Returns the unit name part for a target: its last component, with each character systemd
/// does not allow in a unit name replaced by `-` (`example.com` stays `example.com`).
pub fn default_unit_name(target: &Path) -> String {
    let last = target.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let name: String =
        last.chars().map(|c| if is_unit_name_char(c) { c } else { '-' }).take(200).collect();
    if name.is_empty() || name.starts_with('.') { format!("app{name}") } else { name }
}

/// Returns where the environment files of the app `name` go by default.
pub fn default_env_dir(name: &str) -> PathBuf {
    Path::new(DEFAULT_ENV_PARENT).join(name)
}

/// Returns `[app] env_dir`: an absolute path the unit can name unquoted.
fn env_dir(source: Source, dir: Spanned<PathBuf>) -> Result<PathBuf, Error> {
    let path = dir.get_ref();
    let text = path.to_string_lossy();
    let plain = path.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
    if !path.is_absolute() || !plain || !text.chars().all(is_unit_path_char) {
        return Err(source.invalid_at(
            &dir,
            format!(
                "`app.env_dir`: {text:?} is not an absolute path of letters, digits and \
                 `/._-+@:,` (without `..`)"
            ),
        ));
    }
    Ok(dir.into_inner())
}

/// Tells whether systemd allows `c` in a unit name (besides the `@` of a template).
fn is_unit_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-')
}

/// Tells whether `c` may stand unquoted in a unit file's path settings (`ReadWritePaths=` is
/// a space-separated list, `%` starts a specifier, quotes and `\` are parsed).
fn is_unit_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/._-+@:,".contains(c)
}

fn unit_name(source: Source, name: Spanned<String>) -> Result<String, Error> {
    let text = name.get_ref();
    if text.is_empty() || text.len() > 200 || !text.chars().all(is_unit_name_char) {
        return Err(source.invalid_at(
            &name,
            format!(
                "`app.name`: {text:?} is not a systemd unit name; use letters, digits and `:_.-`"
            ),
        ));
    }
    Ok(name.into_inner())
}

/// Returns a command, which must be one non-empty line (it goes into the unit's `ExecStart=`).
fn one_line(source: Source, command: Spanned<String>, key: &str) -> Result<String, Error> {
    let text = command.get_ref();
    if text.trim().is_empty() {
        return Err(source.invalid_at(&command, format!("`{key}` is empty")));
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(source.invalid_at(
            &command,
            format!("`{key}` must be one line; put several commands in a script in the repository"),
        ));
    }
    Ok(command.into_inner())
}

/// Returns the `shared` paths, each as its plain components (`./data` is `data`). A path
/// inside another is refused: it would be linked through the other's link, into `shared/`.
fn shared(source: Source, paths: Vec<Spanned<PathBuf>>) -> Result<Vec<PathBuf>, Error> {
    let mut valid: Vec<PathBuf> = Vec::new();
    for path in paths {
        let span = path.span();
        let path = inside_release(source, path, "app.shared")?;
        let plain: PathBuf =
            path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if let Some(outer) = valid.iter().find(|o| plain.starts_with(o) || o.starts_with(&plain)) {
            let why = if *outer == plain {
                format!("{} is listed twice", plain.display())
            } else {
                format!(
                    "{} and {} are inside one another; list only the outer one",
                    outer.display(),
                    plain.display()
                )
            };
            return Err(source.invalid(Some(span), format!("`app.shared`: {why}")));
        }
        valid.push(plain);
    }
    Ok(valid)
}

fn strategy(source: Source, raw: Option<Spanned<String>>) -> Result<Strategy, Error> {
    let Some(raw) = raw else { return Ok(Strategy::default()) };
    let all = [Strategy::BlueGreen, Strategy::Restart, Strategy::Socket, Strategy::Reload];
    all.into_iter().find(|s| s.name() == raw.get_ref()).ok_or_else(|| {
        source.invalid_at(
            &raw,
            format!(
                "`app.strategy`: {:?} is not one of \"blue-green\", \"restart\", \"socket\", \"reload\"",
                raw.get_ref()
            ),
        )
    })
}

/// Returns `listen`, which the socket strategy needs (an `IP:PORT` other than the slots') and
/// no other strategy takes.
fn listen(
    source: Source,
    strategy: Strategy,
    raw: Option<Spanned<String>>,
    strategy_span: Option<Range<usize>>,
) -> Result<Option<std::net::SocketAddr>, Error> {
    match (strategy, raw) {
        (Strategy::Socket, Some(raw)) => match raw.get_ref().parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(Some(addr)),
            _ => Err(source.invalid_at(
                &raw,
                format!(
                    "`app.listen`: {:?} is not an address such as \"127.0.0.1:8000\" or \"0.0.0.0:80\"",
                    raw.get_ref()
                ),
            )),
        },
        (Strategy::Socket, None) => Err(source.invalid(
            strategy_span,
            "`app.listen`: the socket strategy needs the address pushdeploy-NAME.socket listens on, such as `listen = \"127.0.0.1:8000\"`".to_owned(),
        )),
        (_, Some(raw)) => Err(source.invalid_at(
            &raw,
            format!("`app.listen` is for `strategy = \"socket\"`, not {:?}", strategy.name()),
        )),
        (_, None) => Ok(None),
    }
}

/// Returns a port, 1 to 65535.
fn one_port(source: Source, value: &Spanned<i64>, key: &str) -> Result<u16, Error> {
    match u16::try_from(*value.get_ref()) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(source
            .invalid_at(value, format!("`{key}`: {} is not a port (1 to 65535)", value.get_ref()))),
    }
}

fn ports(source: Source, ports: RawPorts) -> Result<Ports, Error> {
    let (blue, green) = (
        one_port(source, &ports.blue, "app.ports.blue")?,
        one_port(source, &ports.green, "app.ports.green")?,
    );
    if blue == green {
        return Err(source.invalid_at(
            &ports.green,
            format!(
                "`app.ports`: blue and green are both {blue}; each slot's instance needs its own port"
            ),
        ));
    }
    Ok(Ports { blue, green })
}

/// The user pushdeploy runs as (the git user, in the hook), to keep the app from being it.
pub struct RunningUser {
    pub uid: u32,
    pub name: Option<String>,
}

impl RunningUser {
    fn current() -> RunningUser {
        let uid = nix::unistd::geteuid();
        let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|user| user.name);
        RunningUser { uid: uid.as_raw(), name }
    }
}

fn user(
    source: Source,
    user: Spanned<String>,
    allow_root: bool,
    running: &RunningUser,
) -> Result<String, Error> {
    let uid_of =
        |name: &str| nix::unistd::User::from_name(name).ok().flatten().map(|u| u.uid.as_raw());
    match user_problem(user.get_ref(), allow_root, running, uid_of) {
        Some(problem) => Err(source.invalid_at(&user, format!("`app.user`: {problem}"))),
        None => Ok(user.into_inner()),
    }
}

/// Explains why `name` may not run the app, or accepts it; `uid_of` looks a user up.
pub fn user_problem(
    name: &str,
    allow_root: bool,
    running: &RunningUser,
    uid_of: impl Fn(&str) -> Option<u32>,
) -> Option<String> {
    let valid = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Some(format!("{name:?} is not a user name"));
    }
    let uid = uid_of(name);
    if (name == "root" || uid == Some(0)) && !allow_root {
        return Some(format!(
            "{name:?} is root; run the app as a user of its own (`useradd --system {}`), or add \
             `allow_root = true`",
            if name == "root" { "shop" } else { name }
        ));
    }
    let is_running = running.name.as_deref() == Some(name) || uid == Some(running.uid);
    if is_running && running.uid != 0 {
        return Some(format!(
            "{name:?} is the user pushdeploy runs as (the git user), who owns the releases and \
             the repository; run the app as a user of its own"
        ));
    }
    None
}

fn env(
    source: Source,
    env: BTreeMap<String, Spanned<String>>,
) -> Result<BTreeMap<String, String>, Error> {
    let mut valid = BTreeMap::new();
    for (key, value) in env {
        if let Some(problem) = env_problem(&key, value.get_ref()) {
            return Err(source.invalid_at(&value, format!("`app.env`: {key:?} {problem}")));
        }
        valid.insert(key, value.into_inner());
    }
    Ok(valid)
}

/// Explains why `key=value` cannot be in the app's environment (`[app.env]`, `pushdeploy env
/// set`), or accepts it.
pub fn env_problem(key: &str, value: &str) -> Option<&'static str> {
    let is_name = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        Some("is not an environment variable name")
    } else if key == "PORT" || key.starts_with("PUSHDEPLOY_") {
        Some("is set by pushdeploy for each slot; choose another name")
    } else if value.chars().any(|c| c.is_control() && c != '\t') {
        Some("has a value that is not one line")
    } else {
        None
    }
}

fn health(source: Source, health: Option<RawHealth>) -> Result<Health, Error> {
    let (path, deadline) = health.map_or((None, None), |h| (h.path, h.deadline));
    let path = match path {
        Some(path) => {
            let text = path.get_ref();
            if !text.starts_with('/') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(source.invalid_at(
                    &path,
                    format!("`app.health.path`: {text:?} is not a path such as \"/health\""),
                ));
            }
            path.into_inner()
        }
        None => DEFAULT_HEALTH_PATH.to_owned(),
    };
    let deadline = match deadline {
        Some(deadline) => duration(source, &deadline, "app.health.deadline", false)?,
        None => DEFAULT_HEALTH_DEADLINE,
    };
    Ok(Health { path, deadline })
}

fn check_url(source: Source, url: Spanned<String>) -> Result<Check, Error> {
    let text = url.get_ref();
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"));
    let host = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let clean = !text.chars().any(|c| c.is_whitespace() || c.is_control());
    if host.is_none_or(str::is_empty) || !clean {
        return Err(source.invalid_at(
            &url,
            format!("`app.check.url`: {text:?} is not an http(s) URL such as \"http://127.0.0.1/health\""),
        ));
    }
    Ok(Check { url: url.into_inner() })
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
