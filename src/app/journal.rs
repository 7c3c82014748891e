//! The app's journal as `pushdeploy logs` reads it: what both slots' instances and their
//! `release` runs wrote, and what systemd said about those units, merged in time order by one
//! `journalctl` (as JSON, so that no line of the app's is parsed as text), each entry tagged
//! with its slot. The command line is made of constants here and the app's validated name, so
//! that the sudoers rules ([`super::sudo_rules`]) allow exactly it.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{sudo, systemd};
use crate::config::{App, Strategy};
use crate::target_dir::Slot;

/// The arguments of `journalctl` before the number of lines: no pager, every field whole
/// (`-o json` turns a field of 4096 bytes or more into `null` without `--all`), one JSON
/// object per entry with only the fields [`Units::parse`] reads.
pub const ARGS: [&str; 6] = [
    "--no-pager",
    "--all",
    "-o",
    "json",
    "--output-fields=MESSAGE,_SYSTEMD_UNIT,UNIT,OBJECT_SYSTEMD_UNIT,COREDUMP_UNIT",
    "-n",
];
/// The argument after the number of lines that keeps `journalctl` printing new entries.
pub const FOLLOW: &str = "--follow";

/// Who wrote an entry of a slot's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The app's instance (`pushdeploy-NAME@SLOT.service`).
    Instance,
    /// A run of `[app] release` (`pushdeploy-NAME-release@SLOT.service`).
    Release,
    /// systemd, about one of those units (started, stopped, exited, dumped core).
    Systemd,
}

/// One unit whose journal `logs` shows.
struct Unit {
    name: String,
    /// `None` for the one unit of the `restart` and `reload` strategies, which runs whichever
    /// slot `current` names.
    slot: Option<Slot>,
    release: bool,
}

/// The units `logs` reads, each slot's instance then its `release` unit. The release units are
/// always named: a unit without entries adds nothing, and the command line (which the sudoers
/// rules hold) then depends on the app's name alone.
pub struct Units(Vec<Unit>);

impl Units {
    /// Returns `app`'s units.
    pub fn of(app: &App) -> Units {
        let slots = Slot::ALL.into_iter().flat_map(|slot| {
            [
                Unit { name: systemd::instance(app, slot), slot: Some(slot), release: false },
                Unit {
                    name: systemd::release_instance(app, slot),
                    slot: Some(slot),
                    release: true,
                },
            ]
        });
        let single = matches!(app.strategy, Strategy::Restart | Strategy::Reload).then(|| Unit {
            name: systemd::single(app),
            slot: None,
            release: false,
        });
        Units(slots.chain(single).collect())
    }

    /// Returns the arguments after the number of lines (and [`FOLLOW`]): `-u UNIT` for each
    /// unit, which matches what the unit's processes wrote and what systemd wrote about it.
    pub fn args(&self) -> Vec<String> {
        self.0.iter().flat_map(|unit| ["-u".to_owned(), unit.name.clone()]).collect()
    }

    /// Returns the `journalctl` that prints the last `lines` entries of the units (and, with
    /// `follow`, every new one until it is stopped), run as root as [`sudo::command`] does.
    pub fn command(&self, lines: u32, follow: bool) -> Command {
        let mut command = sudo::command("journalctl");
        command.args(ARGS).arg(lines.to_string());
        if follow {
            command.arg(FOLLOW);
        }
        command.args(self.args());
        command
    }

    /// Parses one line of `journalctl -o json`; `None` for a line that is not an entry of one
    /// of the units.
    pub fn parse(&self, line: &[u8]) -> Option<Entry> {
        let object: Value = serde_json::from_slice(line).ok()?;
        let field = |name: &str| object.get(name).and_then(Value::as_str);
        let find = |name: Option<&str>| self.0.iter().find(|unit| Some(unit.name.as_str()) == name);
        // What the unit's own processes wrote carries it in `_SYSTEMD_UNIT` (a field journald
        // sets, which they cannot fake); what systemd wrote about it names it in `UNIT`,
        // `OBJECT_SYSTEMD_UNIT` or `COREDUMP_UNIT` (`journalctl -u` matches only those that PID
        // 1 or root wrote).
        let (unit, source) = match find(field("_SYSTEMD_UNIT")) {
            Some(unit) if unit.release => (unit, Source::Release),
            Some(unit) => (unit, Source::Instance),
            None => {
                let about = ["UNIT", "OBJECT_SYSTEMD_UNIT", "COREDUMP_UNIT"];
                (about.into_iter().find_map(|name| find(field(name)))?, Source::Systemd)
            }
        };
        let micros: u64 = field("__REALTIME_TIMESTAMP")?.parse().ok()?;
        Some(Entry {
            time: UNIX_EPOCH + Duration::from_micros(micros),
            slot: unit.slot,
            source,
            message: message(object.get("MESSAGE")),
        })
    }
}

/// One journal entry of the app's units.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// When journald received it.
    pub time: SystemTime,
    /// `None` for the one unit of `restart` and `reload`.
    pub slot: Option<Slot>,
    pub source: Source,
    /// The message as written: any bytes (a newline too, from a program that writes to
    /// journald directly).
    pub message: Vec<u8>,
}

/// Returns a `MESSAGE` field's bytes: `-o json` writes a string when the message is printable
/// UTF-8, else an array of its bytes (a line with an escape sequence, say), and an array of
/// those when an entry has the field more than once (joined here by newlines).
fn message(value: Option<&Value>) -> Vec<u8> {
    match value {
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => items
            .iter()
            .filter_map(Value::as_u64)
            .map(|byte| u8::try_from(byte).unwrap_or(b'?'))
            .collect(),
        Some(Value::Array(items)) => {
            items.iter().map(|item| message(Some(item))).collect::<Vec<_>>().join(&b'\n')
        }
        Some(_) | None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Source, Units};
    use crate::config::App;
    use crate::target_dir::Slot;
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    fn app() -> App {
        let toml = "target = \"/srv/www\"\n[app]\nname = \"www\"\ncommand = \"run\"\n\
                    ports = { blue = 8001, green = 8002 }\nuser = \"nobody\"\n";
        crate::config::parse(Path::new("pushdeploy.toml"), toml).expect("config").app.expect("app")
    }

    #[test]
    fn entries_are_tagged_with_their_slot_and_who_wrote_them() {
        let units = Units::of(&app());
        let line = br#"{"__CURSOR":"s=1","__REALTIME_TIMESTAMP":"1765149246000001","_SYSTEMD_UNIT":"pushdeploy-www@green.service","MESSAGE":"Listening"}"#;
        let entry = units.parse(line).expect("an entry");
        assert_eq!(entry.slot, Some(Slot::Green));
        assert_eq!(entry.source, Source::Instance);
        assert_eq!(entry.time, UNIX_EPOCH + Duration::from_micros(1_765_149_246_000_001));
        assert_eq!(entry.message, b"Listening");

        let line = br#"{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"init.scope","UNIT":"pushdeploy-www-release@blue.service","MESSAGE":"Finished"}"#;
        let entry = units.parse(line).expect("an entry");
        assert_eq!((entry.slot, entry.source), (Some(Slot::Blue), Source::Systemd));

        let line = br#"{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"pushdeploy-www-release@blue.service","MESSAGE":[27,91,51,49,109,255]}"#;
        let entry = units.parse(line).expect("an entry");
        assert_eq!((entry.slot, entry.source), (Some(Slot::Blue), Source::Release));
        assert_eq!(entry.message, b"\x1b[31m\xff");

        let other = br#"{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"pushdeploy-wwww@blue.service","MESSAGE":"x"}"#;
        assert_eq!(units.parse(other), None);
        assert_eq!(units.parse(b"not JSON"), None);
    }

    #[test]
    fn the_units_are_both_instances_and_both_release_runs() {
        assert_eq!(
            Units::of(&app()).args().join(" "),
            "-u pushdeploy-www@blue.service -u pushdeploy-www-release@blue.service \
             -u pushdeploy-www@green.service -u pushdeploy-www-release@green.service"
        );
    }
}
