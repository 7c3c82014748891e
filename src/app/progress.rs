//! What an app deploy is doing, written before each step of its phase 2 to
//! `TARGET/.pushdeploy/app/progress.json` and removed when the deploy has ended either way. A
//! deploy that finds it was killed (SIGKILL, a power cut) part-way: the next one reads it, says
//! where the other stopped, and converges ([`crate::deploy`]'s `converge`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::git::CommitId;
use crate::target_dir::Slot;

/// A step of an app's phase 2, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// `release`, then the new instance started and gated.
    Start,
    /// The proxy being pointed at the new instance.
    Point,
    /// The check through the proxy.
    Check,
    /// The link being renamed onto the new release.
    Link,
    /// The old instance drained and stopped.
    Stop,
    /// The proxy pointed back at the old instance after a failed check.
    PointBack,
    /// `restart` and `reload`: the one instance being moved onto the new release.
    Swap,
    /// `restart` and `reload`: the one instance being moved back onto the old release.
    SwapBack,
}

impl Step {
    /// Returns the step's name, as the record spells it (`point-back`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Point => "point",
            Step::Check => "check",
            Step::Link => "link",
            Step::Stop => "stop",
            Step::PointBack => "point-back",
            Step::Swap => "swap",
            Step::SwapBack => "swap-back",
        }
    }

    /// Returns the step as the pusher reads it.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Start => "starting the new instance",
            Step::Point => "pointing the proxy at the new instance",
            Step::Check => "checking through the proxy",
            Step::Link => "moving the link",
            Step::Stop => "stopping the old instance",
            Step::PointBack => "pointing the proxy back at the old instance",
            Step::Swap => "moving the app's instance onto the new release",
            Step::SwapBack => "moving the app's instance back onto the old release",
        }
    }
}

/// What a deploy recorded before its last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub commit: CommitId,
    /// The slot being deployed into.
    pub slot: Slot,
    pub step: Step,
    /// The pid of the deploy, for the message.
    pub pid: u32,
}

/// Returns where the progress of `target`'s app deploys is recorded.
pub fn path(target: &Path) -> PathBuf {
    target.join(".pushdeploy").join("app").join("progress.json")
}

/// Records `step` (a temporary file synced, then renamed over the last one), so a deploy
/// killed during the step leaves it behind. A record that cannot be written is a warning:
/// the next deploy converges from what it sees anyway.
pub fn record(target: &Path, commit: CommitId, slot: Slot, step: Step) {
    let progress = Progress { commit, slot, step, pid: std::process::id() };
    let path = path(target);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new().prefix(".progress-").tempfile_in(dir)?;
        serde_json::to_writer(&mut file, &progress)?;
        file.write_all(b"\n")?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|err| err.error)?;
        Ok(())
    };
    if let Err(err) = write() {
        crate::report::line(&format!(
            "warning: cannot record the deploy's progress in {}: {err}",
            crate::report::escape_path(&path)
        ));
    }
}

/// Returns what an unfinished deploy recorded, if any (a record that cannot be read counts as
/// one whose step is unknown: `None` inside).
pub fn read(target: &Path) -> Option<Option<Progress>> {
    let text = std::fs::read_to_string(path(target)).ok()?;
    Some(serde_json::from_str(&text).ok())
}

/// Removes the record once a deploy has ended (live, failed and cleaned up, or converged).
pub fn clear(target: &Path) {
    match std::fs::remove_file(path(target)) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => crate::report::line(&format!(
            "warning: cannot remove {}: {err}",
            crate::report::escape_path(&path(target))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn step_names_are_the_records_spelling() {
        for step in [
            Step::Start,
            Step::Point,
            Step::Check,
            Step::Link,
            Step::Stop,
            Step::PointBack,
            Step::Swap,
            Step::SwapBack,
        ] {
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{}\"", step.name()));
        }
    }
}
