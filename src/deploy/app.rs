//! Phase 2 of an app (`[app]`): the new slot's instance is started and must pass the
//! **health gate** on its own port; the proxy is **pointed** at it ([`crate::app::proxy`]) and
//! the **check** (`[app.check]`) must pass through the proxy, or the proxy goes back to the old
//! instance; only then does [`super::switch`] rename the link (which records the live slot),
//! and the old instance is **drained** and stopped (invariant 7). Until the link moves, the old
//! instance serves or can serve again at once.
//!
//! Every systemctl call runs as the user pushdeploy runs as; in production that is the git
//! user, allowed exactly these units by a sudoers drop-in.

use std::thread;
use std::time::{Duration, Instant};

use super::{Failure, RETRY, Run};
use crate::app::progress::{self, Step};
use crate::app::proxy::{self, Pointed, port};
use crate::app::{http, release, state, systemd};
use crate::config::App;
use crate::git::CommitId;
use crate::report;
use crate::target_dir::Slot;
use crate::target_dir::history::Stage;

/// How often the gate asks the instance: a refused connect costs microseconds, and every
/// millisecond between the app's first answer and the gate's is the pusher's wait.
const POLL: Duration = Duration::from_millis(10);
/// How often the gate asks systemd whether the instance died: each ask runs `systemctl`
/// (through sudo for the git user), tens of milliseconds of CPU.
const STATE_POLL: Duration = Duration::from_millis(100);
/// The longest one health GET may take (the deadline bounds the gate as a whole): short, so
/// an app that accepts but hangs still lets the gate ask systemd often.
const GATE_GET_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest one GET of the check may take.
const CHECK_GET_TIMEOUT: Duration = Duration::from_secs(2);
/// The header by which an app names the commit it runs, which the gate after a reload reads.
const COMMIT_HEADER: &str = "x-pushdeploy-commit";

/// Tells whether an `X-Pushdeploy-Commit` value names `commit` (in full, or 7 digits or more).
fn names(value: Option<&str>, commit: CommitId) -> bool {
    let hex = commit.hex();
    value.is_some_and(|value| value.len() >= 7 && hex.starts_with(value.trim()))
}

/// How many times the check through the proxy is tried, and how long apart.
const CHECK_TRIES: u32 = 5;
const CHECK_PAUSE: Duration = Duration::from_millis(300);

/// The new slot's instance, started, healthy and behind the proxy; the link not moved yet.
pub(super) struct Started<'a> {
    app: &'a App,
    unit: String,
    /// The slot whose instance served before, still running.
    old: Option<Slot>,
    pointed: Pointed,
    commit: CommitId,
    /// `restart` and `reload`: the release the one instance ran before, which it goes back
    /// to when the link cannot be moved.
    previous: Option<Previous>,
    target: &'a std::path::Path,
}

/// The release the one instance of `restart` and `reload` ran before the deploy.
#[derive(Debug, Clone, Copy)]
struct Previous {
    slot: Slot,
    commit: CommitId,
}

/// Starts the new slot's instance on the release prepared in it, waits for its health gate,
/// points the proxy at it and checks it through the proxy. `None` for a site (no `[app]`).
/// Whatever fails stops the new instance again, with the proxy back on the old one.
/// A kept release (an instant rollback) whose instance still runs (`keep_previous`) is gated as
/// it runs: no `release`, no restart.
pub(super) fn start<'a>(
    run: &Run<'a>,
    commit: CommitId,
    kept: bool,
) -> Result<Option<Started<'a>>, Failure> {
    let Some(app) = run.config.app.as_ref() else { return Ok(None) };
    if app.strategy.is_single() {
        return swap(run, app, commit).map(Some);
    }
    let slot = run.slot;
    let unit = systemd::instance(app, slot);
    let target = &run.layout.target;
    progress::record(target, commit, slot, Step::Start);
    state::write_slot_env(app, slot, &commit.to_string())
        .map_err(|err| Failure::new(Stage::Activate, err, RETRY))?;
    let running = kept && systemd::state(&unit).is_ok_and(|state| state.is_running());
    if running {
        report::line(&format!("{unit} still runs the kept release: no restart"));
    } else {
        release::run(app, slot)
            .map_err(|err| Failure::new(Stage::Release, err.reason, err.hint))?;
    }
    gate_new(app, &unit, slot, !running)?;
    let old = run.live.as_ref().map(|live| live.slot).filter(|old| *old != slot);
    progress::record(target, commit, slot, Step::Point);
    let pointing = Instant::now();
    let pointed = proxy::point(app, slot, old).map_err(|why| {
        stop_quietly(&unit);
        Failure::new(Stage::Activate, format!("proxy switch: {why}"), RETRY)
    })?;
    if app.proxy != crate::config::Proxy::None {
        report::line(&format!(
            "proxy: {} now sends requests to {unit} (switched in {})",
            app.proxy.kind().name(),
            report::seconds(pointing.elapsed())
        ));
    }
    if let Some(check) = &app.check {
        progress::record(target, commit, slot, Step::Check);
        if let Err(answer) = check_through(&check.url, Some(slot)) {
            progress::record(target, commit, slot, Step::PointBack);
            let back = point_back(app, old);
            stop_quietly(&unit);
            let mut failure = Failure::new(
                Stage::Activate,
                format!("check through the proxy: {} answered {answer}; {back}", check.url),
                RETRY,
            );
            failure.rolled_back = app.proxy != crate::config::Proxy::None;
            return Err(failure);
        }
        report::line(&format!("check: {} answered 2xx from {slot}", check.url));
    }
    progress::record(target, commit, slot, Step::Link);
    Ok(Some(Started { app, unit, old, pointed, commit, previous: None, target }))
}

/// `restart` and `reload`: moves the one instance onto the release prepared in the new slot
/// (its link and environment, then `systemctl restart`, or `systemctl reload` while it
/// runs), gates it and checks it through the proxy. On a failure it is moved back onto the
/// release it ran before, and the failure line says how that went.
fn swap<'a>(run: &Run<'a>, app: &'a App, commit: CommitId) -> Result<Started<'a>, Failure> {
    let (slot, target) = (run.slot, &run.layout.target);
    let unit = systemd::single(app);
    let previous = run.live.as_ref().filter(|live| live.slot != slot).and_then(|live| {
        let record = crate::target_dir::record::read(run.layout, live.slot).ok().flatten()?;
        Some(Previous { slot: live.slot, commit: record.commit })
    });
    progress::record(target, commit, slot, Step::Start);
    release::run(app, slot).map_err(|err| Failure::new(Stage::Release, err.reason, err.hint))?;
    progress::record(target, commit, slot, Step::Swap);
    if let Err((mut failure, swapped)) = move_to(app, &unit, target, slot, commit) {
        progress::record(target, commit, slot, Step::SwapBack);
        let back = match previous {
            Some(previous) => move_back(app, &unit, target, previous, swapped),
            None => {
                stop_quietly(&unit);
                "nothing was live before".to_owned()
            }
        };
        failure.reason = format!("{}; {back}", failure.reason);
        return Err(failure);
    }
    if let Some(check) = &app.check {
        progress::record(target, commit, slot, Step::Check);
        // The proxy's slot header means nothing here: the one port is no slot's.
        if let Err(answer) = check_through(&check.url, None) {
            progress::record(target, commit, slot, Step::SwapBack);
            let back = match previous {
                Some(previous) => move_back(app, &unit, target, previous, true),
                None => {
                    stop_quietly(&unit);
                    "nothing was live before".to_owned()
                }
            };
            let mut failure = Failure::new(
                Stage::Activate,
                format!("check through the proxy: {} answered {answer}; {back}", check.url),
                RETRY,
            );
            failure.rolled_back = previous.is_some();
            return Err(failure);
        }
        report::line(&format!("check: {} answered 2xx", check.url));
    }
    progress::record(target, commit, slot, Step::Link);
    Ok(Started { app, unit, old: None, pointed: Pointed::Nothing, commit, previous, target })
}

/// Points the one instance at `slot`'s release of `commit` and restarts it (`restart`, or
/// `reload` before its first start) or reloads it (`reload`), then gates it. The error says
/// whether the instance was replaced (a failed `systemctl reload` leaves the old one running).
fn move_to(
    app: &App,
    unit: &str,
    target: &std::path::Path,
    slot: Slot,
    commit: CommitId,
) -> Result<(), (Failure, bool)> {
    let io = |why: String| (Failure::new(Stage::Activate, why, RETRY), false);
    state::write_current_env(app, slot, &commit.hex()).map_err(|err| io(err.to_string()))?;
    state::point_current(target, slot).map_err(io)?;
    let running = systemd::state(unit).is_ok_and(|state| state.is_running());
    if app.strategy == crate::config::Strategy::Reload && running {
        reload_gate(app, unit, slot, commit)
    } else {
        gate_new(app, unit, slot, true).map_err(|failure| (failure, true))
    }
}

/// Moves the one instance back onto `previous` after the new release failed; returns what
/// happened, for the failure line. An instance that was not replaced (its reload failed) only
/// has its link and environment put back.
fn move_back(
    app: &App,
    unit: &str,
    target: &std::path::Path,
    previous: Previous,
    swapped: bool,
) -> String {
    let Previous { slot, commit } = previous;
    let shown = format!("{} in {slot}", commit.short());
    let put_back = state::write_current_env(app, slot, &commit.hex())
        .map_err(|err| err.to_string())
        .and_then(|()| state::point_current(target, slot));
    if let Err(why) = put_back {
        return format!("putting the previous release ({shown}) back failed too: {why}");
    }
    if !swapped {
        return format!("{unit} kept running the previous release ({shown})");
    }
    let again = match app.strategy {
        crate::config::Strategy::Reload => {
            reload_gate(app, unit, slot, commit).map_err(|(failure, _)| failure)
        }
        _ => gate_new(app, unit, slot, true),
    };
    let verb =
        if app.strategy == crate::config::Strategy::Reload { "reloaded" } else { "restarted" };
    match again {
        Ok(()) => format!("{verb} {unit} on the previous release ({shown}), which answered"),
        Err(failure) => {
            format!(
                "moving {unit} back to the previous release ({shown}) failed too: {}",
                failure.reason
            )
        }
    }
}

/// `systemctl reload` (the unit's `ExecReload=`), then the gate, which must see the answer
/// name `commit` (`X-Pushdeploy-Commit`): the reloaded app runs the new code, not only runs.
fn reload_gate(app: &App, unit: &str, slot: Slot, commit: CommitId) -> Result<(), (Failure, bool)> {
    let started = Instant::now();
    let invocation = systemd::invocation(unit).unwrap_or_default();
    let show_journal = || {
        for line in systemd::journal_tail(&invocation) {
            report::line(&format!("{unit}: {line}"));
        }
    };
    if let Err(why) = systemd::reload(unit) {
        show_journal();
        let hint = format!("the journal of {unit} is above; fix the app and push again");
        return Err((Failure::new(Stage::Activate, format!("reload: {why}"), hint), false));
    }
    let gated = gate(app, unit, port(app, slot), started)
        .and_then(|_| gate_commit(app, port(app, slot), started, commit));
    match gated {
        Ok(status) => {
            report::line(&format!(
                "health gate: {unit} answered HTTP {status} from {} after its reload ({})",
                commit.short(),
                report::seconds(started.elapsed())
            ));
            Ok(())
        }
        Err(reason) => {
            show_journal();
            let hint = format!("the journal of {unit} is above; fix the app and push again");
            Err((Failure::new(Stage::Activate, format!("health gate: {reason}"), hint), true))
        }
    }
}

/// Restarts the new instance (unless `restart` is false: it runs already) and waits for its
/// gate; a failed gate stops it and shows the pusher the journal of this run.
pub(super) fn gate_new(app: &App, unit: &str, slot: Slot, restart: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let mut invocation = String::new();
    let restarted = if restart { systemd::restart(unit) } else { Ok(()) };
    let gate = restarted.and_then(|()| {
        invocation = systemd::invocation(unit)?;
        gate(app, unit, port(app, slot), started)
    });
    match gate {
        Ok(status) => {
            report::line(&format!(
                "health gate: {unit} answered HTTP {status} after {}",
                report::seconds(started.elapsed())
            ));
            Ok(())
        }
        Err(reason) => {
            stop_quietly(unit);
            for line in systemd::journal_tail(&invocation) {
                report::line(&format!("{unit}: {line}"));
            }
            let hint = if crate::app::sudo::is_refusal(&reason) {
                crate::app::sudo::REFUSED_HINT.to_owned()
            } else {
                format!("the journal of {unit} is above; fix the app and push again")
            };
            Err(Failure::new(Stage::Activate, format!("health gate: {reason}"), hint))
        }
    }
}

/// Polls the instance's health URL until it answers 2xx; fails as soon as systemd says the
/// unit exited, failed or restarted (asked every [`STATE_POLL`]), and at the deadline
/// otherwise.
fn gate(app: &App, unit: &str, port: u16, started: Instant) -> Result<u16, String> {
    let url = format!("http://127.0.0.1:{port}{}", app.health.path);
    let deadline = Instant::now() + app.health.deadline;
    // The last status the app gave says more than a timeout cut short by the deadline.
    let mut last: http::Answer = Err("no answer".to_owned());
    let mut state_asked: Option<Instant> = None;
    loop {
        if state_asked.is_none_or(|asked| asked.elapsed() >= STATE_POLL) {
            state_asked = Some(Instant::now());
            if let Some(why) = systemd::state(unit)?.dead() {
                return Err(format!(
                    "{unit} stopped {} after its start, before {url} answered ({why})",
                    report::seconds(started.elapsed())
                ));
            }
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

/// After a reload: asks the health URL until an answer is a 2xx that names `commit` in
/// `X-Pushdeploy-Commit` (the reloaded app runs the new code, not only runs), within what is
/// left of the deadline since `started`.
fn gate_commit(app: &App, port: u16, started: Instant, commit: CommitId) -> Result<u16, String> {
    let url = format!("http://127.0.0.1:{port}{}", app.health.path);
    let deadline = started + app.health.deadline;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match http::get_with_header(&url, left.min(GATE_GET_TIMEOUT), COMMIT_HEADER) {
            Ok((status, from))
                if (200..300).contains(&status) && names(from.as_deref(), commit) =>
            {
                return Ok(status);
            }
            Ok((status, from)) => {
                let from = from.map_or("no X-Pushdeploy-Commit header".to_owned(), |from| {
                    format!("X-Pushdeploy-Commit {}", report::escape(&from))
                });
                format!("HTTP {status} with {from}")
            }
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{url} did not answer 2xx from {} within {} after the reload (last answer: {last})",
                commit.short(),
                humantime::format_duration(app.health.deadline),
            ));
        }
        thread::sleep(CHECK_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Takes the new instance back when the link could not be moved: the proxy goes back to the
/// old instance, which still runs, and the new one stops.
pub(super) fn abandon(started: Option<Started<'_>>) {
    if let Some(Started { app, unit, previous, target, .. }) = &started
        && app.strategy.is_single()
    {
        let back = match previous {
            Some(previous) => move_back(app, unit, target, *previous, true),
            _ => {
                stop_quietly(unit);
                "nothing was live before".to_owned()
            }
        };
        report::line(&format!("app: {back}"));
        return;
    }
    if let Some(started) = started {
        let back = point_back(started.app, started.old);
        report::line(&format!("proxy: {back}"));
        stop_quietly(&started.unit);
    }
}

/// After the link moved: the old instance is drained (the proxy has nothing left in flight to
/// it, within `stop_timeout`), then stopped, or kept running with `[retire] keep_previous`
/// for an instant rollback.
pub(super) fn settle(run: &Run<'_>, started: Option<Started<'_>>) {
    let Some(Started { app, old: Some(old), pointed, commit, .. }) = started else { return };
    progress::record(&run.layout.target, commit, run.slot, Step::Stop);
    let old_unit = systemd::instance(app, old);
    let started = Instant::now();
    if let Err(why) = proxy::drain(app, pointed, old, app.stop_timeout) {
        report::line(&format!("warning: drain of {old_unit}: {why}; stopping it anyway"));
    }
    let drained = started.elapsed();
    // With `socket` a kept instance would go on taking connections from the shared socket,
    // serving the old release: it stops, and only its files are kept.
    if run.config.retire.keep_previous && app.strategy != crate::config::Strategy::Socket {
        report::line(&format!(
            "kept the old instance {old_unit} running (drained in {}) for an instant `pushdeploy rollback`",
            report::seconds(drained)
        ));
        return;
    }
    match systemd::stop(&old_unit) {
        Ok(()) => report::line(&format!(
            "stopped the old instance {old_unit} (drained in {}, stopped in {})",
            report::seconds(drained),
            report::seconds(started.elapsed() - drained)
        )),
        Err(err) => report::line(&format!("warning: {err}; stop it by hand")),
    }
}

/// GETs the check URL a few times; `Err` with the last answer when none was a 2xx from the
/// new instance (a proxy that names the answering slot in `X-Pushdeploy-Slot` must name
/// `slot`, when given).
fn check_through(url: &str, slot: Option<Slot>) -> Result<(), String> {
    let mut answer = Err("no answer".to_owned());
    for try_number in 0..CHECK_TRIES {
        if try_number > 0 {
            thread::sleep(CHECK_PAUSE);
        }
        let got = http::get_with_slot(url, CHECK_GET_TIMEOUT);
        answer = match got {
            Ok((status, Some(from)))
                if slot.is_some_and(|slot| from != slot.name()) && (200..300).contains(&status) =>
            {
                Err(format!("HTTP {status} from the {} instance", report::escape(&from)))
            }
            Ok((status, _)) => Ok(status),
            Err(err) => Err(err),
        };
        if http::is_success(&answer) {
            return Ok(());
        }
    }
    Err(http::describe(&answer))
}

/// Points the proxy back at the old instance; says what it did, for the failure line. A first
/// deploy has no old instance: the proxy is left on the new one, which stops.
fn point_back(app: &App, old: Option<Slot>) -> String {
    let Some(old) = old else { return "nothing was live before".to_owned() };
    if app.proxy == crate::config::Proxy::None {
        return format!("{old} still serves");
    }
    match proxy::point(app, old, None) {
        Ok(_) => format!("the proxy went back to {old}"),
        Err(why) => format!("pointing the proxy back to {old} failed: {why}"),
    }
}

/// Stops an instance, warning (not failing) when systemd refuses.
fn stop_quietly(unit: &str) {
    if let Err(err) = systemd::stop(unit) {
        report::line(&format!("warning: {err}"));
    }
}
