//! Before an app deploy (and a rollback) does anything: what a deploy killed part-way left
//! behind is put right, so that exactly one instance serves, the live one, with the proxy
//! pointing at it. The link is the truth (it moves only once the new instance has passed its
//! gate and its check); the progress record ([`crate::app::progress`]) only says what the
//! killed deploy was doing. Cheap when nothing is wrong: a `systemctl show` per slot and a
//! look at the proxy.

use std::time::Instant;

use super::app::gate_new;
use crate::app::progress::{Progress, Step};
use crate::app::{progress, proxy, state, systemd};
use crate::config::{App, Config, Proxy};
use crate::error::Error;
use crate::report;
use crate::target_dir::{Layout, Slot};

/// Converges the app's instances and proxy on the live slot; nothing for a site. An error
/// means the deploy must not go on (the proxy could not be pointed away from the slot it would
/// deploy into).
pub(super) fn converge(config: &Config, layout: &Layout) -> Result<(), Error> {
    let Some(app) = &config.app else { return Ok(()) };
    let interrupted = progress::read(&layout.target);
    match &interrupted {
        Some(Some(progress)) => report::line(&format!(
            "the deploy of {} into {} (pid {}) was interrupted while {}; putting things right first",
            progress.commit.short(),
            progress.slot,
            progress.pid,
            progress.step.describe()
        )),
        Some(None) => report::line("an earlier deploy was interrupted; putting things right first"),
        None => {}
    }
    let live = layout.live()?.map(|live| live.slot);
    if app.strategy.is_single() {
        if let Some(live) = live {
            converge_single(app, layout, live);
        }
        progress::clear(&layout.target);
        return Ok(());
    }
    // Killed while changing the proxy, the file pushdeploy writes may already say one thing
    // while the proxy still does another (written, not yet reloaded): point it again.
    let unsure = matches!(
        &interrupted,
        Some(None) | Some(Some(Progress { step: Step::Point | Step::PointBack, .. }))
    );
    if let Some(live) = live {
        ensure_running(app, live);
        point_at(app, live, unsure)?;
    }
    // A kept previous instance (`keep_previous`) is no stray, unless a deploy was interrupted
    // and the other slot may hold anything.
    let keep = config.retire.keep_previous
        && app.strategy != crate::config::Strategy::Socket
        && interrupted.is_none()
        && live.is_some();
    for slot in Slot::ALL.into_iter().filter(|slot| Some(*slot) != live && !keep) {
        stop_stray(app, slot);
    }
    progress::clear(&layout.target);
    Ok(())
}

/// `restart` and `reload`: the one instance must run the live release. A deploy killed after
/// moving it onto its new release (and before the link moved) left it there: it is moved back
/// (link, environment, restart); one that does not run is started.
fn converge_single(app: &App, layout: &Layout, live: Slot) {
    let unit = systemd::single(app);
    let target = &layout.target;
    let commit = match crate::target_dir::record::read(layout, live) {
        Ok(Some(record)) => record.commit.hex(),
        _ => String::new(),
    };
    let moved = state::current_slot(target) != Some(live);
    if moved {
        report::line(&format!(
            "{unit} was left on another release than the live one ({live}): restarting it there"
        ));
        let put_back = state::write_current_env(app, live, &commit)
            .map_err(|err| err.to_string())
            .and_then(|()| state::point_current(target, live));
        if let Err(why) = put_back {
            report::line(&format!("warning: {why}"));
        }
    }
    let running = systemd::state(&unit).is_ok_and(|state| state.is_running());
    if moved || !running {
        if !moved {
            report::line(&format!("{unit} does not run: starting it again"));
        }
        if let Err(failure) = gate_new(app, &unit, live, true) {
            report::line(&format!("warning: {}", failure.reason));
        }
    }
}

/// Starts the live instance again when it does not run (it passes its gate, or the deploy
/// goes on anyway: the new instance replaces it).
fn ensure_running(app: &App, live: Slot) {
    let unit = systemd::instance(app, live);
    match systemd::state(&unit) {
        Ok(state) if state.is_running() => {}
        Ok(state) => {
            report::line(&format!(
                "the live instance {unit} is {}/{}: starting it again",
                state.active, state.sub
            ));
            if let Err(failure) = gate_new(app, &unit, live, true) {
                report::line(&format!("warning: {}", failure.reason));
            }
        }
        Err(why) => report::line(&format!("warning: {why}")),
    }
}

/// Points the proxy at the live instance when it points elsewhere (a deploy was killed after
/// pointing it at its new instance and before moving the link), or always when `unsure`.
fn point_at(app: &App, live: Slot, unsure: bool) -> Result<(), Error> {
    if app.proxy == Proxy::None {
        return Ok(());
    }
    let current = proxy::current(app).map_err(|why| {
        Error::user(format!("cannot tell where the proxy points: {why}"), super::RETRY)
    })?;
    if current == Some(live) && !unsure {
        return Ok(());
    }
    let other = live.other();
    let pointed = proxy::point(app, live, Some(other)).map_err(|why| {
        Error::user(
            format!("the proxy does not point at the live instance ({live}) and cannot be pointed back: {why}"),
            "fix the proxy, then push again; nothing was deployed",
        )
    })?;
    report::line(&format!(
        "proxy: {} points at the live instance {live} again",
        app.proxy.kind().name()
    ));
    let started = Instant::now();
    if let Err(why) = proxy::drain(app, pointed, other, app.stop_timeout) {
        report::line(&format!("warning: drain of {other}: {why}"));
    } else if started.elapsed().as_millis() > 0 {
        report::line(&format!("drained {other} in {}", report::seconds(started.elapsed())));
    }
    Ok(())
}

/// Stops an instance that should not run (the other slot's, left by a killed deploy).
fn stop_stray(app: &App, slot: Slot) {
    let unit = systemd::instance(app, slot);
    match systemd::state(&unit) {
        Ok(state) if state.is_stopped() => {}
        Ok(_) => match systemd::stop(&unit) {
            Ok(()) => {
                report::line(&format!("stopped {unit}, left running by the interrupted deploy"))
            }
            Err(why) => report::line(&format!("warning: {why}")),
        },
        Err(why) => report::line(&format!("warning: {why}")),
    }
}
