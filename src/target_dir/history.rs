//! The deploy history: `.pushdeploy/history.jsonl`, one JSON line per deploy, append-only.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::git::CommitId;
use crate::target_dir::{Layout, Slot};

/// What can go wrong reading or writing the history or a slot's record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is damaged ({source}); delete it and deploy again", path.display())]
    Damaged { path: PathBuf, source: serde_json::Error },
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The number of its stored output in `.pushdeploy/logs/` (`pushdeploy show ID`); entries
    /// written before logs were kept have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub started_at: String,
    /// The commit deployed, or pushed; none for a failure before it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitId>,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The slot deployed into; none for an ignored push or a failure before the deploy began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    pub result: Outcome,
    /// What started it; entries written before it was recorded were pushes.
    #[serde(default)]
    pub trigger: Trigger,
    /// Who pushed (or ran the command), as far as the environment tells.
    #[serde(default)]
    pub pusher: String,
    /// The stage that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds per stage, in the order they ran.
    pub stages: Vec<(Stage, f64)>,
    /// Seconds from the start to the link switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<f64>,
    pub total: f64,
}

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Live,
    Failed,
    /// An app's new instance failed the check through the proxy after the switch, and the
    /// proxy was pointed back at the old one.
    RolledBack,
    DryRun,
    /// A push that deployed nothing: no ref of it was the deploy branch.
    Ignored,
    /// A run that failed before a deploy could begin: the configuration, the target's
    /// permissions, the lock, a push option.
    Error,
}

impl Outcome {
    /// Returns the name the history and `log` use: `live`, `failed`, `rolled-back`, `dry-run`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Live => "live",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::DryRun => "dry-run",
            Outcome::Ignored => "ignored",
            Outcome::Error => "error",
        }
    }
}

/// What started a deploy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    #[default]
    Push,
    Deploy,
    Rollback,
    /// A delivery from a hosted repository, received by `pushdeploy serve`.
    Webhook,
}

impl Trigger {
    /// Returns the name the history and `log` use.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Deploy => "deploy",
            Trigger::Rollback => "rollback",
            Trigger::Webhook => "webhook",
        }
    }
}

/// The stages of a deploy, as the history times them; all but `Retire` come before the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Prepare,
    Materialize,
    Build,
    Verify,
    /// An app's `release` command, before its new instance starts.
    Release,
    Activate,
    /// After the switch: it can only warn, never fail the deploy.
    Retire,
}

impl Stage {
    /// Returns the stage's name, as the pusher and the history see it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Materialize => "materialize",
            Stage::Build => "build",
            Stage::Verify => "verify",
            Stage::Release => "release",
            Stage::Activate => "activate",
            Stage::Retire => "retire",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name()) // pad, so `{:<7}` lines columns up
    }
}

/// Returns who is deploying: the name a git server put in the environment (gitolite's
/// `GL_USER`, Gitea's `GITEA_PUSHER_NAME`, or `GIT_PUSHER`, which an `authorized_keys` line can
/// set with `environment=`), else the system user, with the SSH client's address when there
/// is one.
pub fn pusher() -> String {
    let named = ["GIT_PUSHER", "GL_USER", "GITEA_PUSHER_NAME", "REMOTE_USER"]
        .into_iter()
        .find_map(|key| std::env::var(key).ok().filter(|value| !value.is_empty()));
    let user = named.unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| nix::unistd::getuid().to_string(), |user| user.name)
    });
    match std::env::var("SSH_CLIENT")
        .ok()
        .and_then(|client| client.split(' ').next().map(str::to_owned))
    {
        Some(address) if !address.is_empty() => format!("{user}@{address}"),
        _ => user,
    }
}

/// Returns a time as RFC 3339 text in UTC, to the second.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn history_path(layout: &Layout) -> PathBuf {
    layout.state.join("history.jsonl")
}

/// Appends one entry to the history, as a single write of one line.
pub fn append(layout: &Layout, entry: &HistoryEntry) -> Result<(), Error> {
    let path = history_path(layout);
    let write_error = |source: io::Error| Error::Write { path: path.clone(), source };
    let mut line = serde_json::to_vec(entry).map_err(|err| write_error(err.into()))?;
    line.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(write_error)?;
    file.write_all(&line).map_err(write_error)?;
    // Made durable with the rest of the run's writes, before its outcome is told
    // (`durable::flush`): one journal commit for them all. A line cut short by a crash is
    // skipped when the history is read.
    super::durable::defer(&layout.state);
    Ok(())
}

/// Reads the whole history, oldest first. A torn last line (a crash mid-append) is skipped.
pub fn read_all(layout: &Layout) -> Result<Vec<HistoryEntry>, Error> {
    let path = history_path(layout);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path, source }),
    };
    Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
}

/// How much of the end of the history [`newest_id`] reads: a few hundred entries.
const TAIL_BYTES: u64 = 128 * 1024;

/// Returns the newest log id in the history, reading only its end: the history grows by a
/// line per run, and every run asks for it.
pub fn newest_id(layout: &Layout) -> Result<Option<u64>, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let path = history_path(layout);
    let read_error = |source: io::Error| Error::Read { path: path.clone(), source };
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    };
    let len = file.metadata().map_err(read_error)?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(read_error)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(read_error)?;
    let text = String::from_utf8_lossy(&tail);
    // The first line of a tail that starts mid-file is cut: skip it.
    let whole = if start > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
    let newest = whole.lines().rev().find_map(|line| {
        serde_json::from_str::<HistoryEntry>(line).ok().and_then(|entry| entry.id)
    });
    match newest {
        Some(id) => Ok(Some(id)),
        // A tail of entries without ids (written before logs were kept): look further back.
        None if start > 0 => Ok(read_all(layout)?.iter().rev().find_map(|entry| entry.id)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_and_write_the_json_of_earlier_versions() {
        let old = r#"{"started_at":"2026-11-25T21:21:25Z","commit":"25af7330000000000000000000000000000000aa","ref":"refs/heads/main","slot":"green","result":"failed","pusher":"alice","failed_stage":"build","error":"boom","stages":[["prepare",0.01],["materialize",0.02],["build",0.03]],"total":0.11}"#;
        let entry: HistoryEntry = serde_json::from_str(old).unwrap();
        assert_eq!(entry.result, Outcome::Failed);
        assert_eq!(entry.id, None, "written before logs were kept");
        assert_eq!(entry.trigger, Trigger::Push, "no trigger: written before it was recorded");
        assert_eq!(entry.failed_stage, Some(Stage::Build));
        assert_eq!(entry.stages[1].0, Stage::Materialize);
        let json = serde_json::to_string(&entry).unwrap();
        assert!(
            json.contains(r#""result":"failed""#) && json.contains(r#""trigger":"push""#),
            "{json}"
        );
        assert!(json.contains(r#"["build",0.03]"#), "{json}");
        let dry: Outcome = serde_json::from_str(r#""dry-run""#).unwrap();
        assert_eq!(dry, Outcome::DryRun);
    }

    #[test]
    fn newest_id_reads_the_end_of_a_long_history() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::at(dir.path(), "public_html");
        fs::create_dir_all(&layout.state).unwrap();
        assert_eq!(newest_id(&layout).unwrap(), None, "no history yet");
        let line = |id: Option<u64>| {
            let id = id.map(|id| format!(r#""id":{id},"#)).unwrap_or_default();
            format!(
                r#"{{{id}"started_at":"2026-11-25T21:21:25Z","ref":"refs/heads/main","result":"live","stages":[],"total":0.1}}"#
            )
        };
        let mut text = String::new();
        for id in 1..=2000 {
            text += &line(Some(id));
            text.push('\n');
        }
        text += &line(None);
        text.push('\n');
        fs::write(layout.state.join("history.jsonl"), &text).unwrap();
        assert!(text.len() as u64 > TAIL_BYTES);
        assert_eq!(newest_id(&layout).unwrap(), Some(2000));
        // Only entries without ids at the end: the id is found further back.
        for _ in 0..2000 {
            text += &line(None);
            text.push('\n');
        }
        fs::write(layout.state.join("history.jsonl"), &text).unwrap();
        assert_eq!(newest_id(&layout).unwrap(), Some(2000));
    }
}
