//! `[app] release` (migrations): run once per deploy in the new slot, before its instance
//! starts. systemd runs it, through the oneshot template unit init wrote
//! (`pushdeploy-NAME-release@.service`, see `unit::render_release`): as the app's user, with
//! the instance's environment and hardening, bounded by `TimeoutStartSec=` (`release_timeout`).
//! A deploy only starts that fixed unit, which is all the git user may do, and shows the
//! pusher what the command wrote to the journal.

use std::time::{Duration, Instant, SystemTime};

use super::Failed;
use super::systemd::{self, RunResult};
use crate::config::App;
use crate::report;
use crate::target_dir::Slot;

/// How many lines of the command's output the pusher sees at most (the last ones).
pub const OUTPUT_LINES: &str = "200";

/// Runs `[app] release` on the release in `slot`, when the app has one, and waits until it
/// ends; its output goes to the pusher, each line prefixed `release: `. Fails when the command
/// exited with an error, was killed, ran past `release_timeout`, or could not be started.
pub fn run(app: &App, slot: Slot) -> Result<(), Failed> {
    let Some(command) = &app.release else { return Ok(()) };
    let unit = systemd::release_instance(app, slot);
    let shown = format!("`{}`", report::escape(command));
    let (since, started, started_us) = (SystemTime::now(), Instant::now(), systemd::monotonic_us());
    // A oneshot unit: `systemctl start` returns once the command has ended, or timed out.
    let start = systemd::start(&unit);
    let took = started.elapsed();
    for line in systemd::journal_since(&unit, since, OUTPUT_LINES) {
        report::line(&format!("release: {line}"));
    }
    let Err(err) = start else {
        report::line(&format!("release: {shown} finished in {}", report::seconds(took)));
        return Ok(());
    };
    let reason = match systemd::run_result(&unit) {
        // What systemd recorded is this run's only if the command started after `start` did
        // (a `start` refused for want of permission leaves an earlier failure's record).
        Ok(ended) if ended.load == "not-found" || ended.started_us >= started_us => {
            why(&ended, &shown, &unit, app.release_timeout, took)
        }
        _ => None,
    };
    let hint = format!("its output is above (`journalctl -u {unit}`); fix it and push again");
    Err(match reason {
        Some(Why::Missing) => Failed {
            reason: format!("{unit} does not exist, so {shown} could not run"),
            hint: format!(
                "as root, run `pushdeploy init --app` again (it writes {}), then `systemctl daemon-reload`",
                super::unit::release_file_name(app)
            ),
        },
        Some(Why::TimedOut(reason)) => Failed {
            reason,
            hint: "make it faster, or raise `release_timeout` in [app] and run `pushdeploy init --app` again as root".to_owned(),
        },
        Some(Why::Failed(reason)) => Failed { reason, hint },
        None if super::sudo::is_refusal(&err) => Failed {
            reason: format!("{shown} could not run: {err}"),
            hint: super::sudo::REFUSED_HINT.to_owned(),
        },
        None => Failed { reason: format!("{shown} could not run: {err}"), hint },
    })
}

/// What ended a run that `systemctl start` reported as failed.
enum Why {
    /// No release unit: init has not written it.
    Missing,
    TimedOut(String),
    Failed(String),
}

/// Explains a failed run from what systemd recorded; `None` when it recorded nothing useful.
fn why(
    ended: &RunResult,
    shown: &str,
    unit: &str,
    timeout: Duration,
    took: Duration,
) -> Option<Why> {
    let after = report::seconds(took);
    Some(match (ended.load.as_str(), ended.result.as_str(), ended.code) {
        ("not-found", _, _) => Why::Missing,
        (_, "timeout", _) => Why::TimedOut(format!(
            "{shown} did not finish within {} (`release_timeout`); systemd stopped it",
            humantime::format_duration(timeout)
        )),
        (_, "exit-code", 1) => {
            Why::Failed(format!("{shown} exited with status {} after {after}", ended.status))
        }
        (_, _, 2 | 3) => Why::Failed(format!(
            "{shown} was killed by {} after {after}",
            signal_name(ended.status)
        )),
        (_, "success", _) | (_, "", _) => return None,
        (_, result, _) => Why::Failed(format!("{shown} failed after {after} ({unit}: {result})")),
    })
}

/// Returns a signal's name (`SIGKILL`), or its number when it has none.
fn signal_name(number: i32) -> String {
    match nix::sys::signal::Signal::try_from(number) {
        Ok(signal) => signal.as_str().to_owned(),
        Err(_) => format!("signal {number}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{RunResult, Why, why};

    fn ended(load: &str, result: &str, code: u32, status: i32) -> Option<Why> {
        let ended =
            RunResult { load: load.into(), result: result.into(), code, status, started_us: 1 };
        why(&ended, "`migrate`", "u", Duration::from_secs(2), Duration::from_millis(420))
    }

    fn reason(why: Option<Why>) -> String {
        match why {
            Some(Why::TimedOut(reason) | Why::Failed(reason)) => reason,
            Some(Why::Missing) => "missing".to_owned(),
            None => "none".to_owned(),
        }
    }

    #[test]
    fn each_way_a_release_ends_has_its_line() {
        assert_eq!(
            reason(ended("loaded", "exit-code", 1, 3)),
            "`migrate` exited with status 3 after 0.42 s"
        );
        assert_eq!(
            reason(ended("loaded", "timeout", 2, 15)),
            "`migrate` did not finish within 2s (`release_timeout`); systemd stopped it"
        );
        assert_eq!(
            reason(ended("loaded", "signal", 2, 9)),
            "`migrate` was killed by SIGKILL after 0.42 s"
        );
        assert_eq!(reason(ended("not-found", "success", 0, 0)), "missing");
        assert_eq!(reason(ended("loaded", "success", 0, 0)), "none");
    }
}
