//! A run whose outcome is kept: what it printed is stored under its history entry's id, a run
//! that failed before a deploy began gets an `error` entry of its own, and `[notify]` is told.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::config::{self, Config};
use crate::error::{Error, ExitCode};
use crate::git::CommitId;
use crate::notify;
use crate::report;
use crate::target_dir::history::{self, HistoryEntry, Outcome, Trigger};
use crate::target_dir::{Layout, durable, logs};

/// The ref and commit a hook was pushed, for the entry of a run that fails before it reads
/// the configuration.
static PUSHED: Mutex<Option<(String, CommitId)>> = Mutex::new(None);

/// Notes what was pushed, for the history entry should the run fail before its deploy.
pub fn note_push(ref_name: &str, commit: CommitId) {
    if let Ok(mut pushed) = PUSHED.lock() {
        *pushed = Some((ref_name.to_owned(), commit));
    }
}

/// Runs `body` (a hook, a deploy, a rollback) and keeps its outcome: the entry it recorded, or
/// one for the error it ended with, gets what was printed as its stored log, and the
/// notifications its configuration asks for are sent (detached, after everything else). The
/// error, if any, is printed here, so that the log holds it too.
pub fn run(
    repo: Option<PathBuf>,
    trigger: Trigger,
    body: impl FnOnce() -> Result<ExitCode, Error>,
) -> Result<ExitCode, Error> {
    report::start_capture();
    let started = (Instant::now(), SystemTime::now());
    let result = body();
    let code = match &result {
        Ok(code) => *code,
        Err(err) => {
            err.print();
            err.exit_code()
        }
    };
    let repo = super::repo_path(repo);
    let config = config::load(&repo).ok();
    let recorded = match (logs::recorded(), &result) {
        (Some(recorded), _) => Some(recorded),
        (None, Err(err)) => record_error(&repo, config.as_ref(), trigger, err, started),
        (None, Ok(_)) => None,
    };
    let output = report::take_capture().unwrap_or_default();
    let Some((layout, entry)) = recorded else {
        flush();
        crate::deploy::start_reapers();
        return Ok(code);
    };
    if let Some(id) = entry.id {
        let bounds = config.as_ref().map(|config| config.logs).unwrap_or_default();
        if let Err(err) = logs::store(&layout, id, &output, bounds) {
            report::line(&format!("warning: the output of this run is not kept: {err}"));
        }
    }
    // The log, and whatever else the run wrote since its outcome was told, reach the disk
    // before the process ends; only then does the removal of an old release start.
    flush();
    crate::deploy::start_reapers();
    if let Some(config) = &config {
        notify::send(config, &layout, &entry);
    }
    Ok(code)
}

/// Makes the run's deferred writes durable (`durable::flush`); a failure is a warning.
fn flush() {
    if let Err(err) = durable::flush() {
        report::line(&format!("warning: cannot flush the history and log to disk: {err}"));
    }
}

/// Records a run that ended with `err` before a deploy recorded anything, in the target the
/// configuration names (read leniently: a configuration error is worth recording too). Where
/// no target is known, or its state directory was never made, nothing is recorded: the
/// person who ran it has seen the error.
fn record_error(
    repo: &Path,
    config: Option<&Config>,
    trigger: Trigger,
    err: &Error,
    started: (Instant, SystemTime),
) -> Option<(Layout, HistoryEntry)> {
    let layout = match config {
        Some(config) => Layout::new(config),
        None => lenient_layout(repo)?,
    };
    // Never make the state directory for a failed run, nor write into one that is not ours.
    if !layout.state.is_dir() || layout.check_state().is_err() {
        return None;
    }
    let pushed = PUSHED.lock().ok().and_then(|pushed| pushed.clone());
    let entry = HistoryEntry {
        id: None,
        started_at: history::timestamp(started.1),
        commit: pushed.as_ref().map(|(_, commit)| *commit),
        ref_name: pushed.map(|(name, _)| name).unwrap_or_default(),
        slot: None,
        result: Outcome::Error,
        trigger,
        pusher: history::pusher(),
        failed_stage: None,
        error: Some(err.to_string()),
        stages: Vec::new(),
        time_to_live: None,
        total: started.0.elapsed().as_secs_f64(),
    };
    if let Err(err) = logs::record(&layout, entry) {
        report::line(&format!("warning: this failure is not in the history: {err}"));
    }
    logs::recorded()
}

/// Returns the target whose history `log` and `show` read, and the configuration when it
/// validates: a broken configuration is itself in the history, so it must not hide it. The
/// error is then a warning, and the target is read from the file leniently.
pub fn open_history(flag: Option<PathBuf>) -> Result<(Layout, Option<Config>), Error> {
    let repo = super::open_repo(flag)?;
    match config::load(repo.path()) {
        Ok(config) => Ok((Layout::new(&config), Some(config))),
        Err(err) => match lenient_layout(repo.path()) {
            Some(layout) => {
                report::line(&format!("warning: {err}; reading the history of its target anyway"));
                Ok((layout, None))
            }
            None => Err(err.into()),
        },
    }
}

/// Returns the target's layout from a configuration that does not validate, when its
/// `target` (and `link`) can still be read: from the whole file, or, when it is not even TOML,
/// from those two lines alone.
fn lenient_layout(repo: &Path) -> Option<Layout> {
    let text = std::fs::read_to_string(repo.join(config::FILE_NAME)).ok()?;
    let table: toml::Table = text.parse().unwrap_or_else(|_| top_level_lines(&text));
    let target = PathBuf::from(table.get("target")?.as_str()?);
    let link = table.get("link").and_then(|link| link.as_str()).unwrap_or(config::DEFAULT_LINK);
    (target.is_absolute() && !link.contains('/')).then(|| Layout::at(&target, link))
}

/// Returns the top-level `target` and `link` of a file that is not TOML as a whole (a syntax
/// error elsewhere): each line before the first table header that is TOML on its own.
fn top_level_lines(text: &str) -> toml::Table {
    let mut table = toml::Table::new();
    for line in text.lines().take_while(|line| !line.trim_start().starts_with('[')) {
        let Ok(one) = line.parse::<toml::Table>() else { continue };
        for (key, value) in one {
            if key == "target" || key == "link" {
                table.insert(key, value);
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::top_level_lines;

    #[test]
    fn target_and_link_are_read_from_a_file_that_is_not_toml() {
        let text = "# site\ntarget = \"/srv/www\"\nbranch = main\nlink = \"web\"\n[build\ntarget = \"/x\"\n";
        let table = top_level_lines(text);
        assert_eq!(table.get("target").and_then(|v| v.as_str()), Some("/srv/www"));
        assert_eq!(table.get("link").and_then(|v| v.as_str()), Some("web"));
        assert_eq!(table.len(), 2);
    }
}
