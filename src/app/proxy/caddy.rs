//! Caddy: pushdeploy owns one snippet, which the operator's Caddyfile imports inside the
//! app's site block (`import /srv/shop/.pushdeploy/proxy/upstream.caddy`). A switch writes it
//! by rename, has `caddy adapt` read the whole Caddyfile (the old snippet goes back when it
//! fails), and `caddy reload` apply it through the admin API, which needs no root. Since the
//! Caddyfile itself names the live instance, the operator's own reloads keep it.
//!
//! The drain asks the admin API (`/reverse_proxy/upstreams`) how many requests are still in
//! flight to the old instance's address.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{port, slot_of_port};
use crate::app::http;
use crate::config::App;
use crate::error::Error;
use crate::report::{escape, escape_path};
use crate::target_dir::Slot;

/// How often the drain asks the admin API.
const POLL: Duration = Duration::from_millis(50);
/// The admin API's address when the Caddyfile sets none.
const DEFAULT_ADMIN: &str = "localhost:2019";

/// What the drain of the old instance needs: where to ask, and about which upstream.
#[derive(Debug)]
pub struct Pointed {
    /// The admin API's `host:port`, when it listens on TCP.
    admin: Option<String>,
    /// The old instance's upstream address, `127.0.0.1:PORT`.
    old: Option<String>,
}

/// Returns the snippet that sends the site's requests to `slot`'s instance. The header tells
/// the check through the proxy which instance answered. `draining`, the instance it replaces,
/// stays named by a route that matches no request: Caddy keeps an upstream's request count
/// only while some route names it, and the drain reads that count.
pub fn render(app: &App, slot: Slot, draining: Option<Slot>) -> String {
    if app.strategy.is_single() {
        return render_single(app);
    }
    let mut text = format!(
        "# Written by pushdeploy: the live instance of pushdeploy-{name}@.service. Each deploy\n\
         # rewrites it; import it in the app's site block: import {{this file}}\n\
         reverse_proxy 127.0.0.1:{port} {{\n\theader_down X-Pushdeploy-Slot {slot}\n}}\n",
        name = app.name,
        port = port(app, slot),
    );
    if let Some(old) = draining.filter(|old| *old != slot) {
        text.push_str(&format!(
            "# The instance it replaced, matched by no request, so that the deploy can see its\n\
             # requests in flight finish (Caddy's /reverse_proxy/upstreams).\n\
             @pushdeploy_draining expression false\n\
             reverse_proxy @pushdeploy_draining 127.0.0.1:{}\n",
            port(app, old)
        ));
    }
    text
}

/// Returns the snippet of `restart` and `reload`, which no deploy rewrites: the one port,
/// with Caddy holding each request while nothing listens there (a restart) and retrying it
/// every 100 ms, for as long as the health gate may take (`lb_try_duration`). The active
/// health check (`health_uri`) keeps requests away from an instance that listens but does not
/// answer its health path yet, and sends them again once it does.
fn render_single(app: &App) -> String {
    let hold = match app.health.deadline.as_millis().clamp(1000, 600_000) {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    };
    format!(
        "# Written by `pushdeploy init --app`: the one instance of pushdeploy-{name}.service\n\
         # ({strategy} strategy). Deploys do not rewrite it; import it in the app's site block.\n\
         reverse_proxy 127.0.0.1:{port} {{\n\
         \t# While the instance restarts nothing listens: hold each request, retry it.\n\
         \tlb_try_duration {hold}\n\
         \tlb_try_interval 100ms\n\
         \thealth_uri {path}\n\
         \thealth_interval 250ms\n\
         \thealth_timeout 1s\n\
         }}\n",
        name = app.name,
        strategy = app.strategy.name(),
        port = app.ports.blue,
        path = app.health.path,
    )
}

/// Writes the first snippet (pointing at blue, where the first deploy goes) unless there is
/// one; returns the operator's line. A snippet set elsewhere than the target's state
/// directory must be in a directory the git user can write: init says so and writes nothing.
pub fn install(
    target: &Path,
    app: &App,
    snippet: &Path,
    caddyfile: &Path,
) -> Result<Vec<String>, Error> {
    let shown = escape_path(snippet);
    let mut lines = vec![super::install_file(target, snippet, &render(app, Slot::Blue, None))?];
    lines.push(format!(
        "caddy: add `import {shown}` to the app's site block in {} (site-templates/apps/Caddyfile has one); the deploys run `caddy reload --config {}`",
        escape_path(caddyfile),
        escape_path(caddyfile),
    ));
    Ok(lines)
}

/// Writes the snippet for `to`, checks the Caddyfile with `caddy adapt` and applies it with
/// `caddy reload`; on a failure the snippet `from` had is put back.
pub fn point(
    app: &App,
    snippet: &Path,
    caddyfile: &Path,
    to: Slot,
    from: Option<Slot>,
) -> Result<Pointed, String> {
    let old = super::replace_file(snippet, &render(app, to, from))?;
    let applied = adapt(caddyfile).and_then(|admin| {
        caddy(&["reload", "--adapter", "caddyfile", "--config"], caddyfile)?;
        Ok(admin)
    });
    match applied {
        Ok(admin) => {
            let old = from.map(|from| format!("127.0.0.1:{}", port(app, from)));
            Ok(Pointed { admin, old })
        }
        Err(why) => {
            let restored = super::restore_file(snippet, old.as_deref());
            Err(format!("{why}{restored}"))
        }
    }
}

/// Runs `caddy adapt` on the Caddyfile; returns the admin API's TCP address it configures
/// (`None` for a Unix socket or `admin off`).
fn adapt(caddyfile: &Path) -> Result<Option<String>, String> {
    let json = caddy(&["adapt", "--adapter", "caddyfile", "--config"], caddyfile)?;
    let config: serde_json::Value = serde_json::from_str(&json)
        .map_err(|err| format!("`caddy adapt` printed no JSON config ({err})"))?;
    let listen = match &config["admin"] {
        serde_json::Value::Null => DEFAULT_ADMIN,
        admin if admin["disabled"] == true => return Ok(None),
        admin => admin["listen"].as_str().unwrap_or(DEFAULT_ADMIN),
    };
    Ok(admin_address(listen))
}

/// Returns `host:port` for an admin listen address of Caddy's (`localhost:2019`,
/// `tcp/127.0.0.1:2019`, `:2019`); `None` for a Unix socket.
fn admin_address(listen: &str) -> Option<String> {
    let address = listen.strip_prefix("tcp/").unwrap_or(listen);
    if address.starts_with("unix/") || !address.contains(':') {
        return None;
    }
    Some(match address.strip_prefix(':') {
        Some(port) => format!("localhost:{port}"),
        None => address.to_owned(),
    })
}

/// Runs `caddy ARGS CADDYFILE`; returns its stdout, or one line with what it said.
fn caddy(args: &[&str], caddyfile: &Path) -> Result<String, String> {
    let shown = format!("caddy {} {}", args.join(" "), escape_path(caddyfile));
    let output = Command::new("caddy")
        .args(args)
        .arg(caddyfile)
        .output()
        .map_err(|err| format!("cannot run `{shown}`: {err}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(format!("`{shown}` failed: {}", last_error(&output.stderr)))
}

/// Returns the message of the last error line Caddy logged (its logs are JSON lines, or
/// plain text), escaped.
fn last_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message");
    let message = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|json| {
        let msg = json["msg"].as_str()?.to_owned();
        Some(match json["error"].as_str() {
            Some(error) => format!("{msg}: {error}"),
            None => msg,
        })
    });
    escape(message.as_deref().unwrap_or(line.trim()))
}

/// Waits until Caddy has no request in flight to the old instance (or no longer knows it).
pub fn drain(pointed: Pointed, timeout: Duration) -> Result<(), String> {
    let (Some(admin), Some(old)) = (pointed.admin, pointed.old) else { return Ok(()) };
    let url = format!("http://{admin}/reverse_proxy/upstreams");
    let deadline = Instant::now() + timeout;
    loop {
        let in_flight = http::get_json(&url, Duration::from_secs(2)).map(|upstreams| {
            upstreams
                .as_array()
                .into_iter()
                .flatten()
                .find(|u| u["address"] == old.as_str())
                .map_or(0, |u| u["num_requests"].as_u64().unwrap_or(0))
        })?;
        if in_flight == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{in_flight} request(s) to {old} still in flight after {}",
                humantime::format_duration(timeout)
            ));
        }
        thread::sleep(POLL);
    }
}

/// Returns the slot the snippet points at.
pub fn current(app: &App, snippet: &Path) -> Result<Option<Slot>, String> {
    let text = match std::fs::read_to_string(snippet) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(format!("cannot read {}: {err}", escape_path(snippet)));
        }
    };
    let port = text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("reverse_proxy 127.0.0.1:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    Ok(port.and_then(|port| slot_of_port(app, port)))
}

#[cfg(test)]
mod tests {
    use super::{admin_address, last_error};

    #[test]
    fn admin_addresses_are_read_as_caddy_writes_them() {
        assert_eq!(admin_address("localhost:2019").as_deref(), Some("localhost:2019"));
        assert_eq!(admin_address("tcp/127.0.0.1:2999").as_deref(), Some("127.0.0.1:2999"));
        assert_eq!(admin_address(":2019").as_deref(), Some("localhost:2019"));
        assert_eq!(admin_address("unix//run/caddy/admin.sock"), None);
    }

    #[test]
    fn caddys_json_error_lines_become_one_line() {
        let stderr = b"{\"level\":\"info\",\"msg\":\"using config\"}\n{\"level\":\"error\",\"msg\":\"adapting\",\"error\":\"Caddyfile:3: unknown directive\"}\n";
        assert_eq!(last_error(stderr), "adapting: Caddyfile:3: unknown directive");
        assert_eq!(last_error(b"Error: plain\n"), "Error: plain");
    }
}
