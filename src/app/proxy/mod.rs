//! The proxy switch of an app deploy: after the new instance passed its gate, the proxy is
//! **pointed** at it ([`point`]: once it returns, new requests go to the new instance); after
//! the check through the proxy, the old instance is **drained** ([`drain`]: the proxy has no
//! request left on it) before systemd stops it. [`current`] tells where the proxy points, for
//! `status` and for a deploy that finds what a killed one left.
//!
//! One module per kind: [`caddy`] (a snippet the Caddyfile imports, `caddy reload`),
//! [`nginx`] (a link to one of two root-owned upstream files, `nginx -t`, reload, old workers
//! exiting), [`haproxy`] (the runtime API: `ready`, UP, `drain`, no sessions, `maint`).

pub mod caddy;
pub mod haproxy;
pub mod nginx;

use std::path::Path;
use std::time::Duration;

use crate::config::{App, Proxy};
use crate::error::Error;
use crate::report::escape_path;
use crate::target_dir::Slot;

/// What pointing the proxy left for the drain of the old instance to wait on.
#[derive(Debug)]
pub enum Pointed {
    /// Nothing to wait for: the proxy sends nothing to the old instance any more once it is
    /// pointed away (no proxy), or it is asked directly (HAProxy).
    Nothing,
    /// Caddy: the upstream address whose requests in flight the drain waits out.
    Caddy(caddy::Pointed),
    /// nginx: the worker processes of the configuration before the reload.
    Nginx(nginx::Pointed),
}

/// Returns the port of `slot`'s instance.
pub fn port(app: &App, slot: Slot) -> u16 {
    match slot {
        Slot::Blue => app.ports.blue,
        Slot::Green => app.ports.green,
    }
}

/// Points the proxy at `to`'s instance; `from` is the instance it points at now, if any. A
/// proxy that refuses the change is left as it was (the old file put back). Errors are one
/// line, for the failure line of the deploy.
pub fn point(app: &App, to: Slot, from: Option<Slot>) -> Result<Pointed, String> {
    match &app.proxy {
        Proxy::None => Ok(Pointed::Nothing),
        Proxy::Caddy { snippet, caddyfile } => {
            caddy::point(app, snippet, caddyfile, to, from).map(Pointed::Caddy)
        }
        Proxy::Nginx { upstream, config } => nginx::point(upstream, config, to).map(Pointed::Nginx),
        Proxy::Haproxy { socket, backend, state_file } => {
            haproxy::point(app, socket, backend, state_file, to, from).map(|()| Pointed::Nothing)
        }
    }
}

/// Waits, at most `timeout`, until the proxy has no request left on `from`'s instance; an
/// error says what was still in flight when the wait ended (the instance is stopped anyway:
/// systemd's own `stop_timeout` still lets it finish).
pub fn drain(app: &App, pointed: Pointed, from: Slot, timeout: Duration) -> Result<(), String> {
    match (&app.proxy, pointed) {
        (Proxy::Caddy { .. }, Pointed::Caddy(pointed)) => caddy::drain(pointed, timeout),
        (Proxy::Nginx { .. }, Pointed::Nginx(pointed)) => nginx::drain(pointed, timeout),
        (Proxy::Haproxy { socket, backend, state_file }, _) => {
            haproxy::drain(socket, backend, state_file, from, timeout)
        }
        _ => Ok(()),
    }
}

/// Returns the slot the proxy sends requests to: `None` when it points at neither (or, for no
/// proxy, always: the link says which slot is live).
pub fn current(app: &App) -> Result<Option<Slot>, String> {
    match &app.proxy {
        Proxy::None => Ok(None),
        Proxy::Caddy { snippet, .. } => caddy::current(app, snippet),
        Proxy::Nginx { upstream, .. } => nginx::current(upstream),
        Proxy::Haproxy { socket, backend, .. } => haproxy::current(socket, backend),
    }
}

/// Writes what the proxy reads from pushdeploy (run by `init --app`, as root); returns the
/// lines that tell the operator what to add to the proxy's own configuration.
pub fn install(target: &Path, app: &App) -> Result<Vec<String>, Error> {
    match &app.proxy {
        Proxy::None => Ok(vec![match (app.listen, app.strategy.is_single()) {
            (Some(listen), _) => format!(
                "proxy: none; clients reach {listen}, which pushdeploy-{}.socket holds for both slots' instances",
                app.name
            ),
            (None, true) => {
                format!("proxy: none; clients reach the app on port {}", app.ports.blue)
            }
            (None, false) => format!(
                "proxy: none; clients reach the live instance on its own port ({} or {}): `pushdeploy status` says which",
                app.ports.blue, app.ports.green
            ),
        }]),
        Proxy::Caddy { snippet, caddyfile } => caddy::install(target, app, snippet, caddyfile),
        Proxy::Nginx { upstream, config } => nginx::install(app, upstream, config),
        Proxy::Haproxy { socket, backend, state_file } => {
            haproxy::install(target, app, socket, backend, state_file)
        }
    }
}

/// Writes the first version of a file the deploys rewrite (`content`), when `path` is in the
/// target's state directory (`TARGET/.pushdeploy/DIR/NAME`) and does not exist yet; returns
/// init's line about it. A file elsewhere must be in a directory the git user can write:
/// init says so and writes nothing.
fn install_file(target: &Path, path: &Path, content: &str) -> Result<String, Error> {
    let shown = escape_path(path);
    let in_state = path
        .strip_prefix(target.join(".pushdeploy"))
        .ok()
        .and_then(|rest| Some((rest.parent()?.to_str()?, rest.file_name()?.to_str()?)))
        .filter(|(dir, _)| !dir.is_empty() && !dir.contains('/'));
    Ok(match in_state {
        Some((dir, name)) => {
            let wrote = crate::app::state::write_proxy_file(target, dir, name, content)?;
            format!("{} {shown}", if wrote { "wrote" } else { "kept" })
        }
        None => {
            format!("the deploys write {shown}: make sure its directory belongs to the git user")
        }
    })
}

/// Returns the slot whose port is `port`.
pub fn slot_of_port(app: &App, port: u16) -> Option<Slot> {
    [Slot::Blue, Slot::Green].into_iter().find(|slot| self::port(app, *slot) == port)
}

/// Replaces `path` by a file holding `content` (a temporary file beside it, synced, then
/// renamed over it), so a proxy never reads half a file. Returns what it held before: `None`
/// when it did not exist.
fn replace_file(path: &Path, content: &str) -> Result<Option<String>, String> {
    let shown = escape_path(path);
    let old = match std::fs::read_to_string(path) {
        Ok(old) => Some(old),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(format!("cannot read {shown}: {err}")),
    };
    write_by_rename(path, content).map_err(|err| format!("cannot write {shown}: {err}"))?;
    Ok(old)
}

fn write_by_rename(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new().prefix(".pushdeploy-").tempfile_in(dir)?;
    file.write_all(content.as_bytes())?;
    file.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// Puts back what [`replace_file`] replaced after the proxy refused the new file; returns a
/// note for the failure line when that failed too.
fn restore_file(path: &Path, old: Option<&str>) -> String {
    let restored = match old {
        Some(old) => write_by_rename(path, old),
        None => std::fs::remove_file(path),
    };
    match restored {
        Ok(()) => String::new(),
        Err(err) => format!("; putting back the old {} failed too: {err}", escape_path(path)),
    }
}
