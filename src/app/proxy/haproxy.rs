//! HAProxy: the operator's backend holds two fixed servers, `blue` and `green` (one per
//! slot's port), and pushdeploy drives their administrative states over the runtime API
//! ([`api`]): pointing sets the new server `ready`, waits until HAProxy holds it UP, then sets
//! the old one `drain` (new requests go only to the new one); the drain waits until the old
//! server has no session left, then sets it `maint`. No file is rewritten and HAProxy is never
//! reloaded for a deploy.
//!
//! HAProxy's own reloads start from its configuration, where both servers are ready: so after
//! each change the backend's states (`show servers state BACKEND`) are saved to the state file,
//! by rename, which the backend loads at each start (`load-server-state-from-file local` with
//! `server-state-file-name`). A local file can only set this backend's servers.

mod api;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use self::api::{Api, Server, States};
use super::port;
use crate::config::App;
use crate::error::Error;
use crate::report::{self, escape, escape_path};
use crate::target_dir::Slot;

/// How often the waits ask HAProxy.
const POLL: Duration = Duration::from_millis(50);
/// How long a server set `ready` may take to be UP: HAProxy 2.6 holds it UP at once, with
/// health checks or without (a check that fails then takes it down again).
const UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets `to`'s server ready and waits until HAProxy holds it UP, then takes the other server
/// out of the load balancing: `drain` when it is `from` (still running: [`drain`] waits for
/// its sessions), `maint` otherwise (nothing runs there). The state file is saved before (so
/// a file HAProxy could not find again after a reload fails the switch before it changes
/// anything) and after. On a failure `to` goes back to maintenance if it did not serve before.
pub fn point(
    app: &App,
    socket: &Path,
    backend: &str,
    state_file: &Path,
    to: Slot,
    from: Option<Slot>,
) -> Result<(), String> {
    let api = Api::new(socket, backend)?;
    let before = api.states()?;
    let (new, old) = (before.server(backend, to)?, before.server(backend, to.other())?);
    if new.port != port(app, to) {
        return Err(format!(
            "server {backend}/{to} is on port {} in HAProxy's configuration, but `[app] ports` gives {to} {}; fix the server line",
            new.port,
            port(app, to)
        ));
    }
    save(&before, state_file)?;
    if let Err((why, readied)) = switch(&api, backend, (new, old), to, from) {
        // Whatever serves keeps serving: `to` goes back only when the other still serves.
        let undo = if readied && !new.serves() && old.serves() {
            match api.set_state(to, "maint") {
                Ok(()) => format!("; {to} is back in maintenance, {} still serves", to.other()),
                Err(err) => format!("; putting {to} back in maintenance failed too: {err}"),
            }
        } else {
            String::new()
        };
        return Err(format!("{why}{undo}"));
    }
    let after = api.states().and_then(|after| save(&after, state_file));
    if let Err(why) = after {
        report::line(&format!(
            "warning: HAProxy sends requests to {to}, but its state file was not saved: {why}; a reload of HAProxy before the next deploy would bring back the old states"
        ));
    }
    Ok(())
}

/// The state changes of [`point`]: `to` ready and UP, then the other server out. An error
/// says whether `to` was set ready.
fn switch(
    api: &Api<'_>,
    backend: &str,
    (new, old): (&Server, &Server),
    to: Slot,
    from: Option<Slot>,
) -> Result<(), (String, bool)> {
    let other = to.other();
    if new.health_disabled() {
        api.enable_health(to).map_err(|why| (why, false))?;
    }
    api.set_state(to, "ready").map_err(|why| (why, false))?;
    wait_up(api, backend, to).map_err(|why| (why, true))?;
    let out = if from == Some(other) {
        (!old.in_maint() && !old.draining()).then_some("drain")
    } else {
        (!old.in_maint()).then_some("maint")
    };
    match out {
        Some(state) => api.set_state(other, state).map_err(|why| (why, true)),
        None => Ok(()),
    }
}

/// Waits until HAProxy holds `slot`'s server UP, at most [`UP_TIMEOUT`].
fn wait_up(api: &Api<'_>, backend: &str, slot: Slot) -> Result<(), String> {
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        let states = api.states()?;
        let server = states.server(backend, slot)?;
        if server.is_up() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "server {backend}/{slot} is not UP {} after `set server {backend}/{slot} state ready` (HAProxy says {}); check its address and health check in HAProxy's configuration",
                humantime::format_duration(UP_TIMEOUT),
                server.describe()
            ));
        }
        thread::sleep(POLL);
    }
}

/// Waits, at most `timeout`, until `from`'s server has no session left, then puts it in
/// maintenance and saves the states; an error says how many sessions were left.
pub fn drain(
    socket: &Path,
    backend: &str,
    state_file: &Path,
    from: Slot,
    timeout: Duration,
) -> Result<(), String> {
    let api = Api::new(socket, backend)?;
    let deadline = Instant::now() + timeout;
    let left = loop {
        let sessions = api.sessions(from)?;
        if sessions == 0 || Instant::now() >= deadline {
            break sessions;
        }
        thread::sleep(POLL);
    };
    api.set_state(from, "maint")?;
    save(&api.states()?, state_file)?;
    if left > 0 {
        return Err(format!(
            "{} still open on server {backend}/{from} after {}",
            report::things(left, "session"),
            humantime::format_duration(timeout)
        ));
    }
    Ok(())
}

/// Returns the slot whose server the load balancing sends requests to: `None` when neither
/// or both (HAProxy started without the state file, say).
pub fn current(socket: &Path, backend: &str) -> Result<Option<Slot>, String> {
    let states = Api::new(socket, backend)?.states()?;
    let mut serving = Vec::new();
    for slot in Slot::ALL {
        if states.server(backend, slot)?.serves() {
            serving.push(slot);
        }
    }
    Ok(match serving[..] {
        [slot] => Some(slot),
        _ => None,
    })
}

/// Writes the states HAProxy saved to the state file, by rename in its directory.
fn save(states: &States, state_file: &Path) -> Result<(), String> {
    super::write_by_rename(state_file, &states.file).map_err(|err| {
        format!(
            "cannot write HAProxy's state file {}: {err}; its directory must belong to the git user",
            escape_path(state_file)
        )
    })
}

/// Returns the first state file: both servers in maintenance until a deploy sets one ready.
/// HAProxy finds the lines by backend and server name; the ids are not known before HAProxy
/// reads its configuration (it warns of the mismatch until the first deploy saves its own).
fn first_states(app: &App, backend: &str) -> String {
    let mut text = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    for (id, slot) in (1..).zip(Slot::ALL) {
        text.push_str(&format!(
            "0 {backend} {id} {slot} - 0 1 1 1 0 0 0 0 0 0 0 0 - {} - 0 0 - - 0\n",
            port(app, slot)
        ));
    }
    text
}

/// Writes the first state file (in the target's state directory) unless there is one, and
/// returns the lines the operator adds to haproxy.cfg: the `stats socket` line for the git
/// user's group, and the backend with both servers, the header and the state file.
pub fn install(
    target: &Path,
    app: &App,
    socket: &Path,
    backend: &str,
    state_file: &Path,
) -> Result<Vec<String>, Error> {
    let shown = escape_path(state_file);
    let mut lines = vec![super::install_file(target, state_file, &first_states(app, backend))?];
    let group = std::fs::metadata(target)
        .ok()
        .and_then(|meta| nix::unistd::Group::from_gid(meta.gid().into()).ok().flatten())
        .map_or_else(|| "GITGROUP".to_owned(), |group| group.name);
    lines.push(format!(
        "haproxy: in haproxy.cfg's global section (Debian's has the line without `group`): {}",
        api::stats_socket(socket, &escape(&group))
    ));
    lines.push(
        "haproxy: the app's backend (site-templates/apps/haproxy.cfg has it with a frontend); then `systemctl reload haproxy`:"
            .to_owned(),
    );
    for line in [
        format!("backend {backend}"),
        "    load-server-state-from-file local".to_owned(),
        format!("    server-state-file-name {shown}"),
        "    http-response set-header X-Pushdeploy-Slot %[srv_name]".to_owned(),
        format!("    server blue 127.0.0.1:{}", app.ports.blue),
        format!("    server green 127.0.0.1:{}", app.ports.green),
    ] {
        lines.push(line);
    }
    Ok(lines)
}
