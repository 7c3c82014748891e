//! The app part of `pushdeploy status`: each slot's instance (unit, port, what systemd says),
//! where the proxy points, and a deploy that was interrupted part-way.

use serde::Serialize;

use crate::app::{progress, proxy, systemd};
use crate::config::{App, Proxy, Strategy};
use crate::target_dir::Slot;

/// What `status` tells of an app.
#[derive(Debug, Serialize)]
pub struct AppStatus {
    pub live: Option<Instance>,
    /// The other slot's instance (blue's, before the first deploy); none for `restart` and
    /// `reload`, whose one instance is `live`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Instance>,
    /// The strategy (`blue-green`, `restart`, `socket`, `reload`).
    pub strategy: &'static str,
    /// `socket`: the shared socket, where it listens and what systemd says of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// The proxy's kind (`caddy`, ..., `none`).
    pub proxy: &'static str,
    /// The slot the proxy sends requests to; `None` for no proxy, or when it cannot tell.
    pub proxy_slot: Option<Slot>,
    /// Why where the proxy points is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_error: Option<String>,
    /// The step a deploy was killed in (`point`, ...): the next deploy puts it right.
    pub interrupted: Option<String>,
}

/// One slot's instance.
#[derive(Debug, Serialize)]
pub struct Instance {
    pub slot: Slot,
    pub unit: String,
    pub port: u16,
    /// `active/running`, `inactive/dead`, ... or why systemd could not be asked.
    pub state: String,
}

/// Asks systemd and the proxy about `app`, whose live slot is `live`.
pub fn status(app: &App, target: &std::path::Path, live: Option<Slot>) -> AppStatus {
    let single = app.strategy.is_single();
    let instance = |slot: Slot| {
        let unit = if single { systemd::single(app) } else { systemd::instance(app, slot) };
        let state = match systemd::state(&unit) {
            Ok(state) => format!("{}/{}", state.active, state.sub),
            Err(why) => why,
        };
        Instance { slot, port: proxy::port(app, slot), unit, state }
    };
    // restart and reload never switch the proxy: it names the one port.
    let (proxy_slot, proxy_error) = match proxy::current(app) {
        _ if single => (live, None),
        Ok(slot) => (slot, None),
        Err(why) => (None, Some(why)),
    };
    let socket = app.listen.filter(|_| app.strategy == Strategy::Socket).map(|listen| {
        let unit = systemd::socket(app);
        let state = match systemd::state(&unit) {
            Ok(state) => format!("{}/{}", state.active, state.sub),
            Err(why) => why,
        };
        format!("{unit} on {listen} ({state})")
    });
    let interrupted = progress::read(target).map(|progress| match progress {
        Some(progress) => progress.step.name().to_owned(),
        None => "unknown".to_owned(),
    });
    AppStatus {
        live: live.map(instance),
        other: (!single).then(|| instance(live.map_or(Slot::Blue, Slot::other))),
        strategy: app.strategy.name(),
        socket,
        proxy: app.proxy.kind().name(),
        proxy_slot,
        proxy_error,
        interrupted,
    }
}

/// Returns the text lines of an app's status, after the release's.
pub fn text(app: &App, status: &AppStatus) -> String {
    let mut out = String::new();
    for (label, instance) in [("app:", status.live.as_ref()), ("other:", status.other.as_ref())] {
        if let Some(instance) = instance {
            let release = if app.strategy.is_single() {
                format!(", {} strategy, release in {}", status.strategy, instance.slot)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{label:<7} {} on 127.0.0.1:{} ({}{release})\n",
                instance.unit, instance.port, instance.state
            ));
        }
    }
    if let Some(socket) = &status.socket {
        out.push_str(&format!("socket: {socket}, shared by both slots' instances\n"));
    }
    let points = match (&app.proxy, status.proxy_slot, &status.proxy_error) {
        (Proxy::None, ..) => "none (clients reach the live instance's port)".to_owned(),
        _ if app.strategy.is_single() => {
            format!("{} -> 127.0.0.1:{} (the one instance)", status.proxy, app.ports.blue)
        }
        (_, _, Some(why)) => format!("{}, pointing at an unknown slot: {why}", status.proxy),
        (_, Some(slot), None) => format!("{} -> {slot}", status.proxy),
        (_, None, None) => format!("{}, pointing at neither slot", status.proxy),
    };
    out.push_str(&format!("proxy:  {points}\n"));
    if let Some(step) = &status.interrupted {
        out.push_str(&format!(
            "note:   a deploy was interrupted (at its {step} step); the next deploy puts things right\n"
        ));
    }
    out
}
