//! The `[app.proxy]` table: which reverse proxy sends traffic to the live instance, and where
//! pushdeploy finds what it drives there. Each kind reads only its own keys; every other key
//! is refused with the kind it belongs to, so a Caddy setup never carries an ignored `socket`.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::Error;
use super::app_raw::{ProxyKind, RawProxy};
use super::raw::Source;

/// Where the snippet the operator's Caddyfile imports lives, in the target's state directory.
const CADDY_SNIPPET: &str = ".pushdeploy/proxy/upstream.caddy";
/// The Caddyfile `caddy adapt` and `caddy reload` read.
const CADDYFILE: &str = "/etc/caddy/Caddyfile";
/// The directory of the root-owned upstream files the operator's nginx config includes.
const NGINX_DIR: &str = "/etc/nginx/pushdeploy";
/// The configuration `nginx -t` checks and `nginx -s reload` reloads.
const NGINX_CONFIG: &str = "/etc/nginx/nginx.conf";
/// Debian's HAProxy runtime API socket.
const HAPROXY_SOCKET: &str = "/run/haproxy/admin.sock";
/// Where the backend's server states are saved for HAProxy's reloads, in the state directory.
const HAPROXY_STATE: &str = ".pushdeploy/proxy/haproxy.state";

/// A validated `[app.proxy]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// No proxy: clients reach the live slot's port themselves.
    None,
    /// pushdeploy writes `snippet` (imported by `caddyfile`), then `caddy reload`s.
    Caddy { snippet: PathBuf, caddyfile: PathBuf },
    /// `upstream` is a link to one of two root-owned files beside it, one per slot; the
    /// deploy switches it, checks `config` with `nginx -t`, and reloads.
    Nginx { upstream: PathBuf, config: PathBuf },
    /// Servers `blue` and `green` of `backend`, driven over the runtime API at `socket`; their
    /// states are saved to `state_file` for HAProxy's own reloads.
    Haproxy { socket: PathBuf, backend: String, state_file: PathBuf },
}

impl Proxy {
    /// Returns the kind, as `[app.proxy] kind` names it.
    pub fn kind(&self) -> ProxyKind {
        match self {
            Proxy::None => ProxyKind::None,
            Proxy::Caddy { .. } => ProxyKind::Caddy,
            Proxy::Nginx { .. } => ProxyKind::Nginx,
            Proxy::Haproxy { .. } => ProxyKind::Haproxy,
        }
    }
}

/// Returns the `[app.proxy]` table, with each path the kind needs defaulted (those in the
/// target under its state directory, the nginx file named after the unit).
pub(super) fn proxy(
    source: Source,
    raw: Option<RawProxy>,
    target: &Path,
    name: &str,
) -> Result<Proxy, Error> {
    let raw = raw.unwrap_or_default();
    let kind = raw.kind.unwrap_or_default();
    let path = |value: Option<Spanned<PathBuf>>, key: &str, default: PathBuf| {
        absolute(source, value, key, kind, default)
    };
    match kind {
        ProxyKind::None => {
            refuse(
                source,
                kind,
                [
                    ("file", raw.file.as_ref().map(Spanned::span)),
                    ("config", raw.config.as_ref().map(Spanned::span)),
                ],
            )?;
            refuse_haproxy_keys(source, kind, &raw)?;
            Ok(Proxy::None)
        }
        ProxyKind::Caddy => {
            refuse_haproxy_keys(source, kind, &raw)?;
            Ok(Proxy::Caddy {
                snippet: path(raw.file, "file", target.join(CADDY_SNIPPET))?,
                caddyfile: path(raw.config, "config", PathBuf::from(CADDYFILE))?,
            })
        }
        ProxyKind::Nginx => {
            refuse_haproxy_keys(source, kind, &raw)?;
            let default = Path::new(NGINX_DIR).join(format!("{name}.conf"));
            Ok(Proxy::Nginx {
                upstream: path(raw.file, "file", default)?,
                config: path(raw.config, "config", PathBuf::from(NGINX_CONFIG))?,
            })
        }
        ProxyKind::Haproxy => {
            refuse(
                source,
                kind,
                [
                    ("file", raw.file.as_ref().map(Spanned::span)),
                    ("config", raw.config.as_ref().map(Spanned::span)),
                ],
            )?;
            Ok(Proxy::Haproxy {
                socket: path(raw.socket, "socket", PathBuf::from(HAPROXY_SOCKET))?,
                backend: backend(source, raw.backend, name)?,
                state_file: path(raw.state_file, "state_file", target.join(HAPROXY_STATE))?,
            })
        }
    }
}

fn refuse_haproxy_keys(source: Source, kind: ProxyKind, raw: &RawProxy) -> Result<(), Error> {
    refuse(
        source,
        kind,
        [
            ("socket", raw.socket.as_ref().map(Spanned::span)),
            ("backend", raw.backend.as_ref().map(Spanned::span)),
            ("state_file", raw.state_file.as_ref().map(Spanned::span)),
        ],
    )
}

/// Refuses each key that is set but means nothing to `kind`.
fn refuse<const N: usize>(
    source: Source,
    kind: ProxyKind,
    keys: [(&str, Option<std::ops::Range<usize>>); N],
) -> Result<(), Error> {
    for (key, span) in keys {
        if let Some(span) = span {
            let owners = match key {
                "socket" | "backend" | "state_file" => "\"haproxy\"",
                _ => "\"caddy\" and \"nginx\"",
            };
            return Err(source.invalid(
                Some(span),
                format!(
                    "`app.proxy.{key}` is for kind = {owners}, not {:?}; remove it",
                    kind.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Returns a path key's value, which must be absolute and one line (it is passed to the
/// proxy's programs and, for nginx, written into a root-owned file), or `default`.
fn absolute(
    source: Source,
    value: Option<Spanned<PathBuf>>,
    key: &str,
    kind: ProxyKind,
    default: PathBuf,
) -> Result<PathBuf, Error> {
    let Some(value) = value else { return Ok(default) };
    let text = value.get_ref().to_string_lossy();
    let clean = !text.chars().any(|c| c.is_control() || c == '"' || c == '\\' || c == ';');
    if !value.get_ref().is_absolute() || !clean {
        return Err(source.invalid_at(
            &value,
            format!(
                "`app.proxy.{key}` ({} proxy): {text:?} is not an absolute path without quotes, `;` or control characters",
                kind.name()
            ),
        ));
    }
    Ok(value.into_inner())
}

/// Returns the HAProxy backend's name, the unit's name when not given.
fn backend(source: Source, value: Option<Spanned<String>>, name: &str) -> Result<String, Error> {
    let Some(value) = value else { return Ok(name.to_owned()) };
    let text = value.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 100
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !valid {
        return Err(source.invalid_at(
            &value,
            format!("`app.proxy.backend`: {text:?} is not a backend name; use letters, digits and `-_.:`"),
        ));
    }
    Ok(value.into_inner())
}
