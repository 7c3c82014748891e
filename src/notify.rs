//! Telling others how a run ended (`[notify]`): a command run with the outcome in
//! `PUSHDEPLOY_*` environment variables, and/or a JSON POST to a webhook.
//!
//! Nothing here may delay or fail a deploy: [`send`] runs after the switch and the stored log,
//! and only starts a detached `pushdeploy notify-send` (its own process group, no stdin from
//! git, its output in `TARGET/.pushdeploy/logs/ID.notify`), which does the slow part. git
//! waits for the hook's stderr to close, so the child must hold none of it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, ExitCode};
use crate::report;
use crate::target_dir::history::HistoryEntry;
use crate::target_dir::{Layout, logs};

/// How many times a webhook is tried, and how long to wait before each retry.
const WEBHOOK_RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// The outcome as a notification carries it: the webhook's JSON body, and the command's
/// environment (`PUSHDEPLOY_RESULT`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub result: String,
    pub commit: Option<String>,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub slot: Option<String>,
    pub stage: Option<String>,
    pub reason: Option<String>,
    pub log_id: Option<u64>,
    pub url: Option<String>,
    pub target: String,
    pub pusher: String,
    pub started_at: String,
}

/// What the detached sender is asked to do.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    command: Option<String>,
    webhook: Option<String>,
    timeout: Duration,
    message: Message,
}

/// Starts the notifications `[notify]` asks for of `entry`'s outcome, detached, and returns at
/// once. A failure to start them is a warning: the deploy is over.
pub fn send(config: &Config, layout: &Layout, entry: &HistoryEntry) {
    let notify = &config.notify;
    if !notify.wants(entry.result.name()) {
        return;
    }
    let message = Message {
        result: entry.result.name().to_owned(),
        commit: entry.commit.map(|commit| commit.hex()),
        ref_name: entry.ref_name.clone(),
        slot: entry.slot.map(|slot| slot.name().to_owned()),
        stage: entry.failed_stage.map(|stage| stage.name().to_owned()),
        reason: entry.error.clone(),
        log_id: entry.id,
        url: notify.url.clone(),
        target: config.target.to_string_lossy().into_owned(),
        pusher: entry.pusher.clone(),
        started_at: entry.started_at.clone(),
    };
    let job = Job {
        command: notify.command.clone(),
        webhook: notify.webhook.clone(),
        timeout: notify.timeout,
        message,
    };
    if let Err(err) = start(layout, entry.id, &job) {
        report::line(&format!("warning: the notifications were not sent: {err}"));
    }
}

/// Starts `pushdeploy notify-send` with the job on its stdin, its output into the run's
/// `.notify` file, in a process group of its own.
fn start(layout: &Layout, id: Option<u64>, job: &Job) -> std::io::Result<()> {
    let output = match id {
        Some(id) => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(logs::notify_path(layout, id))?,
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("notify-send")
        .current_dir(&layout.target)
        .stdin(Stdio::piped())
        .stdout(output.try_clone()?)
        .stderr(output)
        .process_group(0)
        .spawn()?;
    let json = serde_json::to_vec(job).map_err(std::io::Error::other)?;
    // The job is far smaller than a pipe's buffer: this write does not wait for the child.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json)?;
    }
    Ok(())
}

/// Sends a deploy's notifications (started by pushdeploy itself after a deploy; reads the
/// job on stdin).
#[derive(Debug, Args)]
pub struct NotifySendArgs {}

/// Runs the job on stdin: the command, then the webhook; says how each went on stderr.
pub fn run(_args: NotifySendArgs) -> Result<ExitCode, Error> {
    let mut input = Vec::new();
    let job: Job = std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|err| err.to_string())
        .and_then(|_| serde_json::from_slice(&input).map_err(|err| err.to_string()))
        .map_err(|err| {
            Error::user(
                format!("notify-send: not a notification job: {err}"),
                "pushdeploy runs it itself",
            )
        })?;
    let mut ok = true;
    if let Some(command) = &job.command {
        let outcome = run_command(command, &job.message, job.timeout);
        ok &= outcome.is_ok();
        say(&format!("command `{}`: {}", report::escape(command), outcome.unwrap_or_else(|e| e)));
    }
    if let Some(url) = &job.webhook {
        let outcome = post(url, &job.message, job.timeout);
        ok &= outcome.is_ok();
        say(&format!("webhook {}: {}", report::escape(url), outcome.unwrap_or_else(|e| e)));
    }
    Ok(if ok { ExitCode::Success } else { ExitCode::DeployFailed })
}

/// Writes one line of the notifications' report.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs `sh -c COMMAND` with the outcome in its environment (never in its command line: a
/// pushed ref or message is data, not shell), killing its process group at the timeout.
fn run_command(command: &str, message: &Message, timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null()).process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in environment(message) {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().map_err(|err| format!("cannot start sh: {err}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok("ok".into()),
            Ok(Some(status)) => return Err(format!("failed ({status})")),
            Ok(None) if Instant::now() >= deadline => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("killed after {}", report::seconds(timeout)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(format!("cannot wait for it: {err}")),
        }
    }
}

/// Returns the command's environment: `PUSHDEPLOY_RESULT`, `_COMMIT`, `_REF`, `_SLOT`,
/// `_STAGE`, `_REASON`, `_LOG_ID`, `_URL`, `_TARGET`, `_PUSHER`, `_STARTED_AT` (empty when
/// not known).
pub fn environment(message: &Message) -> Vec<(&'static str, String)> {
    let or_empty = |value: &Option<String>| value.clone().unwrap_or_default();
    vec![
        ("PUSHDEPLOY_RESULT", message.result.clone()),
        ("PUSHDEPLOY_COMMIT", or_empty(&message.commit)),
        ("PUSHDEPLOY_REF", message.ref_name.clone()),
        ("PUSHDEPLOY_SLOT", or_empty(&message.slot)),
        ("PUSHDEPLOY_STAGE", or_empty(&message.stage)),
        ("PUSHDEPLOY_REASON", or_empty(&message.reason)),
        ("PUSHDEPLOY_LOG_ID", message.log_id.map(|id| id.to_string()).unwrap_or_default()),
        ("PUSHDEPLOY_URL", or_empty(&message.url)),
        ("PUSHDEPLOY_TARGET", message.target.clone()),
        ("PUSHDEPLOY_PUSHER", message.pusher.clone()),
        ("PUSHDEPLOY_STARTED_AT", message.started_at.clone()),
    ]
}

/// POSTs the message as JSON, each attempt within `timeout`; retries a connection failure,
/// a timeout, a 429 or a 5xx answer, up to three attempts in all.
fn post(url: &str, message: &Message, timeout: Duration) -> Result<String, String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("pushdeploy/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent: ureq::Agent = config.into();
    let attempts = WEBHOOK_RETRY_DELAYS.len() + 1;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let retry = match agent.post(url).send_json(message) {
            Ok(response) if response.status().is_success() => {
                return Ok(format!("{} on attempt {attempt} of {attempts}", response.status()));
            }
            Ok(response) => {
                let status = response.status();
                last = format!("{status}");
                status.is_server_error() || status.as_u16() == 429
            }
            Err(err) => {
                last = report::escape(&err.to_string());
                true
            }
        };
        if !retry {
            return Err(format!("{last} on attempt {attempt} of {attempts}; not retried"));
        }
        if let Some(delay) = WEBHOOK_RETRY_DELAYS.get(attempt - 1) {
            std::thread::sleep(*delay);
        }
    }
    Err(format!("{last} on each of {attempts} attempts; gave up"))
}
