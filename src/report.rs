//! What the person pushing sees: progress lines, the build's output, the final line.
//!
//! Everything goes to stderr (git relays a hook's stderr as `remote:` lines), one plain line at
//! a time. Write errors are ignored: a pusher who hung up must not stop a deploy half-way.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Prefix of every line pushdeploy prints.
pub const PREFIX: &str = "pushdeploy: ";

/// Prints one line to stderr, ignoring a closed or broken stderr.
pub fn line(message: &str) {
    let text = format!("{PREFIX}{message}");
    capture(&text);
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Prints a command's result to stdout; a closed pipe (`| head`) ends quietly.
pub fn stdout(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// Prints a line of the build's own output, unprefixed, as the build wrote it (minus control
/// characters that could rewrite the pusher's terminal).
pub fn build_output(bytes: &[u8]) {
    let text = escape_bytes(bytes, true);
    capture(&text);
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// The most of a run's output a stored log keeps from its start, and from its end: a build
/// that prints without end must not fill the disk, and the last lines say how it ended.
const CAPTURE_HEAD: usize = 768 * 1024;
const CAPTURE_TAIL: usize = 256 * 1024;

/// What this process printed, kept for its stored log once [`start_capture`] was called.
static CAPTURE: Mutex<Option<Capture>> = Mutex::new(None);

/// The lines printed so far: all of them up to [`CAPTURE_HEAD`] bytes, then the newest
/// [`CAPTURE_TAIL`] bytes of lines, and a count of those left out between.
#[derive(Default)]
struct Capture {
    head: String,
    tail: VecDeque<String>,
    tail_bytes: usize,
    dropped: u64,
}

/// Starts keeping every line printed from now on, for the run's stored log.
pub fn start_capture() {
    if let Ok(mut capture) = CAPTURE.lock() {
        *capture = Some(Capture::default());
    }
}

/// Returns what was printed since [`start_capture`] (bounded, with a line saying how many
/// lines were left out), and stops keeping it.
pub fn take_capture() -> Option<String> {
    let capture = CAPTURE.lock().ok()?.take()?;
    let mut text = capture.head;
    if capture.dropped > 0 {
        let _ = writeln!(
            text,
            "[pushdeploy: {} left out of this log]",
            things(capture.dropped, "line")
        );
    }
    for line in capture.tail {
        text.push_str(&line);
        text.push('\n');
    }
    Some(text)
}

fn capture(text: &str) {
    let Ok(mut guard) = CAPTURE.lock() else { return };
    let Some(capture) = guard.as_mut() else { return };
    if capture.tail.is_empty() && capture.head.len() + text.len() < CAPTURE_HEAD {
        capture.head.push_str(text);
        capture.head.push('\n');
        return;
    }
    capture.tail_bytes += text.len() + 1;
    capture.tail.push_back(text.to_owned());
    while capture.tail_bytes > CAPTURE_TAIL {
        let Some(old) = capture.tail.pop_front() else { break };
        capture.tail_bytes -= old.len() + 1;
        capture.dropped += 1;
    }
}

/// Sets up operator tracing on stderr, filtered by `PUSHDEPLOY_LOG` (off by default).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("PUSHDEPLOY_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Returns text safe to print on one line: control characters (newlines, escapes, …) and
/// invalid UTF-8 become `\n`, `\x1b`-style escapes. A name (`verbatim` false) also gets its
/// backslashes doubled, so an escape in it cannot be mistaken for one of ours; a build's output
/// (`verbatim` true) keeps its tabs and backslashes as written.
pub fn escape_bytes(bytes: &[u8], verbatim: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\t' if verbatim => out.push('\t'),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\\' if !verbatim => out.push_str("\\\\"),
                ch if ch.is_control() || is_bidi_control(ch) => {
                    let _ = write!(out, "\\u{{{:x}}}", ch as u32);
                }
                ch => out.push(ch),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Tells whether `ch` reorders the text around it when displayed (the Unicode bidirectional
/// embeddings, overrides, isolates and marks): a name holding U+202E would print one thing and
/// be another ("Trojan Source", CVE-2021-42574), so it is escaped like a control character.
fn is_bidi_control(ch: char) -> bool {
    matches!(ch, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Returns a path as printable one-line text.
pub fn escape_path(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes(), false)
}

/// Returns a string from outside (a ref name, a message) as printable one-line text.
pub fn escape(text: &str) -> String {
    escape_bytes(text.as_bytes(), false)
}

/// Formats a count with thousands separators: `1,204`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Formats a count of things: `1 file`, `1,204 files`.
pub fn things(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{} {thing}s", count(n)) }
}

/// Formats a byte count in decimal units: `38.2 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// Formats a duration in seconds: `0.21 s`.
pub fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 10.0 { format!("{secs:.2} s") } else { format!("{secs:.1} s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_bad_utf8() {
        assert_eq!(escape_bytes(b"a\nb\x1b[31m\xff", false), "a\\nb\\u{1b}[31m\\xff");
        assert_eq!(escape_bytes(b"col\tumn", true), "col\tumn");
        assert_eq!(escape("txt.\u{202e}exe"), "txt.\\u{202e}exe");
        assert_eq!(escape("a\u{2066}b\u{2069}\u{200f}"), "a\\u{2066}b\\u{2069}\\u{200f}");
        assert_eq!(escape("\u{5d0}\u{5d1} ok"), "\u{5d0}\u{5d1} ok", "Hebrew text itself is kept");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(count(1204), "1,204");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(things(1, "file"), "1 file");
        assert_eq!(things(1204, "file"), "1,204 files");
        assert_eq!(bytes(38_200_000), "38.2 MB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(seconds(Duration::from_millis(210)), "0.21 s");
    }
}
