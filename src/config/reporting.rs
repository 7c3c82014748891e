//! Where a run's outcome goes besides the pusher's terminal: the `[logs]` table (how many
//! stored outputs are kept) and the `[notify]` table (a command and/or a webhook told of
//! each deploy).

use std::time::Duration;

use toml::Spanned;

use super::Error;
use super::raw::Source;
use super::tables_raw::{RawLogs, RawNotify};

/// How many runs' logs are kept by default.
pub const DEFAULT_KEEP: usize = 50;
/// How many bytes of logs are kept by default, all logs together.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How many logs to keep, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The newest this many runs.
    pub keep: usize,
    /// And no more bytes than this, all together (the newest log is always kept).
    pub max_bytes: u64,
}

impl Default for LogBounds {
    fn default() -> Self {
        LogBounds { keep: DEFAULT_KEEP, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// The `[notify]` table: who is told how a deploy ended.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// Run by `sh -c` with the outcome in `PUSHDEPLOY_*` environment variables.
    pub command: Option<String>,
    /// An `http://` or `https://` URL that gets a JSON POST.
    pub webhook: Option<String>,
    /// The outcomes that notify: `live`, `failed` (errors before a deploy included),
    /// `rolled-back`.
    pub on: Vec<String>,
    /// The site's public address, passed on as it is.
    pub url: Option<String>,
    /// How long one attempt (a webhook's request, or the command) may take.
    pub timeout: Duration,
}

/// The outcomes `on` may name.
pub const NOTIFY_ON: [&str; 3] = ["live", "failed", "rolled-back"];
/// How long one notification attempt may take when `timeout` is not set.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Notify {
    /// Tells whether anything is to be notified of `result` (a history outcome's name).
    pub fn wants(&self, result: &str) -> bool {
        (self.command.is_some() || self.webhook.is_some())
            && self.on.iter().any(|on| on == result || (on == "failed" && result == "error"))
    }
}

/// Returns the bounds of the stored logs: `keep` (1 to 10,000) and `max_size` (`"16 MiB"`).
pub fn logs(source: Source, logs: Option<RawLogs>) -> Result<LogBounds, Error> {
    let mut bounds = LogBounds::default();
    let Some(logs) = logs else { return Ok(bounds) };
    if let Some(keep) = logs.keep {
        bounds.keep = match usize::try_from(*keep.get_ref()) {
            Ok(keep @ 1..=10_000) => keep,
            _ => {
                return Err(source.invalid_at(
                    &keep,
                    format!("`keep`: {} is not a number of logs from 1 to 10000", keep.get_ref()),
                ));
            }
        };
    }
    if let Some(size) = logs.max_size {
        bounds.max_bytes = parse_size(size.get_ref()).ok_or_else(|| {
            source.invalid_at(
                &size,
                format!(
                    "`max_size`: {:?} is not a size such as \"16 MiB\" or \"512 KiB\"",
                    size.get_ref()
                ),
            )
        })?;
    }
    Ok(bounds)
}

/// Parses `"16 MiB"`, `"512KiB"`, `"1 GiB"` or a number of bytes; zero is refused.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = match text[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit).filter(|bytes| *bytes > 0)
}

/// Returns the `[notify]` table, checked: a command or a webhook (or both), an http(s) URL,
/// known outcomes in `on`.
pub fn notify(source: Source, notify: Option<RawNotify>) -> Result<Notify, Error> {
    let Some(raw) = notify else { return Ok(Notify::default()) };
    let command = match raw.command {
        Some(command) if command.get_ref().trim().is_empty() => {
            return Err(source.invalid_at(&command, "`command`: is empty".into()));
        }
        command => command.map(Spanned::into_inner),
    };
    let webhook = match raw.webhook {
        Some(url)
            if !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
                || url.get_ref().chars().any(char::is_whitespace) =>
        {
            return Err(source.invalid_at(
                &url,
                format!("`webhook`: {:?} is not an http:// or https:// URL", url.get_ref()),
            ));
        }
        url => url.map(Spanned::into_inner),
    };
    let mut on = Vec::new();
    for value in
        raw.on.unwrap_or_else(|| NOTIFY_ON.map(|on| Spanned::new(0..0, on.to_owned())).into())
    {
        if !NOTIFY_ON.contains(&value.get_ref().as_str()) {
            return Err(source.invalid_at(
                &value,
                format!(
                    "`on`: {:?} is not an outcome; use \"live\", \"failed\" or \"rolled-back\"",
                    value.get_ref()
                ),
            ));
        }
        on.push(value.into_inner());
    }
    let timeout = match raw.timeout {
        Some(timeout) => super::keys::duration(source, &timeout, "timeout", false)?,
        None => DEFAULT_NOTIFY_TIMEOUT,
    };
    Ok(Notify { command, webhook, on, url: raw.url, timeout })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;
    use crate::config::tests::parse_err;

    #[test]
    fn logs_bounds_default_and_parse() {
        let config = parse(Path::new("p"), "target = \"/s\"\n").unwrap();
        assert_eq!(config.logs, LogBounds { keep: 50, max_bytes: 16 << 20 });
        let text = "target = \"/s\"\n[logs]\nkeep = 5\nmax_size = \"512 KiB\"\n";
        let config = parse(Path::new("p"), text).unwrap();
        assert_eq!(config.logs, LogBounds { keep: 5, max_bytes: 512 << 10 });
        assert_eq!(
            parse_err("target = \"/s\"\n[logs]\nkeep = 0\n"),
            "/r/pushdeploy.toml: line 3: `keep`: 0 is not a number of logs from 1 to 10000"
        );
        assert_eq!(
            parse_err("target = \"/s\"\n[logs]\nmax_size = \"16 MB\"\n"),
            "/r/pushdeploy.toml: line 3: `max_size`: \"16 MB\" is not a size such as \"16 MiB\" or \"512 KiB\""
        );
    }

    #[test]
    fn notify_checks_its_url_and_outcomes() {
        let text = "target = \"/s\"\n[notify]\nwebhook = \"http://127.0.0.1:9/x\"\n";
        let config = parse(Path::new("p"), text).unwrap();
        assert_eq!(config.notify.on, NOTIFY_ON);
        assert!(config.notify.wants("live") && config.notify.wants("error"));
        assert!(!config.notify.wants("ignored") && !config.notify.wants("dry-run"));
        assert_eq!(
            parse_err("target = \"/s\"\n[notify]\nwebhook = \"ftp://x\"\n"),
            "/r/pushdeploy.toml: line 3: `webhook`: \"ftp://x\" is not an http:// or https:// URL"
        );
        assert_eq!(
            parse_err("target = \"/s\"\n[notify]\ncommand = \"x\"\non = [\"live\", \"failure\"]\n"),
            "/r/pushdeploy.toml: line 4: `on`: \"failure\" is not an outcome; use \"live\", \"failed\" or \"rolled-back\""
        );
        let nothing = parse(Path::new("p"), "target = \"/s\"\n").unwrap();
        assert!(!nothing.notify.wants("failed"));
    }
}
