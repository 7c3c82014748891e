//! HAProxy's runtime API (the `stats socket` of its management guide, section 9.3), as the
//! switch uses it: one command per connection over std's `UnixStream`, no shell, no socat.
//! Each command line is built here from the validated backend name and a slot, never from
//! anything else; each answer is parsed here (`show servers state`, `show stat`), so that the
//! parsing can be tested against HAProxy's own output.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::report::{escape, escape_path};
use crate::target_dir::Slot;

/// The longest one command may take, from connecting to HAProxy closing the connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The `show servers state` format this parser reads (HAProxy 1.6 to 3.x write it).
const STATE_VERSION: &str = "1";

/// `srv_op_state`: the server is up (`SRV_ST_STARTING` is up too, only warming up).
const OP_STARTING: u32 = 1;
const OP_RUNNING: u32 = 2;
/// `srv_admin_state` bits: maintenance forced, inherited, from the config, from DNS.
const ADMIN_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20;
/// `srv_admin_state` bits: drain forced or inherited.
const ADMIN_DRAIN: u32 = 0x08 | 0x10;
/// `srv_check_state` bits: a health check is configured; it is enabled.
const CHECK_CONFIGURED: u32 = 0x02;
const CHECK_ENABLED: u32 = 0x04;

/// The runtime API at `socket`, about the servers `blue` and `green` of `backend`.
pub struct Api<'a> {
    socket: &'a Path,
    backend: &'a str,
}

/// One server of the backend, as `show servers state` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub port: u16,
    op_state: u32,
    admin_state: u32,
    check_state: u32,
}

impl Server {
    /// Tells whether HAProxy holds the server UP (checks passed, or none configured).
    pub fn is_up(&self) -> bool {
        matches!(self.op_state, OP_STARTING | OP_RUNNING) && !self.in_maint()
    }

    /// Tells whether the server is in maintenance (no traffic, no checks).
    pub fn in_maint(&self) -> bool {
        self.admin_state & ADMIN_MAINT != 0
    }

    /// Tells whether the server is draining (no new sessions from the load balancing).
    pub fn draining(&self) -> bool {
        self.admin_state & ADMIN_DRAIN != 0
    }

    /// Tells whether the load balancing sends it new requests: UP, not draining.
    pub fn serves(&self) -> bool {
        self.is_up() && !self.draining()
    }

    /// Tells whether its health check is configured but was disabled (`disable health`).
    pub fn health_disabled(&self) -> bool {
        self.check_state & CHECK_CONFIGURED != 0 && self.check_state & CHECK_ENABLED == 0
    }

    /// Describes its state as HAProxy's stats page would, for an error line.
    pub fn describe(&self) -> String {
        let op = match self.op_state {
            0 => "DOWN",
            OP_STARTING => "UP (starting)",
            OP_RUNNING => "UP",
            3 => "UP (stopping)",
            _ => "in an unknown state",
        };
        let admin = if self.in_maint() {
            ", MAINT"
        } else if self.draining() {
            ", DRAIN"
        } else {
            ""
        };
        format!("{op}{admin}")
    }
}

/// The answer of `show servers state BACKEND`: the servers, and the text to save for
/// HAProxy's reloads.
#[derive(Debug)]
pub struct States {
    pub servers: Vec<Server>,
    /// The version line, the column names and the lines of `blue` and `green`.
    pub file: String,
}

impl States {
    /// Returns the server of `slot`, or an error naming what the backend lacks.
    pub fn server(&self, backend: &str, slot: Slot) -> Result<&Server, String> {
        self.servers.iter().find(|server| server.name == slot.name()).ok_or_else(|| {
            format!(
                "HAProxy's backend {backend} has no server `{slot}`; it needs `server blue 127.0.0.1:PORT` and `server green 127.0.0.1:PORT` (the lines `pushdeploy init --app --proxy haproxy` prints)"
            )
        })
    }
}

impl<'a> Api<'a> {
    /// Returns the API for `backend`, which must be a name HAProxy's command parser keeps
    /// whole (config validation allows no other; this makes sure of it).
    pub fn new(socket: &'a Path, backend: &'a str) -> Result<Api<'a>, String> {
        let valid = !backend.is_empty()
            && backend.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !valid {
            return Err(format!("{:?} is not an HAProxy backend name", escape(backend)));
        }
        Ok(Api { socket, backend })
    }

    /// Returns the backend's servers and the text that restores them.
    pub fn states(&self) -> Result<States, String> {
        let command = format!("show servers state {}", self.backend);
        let answer = self.ask(&command)?;
        parse_states(&answer, self.backend).map_err(|why| self.refused(&command, &why))
    }

    /// Sets the administrative state (`ready`, `drain`, `maint`) of `slot`'s server.
    pub fn set_state(&self, slot: Slot, state: &str) -> Result<(), String> {
        self.expect_nothing(&format!("set server {}/{slot} state {state}", self.backend))
    }

    /// Enables `slot`'s health check again after a `disable health`.
    pub fn enable_health(&self, slot: Slot) -> Result<(), String> {
        self.expect_nothing(&format!("enable health {}/{slot}", self.backend))
    }

    /// Returns how many sessions `slot`'s server has open (`scur` of `show stat`).
    pub fn sessions(&self, slot: Slot) -> Result<u64, String> {
        let command = format!("show stat {} 4 -1", self.backend);
        let answer = self.ask(&command)?;
        parse_sessions(&answer, slot.name()).map_err(|why| self.refused(&command, &why))
    }

    /// Runs a command whose success HAProxy says with an empty answer.
    fn expect_nothing(&self, command: &str) -> Result<(), String> {
        let answer = self.ask(command)?;
        if answer.trim().is_empty() {
            return Ok(());
        }
        Err(self.refused(command, answer.trim()))
    }

    /// Sends one command on a connection of its own and returns the whole answer (HAProxy
    /// closes the connection after it, outside `prompt` mode).
    fn ask(&self, command: &str) -> Result<String, String> {
        let io = |err: std::io::Error| self.unreachable(command, &err);
        let mut stream = UnixStream::connect(self.socket).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(io)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// The error line for a socket that could not be used.
    fn unreachable(&self, command: &str, err: &std::io::Error) -> String {
        let socket = escape_path(self.socket);
        let fix = match err.kind() {
            std::io::ErrorKind::PermissionDenied => {
                format!("this user must be in the socket's group: {}", socket_line(self.socket))
            }
            _ => format!("is HAProxy running, with {}?", socket_line(self.socket)),
        };
        format!("cannot send `{command}` to HAProxy's runtime API at {socket}: {err}; {fix}")
    }

    /// The error line for an answer that is not what `command` should answer.
    fn refused(&self, command: &str, answer: &str) -> String {
        let socket = escape_path(self.socket);
        let fix = if answer.starts_with("Permission denied") {
            format!("the socket must be at level admin: {}", socket_line(self.socket))
        } else if answer.contains("No such") || answer.contains("Can't find") {
            format!(
                "HAProxy needs the backend {} with servers `blue` and `green` (the lines `pushdeploy init --app --proxy haproxy` prints)",
                self.backend
            )
        } else {
            "check HAProxy's configuration and version (2.0 or newer)".to_owned()
        };
        let answer = answer.lines().next().unwrap_or_default();
        format!(
            "HAProxy's runtime API at {socket} answered `{command}` with \"{}\"; {fix}",
            escape(answer)
        )
    }
}

/// Returns the `stats socket` line of haproxy.cfg's global section that lets this user (its
/// group) drive the servers.
pub fn socket_line(socket: &Path) -> String {
    let group = nix::unistd::Group::from_gid(nix::unistd::getegid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::getegid().to_string(), |group| group.name);
    stats_socket(socket, &group)
}

/// Returns the `stats socket` line for `socket`, readable and writable by `group`.
pub fn stats_socket(socket: &Path, group: &str) -> String {
    format!("`stats socket {} mode 660 group {group} level admin`", escape_path(socket))
}

/// Parses `show servers state BACKEND`: the servers of `backend`, and the text to save (only
/// its `blue` and `green` lines, so the file restores nothing else).
pub fn parse_states(answer: &str, backend: &str) -> Result<States, String> {
    let mut lines = answer.lines();
    let version = lines.next().unwrap_or_default().trim();
    if version != STATE_VERSION {
        return Err(answer.trim().to_owned());
    }
    let mut file = format!("{STATE_VERSION}\n");
    let mut servers = Vec::new();
    for line in lines.map(str::trim).filter(|line| !line.is_empty()) {
        if line.starts_with('#') {
            file.push_str(line);
            file.push('\n');
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |index: usize| -> Result<u32, String> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .ok_or_else(|| format!("unreadable server line {line:?}"))
        };
        if fields.get(1) != Some(&backend) {
            continue;
        }
        let name = fields.get(3).copied().unwrap_or_default();
        let server = Server {
            name: name.to_owned(),
            port: u16::try_from(number(18)?).map_err(|_| format!("bad port in {line:?}"))?,
            op_state: number(5)?,
            admin_state: number(6)?,
            check_state: number(13)?,
        };
        if Slot::ALL.iter().any(|slot| slot.name() == name) {
            file.push_str(line);
            file.push('\n');
        }
        servers.push(server);
    }
    Ok(States { servers, file })
}

/// Parses `show stat BACKEND 4 -1` (CSV, a `# ` header line naming the columns): the `scur`
/// of the server `name`.
pub fn parse_sessions(answer: &str, name: &str) -> Result<u64, String> {
    let mut lines = answer.lines();
    let header = lines.next().and_then(|line| line.strip_prefix("# "));
    let Some(header) = header else { return Err(answer.trim().to_owned()) };
    let columns: Vec<&str> = header.split(',').collect();
    let column = |wanted: &str| columns.iter().position(|c| *c == wanted);
    let (Some(svname), Some(scur)) = (column("svname"), column("scur")) else {
        return Err(format!("no svname and scur columns in {header:?}"));
    };
    let row = lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|row| row.get(svname) == Some(&name))
        .ok_or_else(|| format!("no server {name} in the statistics"))?;
    row.get(scur)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("unreadable scur {:?} of server {name}", row.get(scur)))
}

#[cfg(test)]
mod tests {
    use super::{parse_sessions, parse_states};

    /// What HAProxy 2.6 (Debian 12) answered: blue draining, green in maintenance with its
    /// health check paused, another backend's line left out by the command.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 www 1 blue 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 18001 - 0 0 - - 0\n3 www 2 green 127.0.0.1 0 1 1 1 0 6 3 4 14 0 0 0 - 18002 - 0 0 - - 0\n\n";

    #[test]
    fn server_states_are_read_as_haproxy_writes_them() {
        let states = parse_states(STATE, "www").expect("parsed");
        let [blue, green] = &states.servers[..] else { panic!("{states:?}") };
        assert_eq!((blue.name.as_str(), blue.port), ("blue", 18001));
        assert!(blue.is_up() && blue.draining() && !blue.serves() && !blue.in_maint());
        assert_eq!(blue.describe(), "UP, DRAIN");
        assert!(green.in_maint() && !green.is_up() && !green.health_disabled());
        assert_eq!(green.describe(), "DOWN, MAINT");
        assert_eq!(states.file.lines().count(), 4, "{}", states.file);
        assert!(states.file.starts_with("1\n# be_id be_name "));
        // Health checks configured but disabled: `enable health` is due.
        let disabled = STATE.replace(" 6 3 4 14 ", " 6 3 4 2 ");
        assert!(parse_states(&disabled, "www").expect("parsed").servers[1].health_disabled());
    }

    #[test]
    fn only_the_slots_servers_of_the_backend_are_saved() {
        let more = format!(
            "{STATE}3 www 3 spare 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 18003 - 0 0 - - 0\n4 other 1 blue 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 9 - 0 0 - - 0\n"
        );
        let states = parse_states(&more, "www").expect("parsed");
        assert_eq!(states.servers.len(), 3);
        assert!(
            !states.file.contains("spare") && !states.file.contains("other"),
            "{}",
            states.file
        );
    }

    #[test]
    fn an_answer_that_is_no_state_dump_is_haproxys_error() {
        assert_eq!(
            parse_states("Can't find backend.\n\n", "www").unwrap_err(),
            "Can't find backend."
        );
        assert_eq!(parse_states("Permission denied\n\n", "www").unwrap_err(), "Permission denied");
        let truncated = "1\n3 www 1 blue 127.0.0.1 2\n";
        assert!(parse_states(truncated, "www").unwrap_err().starts_with("unreadable server line"));
    }

    #[test]
    fn sessions_are_the_scur_column_of_the_server() {
        let stat = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status\nwww,blue,0,0,1,3,,42,DRAIN\nwww,green,0,0,0,2,,7,no check\n\n";
        assert_eq!(parse_sessions(stat, "blue"), Ok(1));
        assert_eq!(parse_sessions(stat, "green"), Ok(0));
        assert_eq!(parse_sessions(stat, "red").unwrap_err(), "no server red in the statistics");
        assert_eq!(parse_sessions("No such proxy.\n\n", "blue").unwrap_err(), "No such proxy.");
    }
}
