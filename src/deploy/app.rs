//! Phase 2 of an app (`[app]`): around the link switch of [`super::switch`], the new slot's
//! instance is started and must pass the **health gate** before the switch; after it, the
//! **check** (`[app.check]`) must pass or the link goes back; only then is the old instance
//! stopped (invariant 7). So far only `[app.proxy] kind = "none"`: the link records which slot
//! is live, and clients reach the app on that slot's port.
//!
//! Every systemctl call runs as the user pushdeploy runs as; in production that is the git
//! user, allowed exactly these units by a sudoers drop-in (not written yet).

use std::thread;
use std::time::{Duration, Instant};

use super::{Failure, RETRY, Run};
use crate::app::{http, state, systemd};
use crate::config::App;
use crate::git::CommitId;
use crate::report;
use crate::target_dir::history::Stage;
use crate::target_dir::{Slot, link};

/// How often the gate asks the instance and systemd.
const POLL: Duration = Duration::from_millis(100);
/// The longest one health GET may take (the deadline bounds the gate as a whole): short, so
/// an app that accepts but hangs still lets the gate ask systemd often.
const GATE_GET_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest one GET of the check may take.
const CHECK_GET_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times the check through the proxy is tried, and how long apart.
const CHECK_TRIES: u32 = 5;
const CHECK_PAUSE: Duration = Duration::from_millis(300);

/// The new slot's instance, started and healthy, not yet serving through the link.
pub(super) struct Started<'a> {
    app: &'a App,
    unit: String,
}

/// Starts the new slot's instance on the release prepared in it and waits for its health
/// gate. `None` for a site (no `[app]`). A gate that fails stops the instance again.
pub(super) fn start<'a>(run: &Run<'a>, commit: CommitId) -> Result<Option<Started<'a>>, Failure> {
    let Some(app) = run.config.app.as_ref() else { return Ok(None) };
    let slot = run.slot;
    let unit = systemd::instance(app, slot);
    let fail = |reason: String| Failure::new(Stage::Activate, reason, RETRY);
    state::write_slot_env(&run.layout.target, app, slot, &commit.to_string())
        .map_err(|err| fail(err.to_string()))?;
    let started = Instant::now();
    let mut invocation = String::new();
    let gate = systemd::restart(&unit).and_then(|()| {
        invocation = systemd::invocation(&unit)?;
        gate(app, &unit, port(app, slot), started)
    });
    match gate {
        Ok(status) => {
            report::line(&format!(
                "health gate: {unit} answered HTTP {status} after {}",
                report::seconds(started.elapsed())
            ));
            Ok(Some(Started { app, unit }))
        }
        Err(reason) => {
            stop_quietly(&unit);
            for line in systemd::journal_tail(&invocation) {
                report::line(&format!("{unit}: {line}"));
            }
            let hint = format!("the journal of {unit} is above; fix the app and push again");
            Err(Failure::new(Stage::Activate, format!("health gate: {reason}"), hint))
        }
    }
}

/// Returns the port of `slot`'s instance.
fn port(app: &App, slot: Slot) -> u16 {
    match slot {
        Slot::Blue => app.ports.blue,
        Slot::Green => app.ports.green,
    }
}

/// Polls the instance's health URL until it answers 2xx; fails at once when systemd says the
/// unit exited, failed or restarted, and at the deadline otherwise.
fn gate(app: &App, unit: &str, port: u16, started: Instant) -> Result<u16, String> {
    let url = format!("http://127.0.0.1:{port}{}", app.health.path);
    let deadline = Instant::now() + app.health.deadline;
    // The last status the app gave says more than a timeout cut short by the deadline.
    let mut last: http::Answer = Err("no answer".to_owned());
    loop {
        if let Some(why) = systemd::state(unit)?.dead() {
            return Err(format!(
                "{unit} stopped {} after its start, before {url} answered ({why})",
                report::seconds(started.elapsed())
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = http::get(&url, left.min(GATE_GET_TIMEOUT));
        if let Ok(status) = answer {
            if http::is_success(&answer) {
                return Ok(status);
            }
        }
        if answer.is_ok() || last.is_err() {
            last = answer;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{url} did not answer 2xx within {} (last answer: {})",
                humantime::format_duration(app.health.deadline),
                http::describe(&last)
            ));
        }
        thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Stops the new instance when the switch itself failed: the old one still serves.
pub(super) fn abandon(started: &Option<Started<'_>>) {
    if let Some(started) = started {
        stop_quietly(&started.unit);
    }
}

/// After the switch: the check through the proxy, then the old instance stopped. A failed
/// check puts the link back on the old release (whose instance still runs) and stops the new
/// one.
pub(super) fn settle(run: &Run<'_>, started: Option<Started<'_>>) -> Result<(), Failure> {
    let Some(Started { app, unit }) = started else { return Ok(()) };
    if let Some(check) = &app.check {
        if let Err(answer) = check_through(&check.url) {
            let back = switch_back(run);
            stop_quietly(&unit);
            return Err(Failure::new(
                Stage::Activate,
                format!("check through the proxy: {} answered {answer}; {back}", check.url),
                RETRY,
            ));
        }
        report::line(&format!("check: {} answered 2xx", check.url));
    }
    if let Some(old) = run.live.as_ref().filter(|old| old.slot != run.slot) {
        let old_unit = systemd::instance(app, old.slot);
        match systemd::stop(&old_unit) {
            Ok(()) => report::line(&format!("stopped the old instance {old_unit}")),
            Err(err) => report::line(&format!("warning: {err}; stop it by hand")),
        }
    }
    Ok(())
}

/// GETs the check URL a few times; `Err` with the last answer when none was a 2xx.
fn check_through(url: &str) -> Result<(), String> {
    let mut answer = Err("no answer".to_owned());
    for try_number in 0..CHECK_TRIES {
        if try_number > 0 {
            thread::sleep(CHECK_PAUSE);
        }
        answer = http::get(url, CHECK_GET_TIMEOUT);
        if http::is_success(&answer) {
            return Ok(());
        }
    }
    Err(http::describe(&answer))
}

/// Puts the link back on the release that was live; says what it did, for the failure line.
fn switch_back(run: &Run<'_>) -> String {
    let result = match &run.live {
        Some(old) => link::activate(run.layout, &old.link_target)
            .map(|()| old.slot.to_string())
            .map_err(|err| err.to_string()),
        // A first deploy has nothing to go back to: no link is better than a dangling one.
        None => {
            std::fs::remove_file(&run.layout.link).map(|()| "nothing deployed".to_owned()).map_err(
                |err| format!("cannot remove {}: {err}", report::escape_path(&run.layout.link)),
            )
        }
    };
    match result {
        Ok(to) => format!("rolled back to {to}"),
        Err(err) => format!("rolling back failed: {err}"),
    }
}

/// Stops an instance, warning (not failing) when systemd refuses.
fn stop_quietly(unit: &str) {
    if let Err(err) = systemd::stop(unit) {
        report::line(&format!("warning: {err}"));
    }
}
