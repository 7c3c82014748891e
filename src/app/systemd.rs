//! The few `systemctl` and `journalctl` calls an app deploy makes on an instance of the
//! app's template unit. Unit names come from the validated `[app] name` and a slot, and go to
//! the programs as arguments, never through a shell. Each runs through [`sudo::command`]: as
//! root directly, as the git user through `sudo -n`, which lets it run exactly these command
//! lines (their arguments are constants here, so the sudoers rules are made from the same ones).

use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use super::sudo;
use crate::config::App;
use crate::report::escape;
use crate::target_dir::Slot;

/// How many journal lines a failed instance shows the pusher.
pub const JOURNAL_LINES: &str = "20";
/// The arguments of `journalctl` before the number of lines and the filter.
pub const JOURNAL_ARGS: [&str; 4] = ["--no-pager", "-o", "cat", "-n"];
/// The journal field [`journal_tail`] matches, followed by the invocation id.
pub const INVOCATION_FIELD: &str = "_SYSTEMD_INVOCATION_ID=";
/// The journal field [`journal_since`] matches, followed by the unit.
pub const UNIT_FIELD: &str = "_SYSTEMD_UNIT=";
/// The arguments of `systemctl show` in [`state`], before the unit.
pub const STATE_ARGS: [&str; 3] = ["show", "-p", "ActiveState,SubState,NRestarts"];
/// The arguments of `systemctl show` in [`run_result`], before the unit.
pub const RUN_RESULT_ARGS: [&str; 3] =
    ["show", "-p", "LoadState,Result,ExecMainCode,ExecMainStatus,ExecMainStartTimestampMonotonic"];
/// The arguments of `systemctl show` in [`invocation`], before the unit.
pub const INVOCATION_ARGS: [&str; 4] = ["show", "-p", "InvocationID", "--value"];

/// Returns the unit of `slot`'s instance, `pushdeploy-NAME@SLOT.service`.
pub fn instance(app: &App, slot: Slot) -> String {
    format!("pushdeploy-{}@{}.service", app.name, slot.name())
}

/// Returns the one unit of the `restart` and `reload` strategies, `pushdeploy-NAME.service`.
pub fn single(app: &App) -> String {
    format!("pushdeploy-{}.service", app.name)
}

/// Returns the socket the `socket` strategy's instances share, `pushdeploy-NAME.socket`.
pub fn socket(app: &App) -> String {
    format!("pushdeploy-{}.socket", app.name)
}

/// Returns the unit of `slot`'s run of `[app] release`, `pushdeploy-NAME-release@SLOT.service`.
pub fn release_instance(app: &App, slot: Slot) -> String {
    format!("pushdeploy-{}-release@{}.service", app.name, slot.name())
}

/// Runs `systemctl ARGS UNIT`; an error is one line with what systemctl said.
fn systemctl(verb: &str, extra: &[&str], unit: &str) -> Result<String, String> {
    let output = sudo::command("systemctl")
        .arg(verb)
        .args(extra)
        .arg(unit)
        .output()
        .map_err(|err| format!("cannot run `systemctl {verb} {unit}`: {err}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(format!("`systemctl {verb} {unit}` failed: {}", first_line(&output)))
}

fn first_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or("no message");
    sudo::explain(escape(line.trim()))
}

/// Restarts `unit` (starts it when it is stopped), so it runs the slot's new release.
pub fn restart(unit: &str) -> Result<(), String> {
    systemctl("restart", &[], unit).map(drop)
}

/// Reloads `unit` (its `ExecReload=`) and waits for the job: it fails when that command fails.
pub fn reload(unit: &str) -> Result<(), String> {
    systemctl("reload", &[], unit).map(drop)
}

/// Starts `unit` and waits for the job: for a oneshot unit, until its command has ended.
pub fn start(unit: &str) -> Result<(), String> {
    systemctl("start", &[], unit).map(drop)
}

/// Stops `unit`: systemd sends SIGTERM, then SIGKILL at the unit's `TimeoutStopSec=`.
pub fn stop(unit: &str) -> Result<(), String> {
    systemctl("stop", &[], unit).map(drop)
}

/// What systemd says about a unit while the health gate waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub active: String,
    pub sub: String,
    pub restarts: u32,
}

impl UnitState {
    /// Tells whether the unit runs, or is on its way to (started, not failed or stopping).
    pub fn is_running(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
            && self.sub != "auto-restart"
    }

    /// Tells whether nothing of the unit runs.
    pub fn is_stopped(&self) -> bool {
        matches!(self.active.as_str(), "inactive" | "failed")
    }

    /// Tells why the instance can no longer pass the gate, when it cannot: it exited, failed,
    /// or systemd restarted it (`Restart=on-failure`) or is about to.
    pub fn dead(&self) -> Option<String> {
        let state = format!("{}/{}", self.active, self.sub);
        let why = if self.restarts > 0 {
            format!("it exited and systemd restarted it {} time(s); {state}", self.restarts)
        } else if self.sub == "auto-restart" {
            format!("it exited, systemd is about to restart it; {state}")
        } else if matches!(self.active.as_str(), "failed" | "inactive" | "deactivating") {
            format!("it exited; {state}")
        } else {
            return None;
        };
        Some(why)
    }
}

/// Returns `unit`'s state (`systemctl show -p ActiveState,SubState,NRestarts`).
pub fn state(unit: &str) -> Result<UnitState, String> {
    let text = systemctl(STATE_ARGS[0], &STATE_ARGS[1..], unit)?;
    let mut state = UnitState { active: String::new(), sub: String::new(), restarts: 0 };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("ActiveState", value)) => state.active = value.to_owned(),
            Some(("SubState", value)) => state.sub = value.to_owned(),
            Some(("NRestarts", value)) => state.restarts = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(state)
}

/// How the last run of a oneshot unit ended, as `systemctl show` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// `LoadState`: `not-found` when there is no such unit file.
    pub load: String,
    /// `Result`: `success`, `exit-code`, `signal`, `timeout`, ...
    pub result: String,
    /// `ExecMainCode`: 1 when the command exited, 2 or 3 when a signal ended it.
    pub code: u32,
    /// `ExecMainStatus`: the exit status, or the signal's number.
    pub status: i32,
    /// `ExecMainStartTimestampMonotonic`: when the command started, in microseconds of
    /// `CLOCK_MONOTONIC` (0 when it never did), which tells this run from an earlier one.
    pub started_us: u64,
}

/// Returns how `unit`'s last run ended (see [`RunResult`]).
pub fn run_result(unit: &str) -> Result<RunResult, String> {
    let text = systemctl(RUN_RESULT_ARGS[0], &RUN_RESULT_ARGS[1..], unit)?;
    let mut run =
        RunResult { load: String::new(), result: String::new(), code: 0, status: 0, started_us: 0 };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("LoadState", value)) => run.load = value.to_owned(),
            Some(("Result", value)) => run.result = value.to_owned(),
            Some(("ExecMainCode", value)) => run.code = value.parse().unwrap_or(0),
            Some(("ExecMainStatus", value)) => run.status = value.parse().unwrap_or(0),
            Some(("ExecMainStartTimestampMonotonic", value)) => {
                run.started_us = value.parse().unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(run)
}

/// Returns `CLOCK_MONOTONIC` in microseconds, as systemd's `*TimestampMonotonic` properties
/// count it.
pub fn monotonic_us() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        let (secs, nanos) = (now.tv_sec() as u64, now.tv_nsec() as u64);
        secs * 1_000_000 + nanos / 1_000
    })
}

/// Returns the id systemd gave the unit's current run (`InvocationID`), which tags what the
/// app wrote to the journal during this run only.
pub fn invocation(unit: &str) -> Result<String, String> {
    let text = systemctl(INVOCATION_ARGS[0], &INVOCATION_ARGS[1..], unit)?;
    Ok(text.trim().to_owned())
}

/// Returns the last lines the app wrote during `invocation` (see [`invocation`]), each escaped
/// (they are the app's output, which the pusher's terminal must not interpret). journald
/// takes a moment to store what a dying process wrote: the tail is read until it settles.
pub fn journal_tail(invocation: &str) -> Vec<String> {
    if invocation.is_empty() {
        return Vec::new();
    }
    settled_journal(&[format!("{INVOCATION_FIELD}{invocation}")], JOURNAL_LINES)
}

/// Returns at most the last `lines` lines that `unit`'s processes wrote since `since`, as
/// [`journal_tail`] does. For the run of a oneshot unit, whose invocation id is gone with the
/// unit: systemd unloads an inactive unit nothing refers to as soon as its run has ended.
pub fn journal_since(unit: &str, since: SystemTime, lines: &str) -> Vec<String> {
    let micros = since.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
    // The sudoers rules match exactly this form (`sudo_rules::lines`).
    let since = format!("--since=@{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    settled_journal(&[format!("{UNIT_FIELD}{unit}"), since], lines)
}

/// Reads the last `lines` journal lines that `filter` selects until two reads agree.
fn settled_journal(filter: &[String], lines: &str) -> Vec<String> {
    let read = || {
        let output =
            sudo::command("journalctl").args(JOURNAL_ARGS).arg(lines).args(filter).output();
        match output {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(escape)
                .collect(),
            Ok(output) => vec![format!("(journalctl failed: {})", first_line(&output))],
            Err(err) => vec![format!("(cannot run journalctl: {err})")],
        }
    };
    let mut lines = read();
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = read();
        if again == lines {
            break;
        }
        lines = again;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::UnitState;

    fn state(active: &str, sub: &str, restarts: u32) -> UnitState {
        UnitState { active: active.into(), sub: sub.into(), restarts }
    }

    #[test]
    fn a_running_instance_is_alive_and_a_crashed_one_is_not() {
        assert_eq!(state("active", "running", 0).dead(), None);
        assert_eq!(
            state("failed", "failed", 0).dead().as_deref(),
            Some("it exited; failed/failed")
        );
        assert!(state("activating", "auto-restart", 0).dead().is_some());
        assert!(state("active", "running", 1).dead().is_some_and(|why| why.contains("restarted")));
    }
}
