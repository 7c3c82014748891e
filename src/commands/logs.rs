//! `pushdeploy logs`: the app's journal, both slots' instances (and their `release` runs)
//! merged in time order, each line marked with its slot.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::open_site;
use crate::app::journal::{Source, Units};
use crate::app::sudo;
use crate::error::{Error, ExitCode, Kind};
use crate::report::{escape, escape_bytes, escape_path};
use crate::target_dir::Slot;

/// Shows the app's journal: what both slots' instances wrote, merged in time order.
///
/// Each line starts with the slot of the instance that wrote it (`blue  |`, `green |`) and
/// the time journald received it (UTC); lines of a slot's `release` run read `release: ...`,
/// what systemd said about the units `systemd: ...`. Control characters in the app's output
/// are shown escaped (`\u{1b}`). It runs journalctl as root: directly when run as root, else
/// through `sudo -n` with the rules `pushdeploy init --app` writes.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
    /// How many of the last lines to show
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    lines: u32,
    /// Keep showing new lines as they come, until interrupted
    #[arg(short = 'f', long)]
    follow: bool,
    /// Instead of the journal, the stored output of deploy ID (`last` for the newest), as
    /// `pushdeploy show ID` prints it; sites have it too
    #[arg(long, value_name = "ID", conflicts_with_all = ["lines", "follow"])]
    deploy: Option<String>,
}

pub fn run(args: LogsArgs) -> Result<ExitCode, Error> {
    if let Some(id) = args.deploy {
        return super::show::run(super::show::ShowArgs { repo: args.repo, id, json: false });
    }
    let site = open_site(args.repo)?;
    let Some(app) = site.config.app.as_ref() else {
        return Err(Error::new(
            Kind::User,
            format!(
                "{} deploys a site, not an app: there is no app journal to show (`pushdeploy log` \
                 lists its deploys)",
                escape_path(site.repo.path())
            ),
        ));
    };
    let units = Units::of(app);
    let mut command = units.command(args.lines, args.follow);
    tracing::debug!(?command, "reading the app's journal");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| Error::new(Kind::Io, format!("cannot run journalctl: {err}")))?;
    let stderr = child.stderr.take().map(|mut stderr| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        })
    });
    let Some(journal) = child.stdout.take() else {
        return Err(Error::new(Kind::Internal, "journalctl's output was not captured"));
    };
    let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let shown = match copy(&units, journal, colour) {
        Ok(shown) => shown,
        Err(err) => {
            // The journal's pipe is closed: journalctl ends at its next write, or at once when
            // following (it watches its output for a reader that went away).
            stop(child);
            return match err.kind() {
                // `pushdeploy logs | head`, or a reader of `-f` that went away: a quiet end.
                io::ErrorKind::BrokenPipe => Ok(ExitCode::Success),
                _ => Err(Error::new(
                    Kind::Io,
                    format!("cannot copy the journal's lines to the output: {err}"),
                )),
            };
        }
    };
    let status = child
        .wait()
        .map_err(|err| Error::new(Kind::Io, format!("cannot wait for journalctl: {err}")))?;
    let stderr = stderr.and_then(|reader| reader.join().ok()).unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let why = stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or("no message");
        // sudo's refusal says to run `init --app` again, which writes the rules for it.
        let why = sudo::explain(escape(why.trim()));
        return Err(Error::new(Kind::Io, "cannot read the app's journal")
            .cause(format!("journalctl failed ({status})"))
            .cause(why));
    }
    if shown == 0 && args.lines > 0 {
        crate::report::line(&format!(
            "no journal lines of pushdeploy-{}@blue.service or @green.service yet",
            app.name
        ));
    }
    Ok(ExitCode::Success)
}

/// Copies journalctl's entries to stdout as lines, each as soon as it is read, until
/// journalctl ends or stdout has no reader left; returns how many lines it wrote.
fn copy(units: &Units, mut journal: ChildStdout, colour: bool) -> io::Result<u64> {
    let mut stdout = io::stdout().lock();
    let (mut pending, mut chunk, mut shown) = (Vec::new(), vec![0; 64 * 1024], 0);
    loop {
        if !wait_readable(&journal, &stdout)? {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let read = match journal.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        pending.extend_from_slice(&chunk[..read]);
        let Some(end) = pending.iter().rposition(|&byte| byte == b'\n') else { continue };
        let mut text = Vec::new();
        for line in pending[..end].split(|&byte| byte == b'\n') {
            if line.is_empty() {
                continue;
            }
            text.extend_from_slice(format_line(units, line, colour).as_bytes());
            text.push(b'\n');
            shown += 1;
        }
        pending.drain(..=end);
        stdout.write_all(&text)?;
        stdout.flush()?;
    }
    if !pending.is_empty() {
        writeln!(stdout, "{}", format_line(units, &pending, colour))?;
        shown += 1;
    }
    stdout.flush()?;
    Ok(shown)
}

/// Waits until the journal has something to read (or has ended); `false` when stdout's reader
/// went away first (a closed pipe, a hung-up terminal), which `-f` would otherwise only notice
/// at the next line the app writes, maybe never.
fn wait_readable(journal: &ChildStdout, stdout: &impl AsFd) -> io::Result<bool> {
    loop {
        // No events asked of stdout: poll reports an error or a hang-up on it all the same.
        let mut fds = [
            PollFd::new(journal.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdout.as_fd(), PollFlags::empty()),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
        if fds[1].revents().is_some_and(|events| events.intersects(gone)) {
            return Ok(false);
        }
        if fds[0].revents().is_some_and(|events| !events.is_empty()) {
            return Ok(true);
        }
    }
}

/// Returns one line of output for one line of `journalctl -o json`:
/// `blue  | 2026-12-07T23:14:06Z [the app's line, control characters escaped]`.
fn format_line(units: &Units, line: &[u8], colour: bool) -> String {
    let Some(entry) = units.parse(line) else {
        // Not an entry of the app's units: shown as it is, for what it may tell.
        return escape_bytes(line, true);
    };
    let label = format!("{:<5}", entry.slot.map_or("app", Slot::name));
    let label = match (colour, entry.slot) {
        (false, _) | (true, None) => label,
        (true, Some(Slot::Blue)) => format!("\x1b[34m{label}\x1b[0m"),
        (true, Some(Slot::Green)) => format!("\x1b[32m{label}\x1b[0m"),
    };
    let source = match entry.source {
        Source::Instance => "",
        Source::Release => "release: ",
        Source::Systemd => "systemd: ",
    };
    // Like a build's output: tabs and backslashes as the app wrote them, every other control
    // character escaped, so that no line can rewrite the reader's terminal.
    let message = escape_bytes(&entry.message, true);
    format!("{label} | {} {source}{message}", humantime::format_rfc3339_seconds(entry.time))
}

/// Stops journalctl after its output was closed: it ends by itself on its next write or, when
/// following, at once; it is killed if it has not within a second (through sudo only sudo
/// itself, which a git user may signal; journalctl then ends as its pipe is closed).
fn stop(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::format_line;
    use std::path::Path;

    #[test]
    fn a_line_is_its_slot_its_time_and_its_message_escaped_coloured_only_when_asked() {
        let toml = "target = \"/srv/www\"\n[app]\nname = \"www\"\ncommand = \"run\"\n\
                    ports = { blue = 8001, green = 8002 }\nuser = \"nobody\"\n";
        let config = crate::config::parse(Path::new("pushdeploy.toml"), toml).expect("config");
        let units = super::Units::of(&config.app.expect("[app]"));
        let line = br#"{"__REALTIME_TIMESTAMP":"1765149246500000","_SYSTEMD_UNIT":"pushdeploy-www@blue.service","MESSAGE":[27,91,50,74,9,92,110]}"#;
        assert_eq!(
            format_line(&units, line, false),
            "blue  | 2025-12-07T23:14:06Z \\u{1b}[2J\t\\n"
        );
        assert_eq!(
            format_line(&units, line, true),
            "\x1b[34mblue \x1b[0m | 2025-12-07T23:14:06Z \\u{1b}[2J\t\\n"
        );
        let line = br#"{"__REALTIME_TIMESTAMP":"1765149246500000","_SYSTEMD_UNIT":"pushdeploy-www-release@green.service","MESSAGE":"migrated"}"#;
        assert_eq!(
            format_line(&units, line, false),
            "green | 2025-12-07T23:14:06Z release: migrated"
        );
        assert_eq!(format_line(&units, b"\x1b[2Jnot JSON", false), "\\u{1b}[2Jnot JSON");
    }
}
