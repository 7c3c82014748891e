//! An app site behind Debian's HAProxy, which runs inside the site's systemd (master-worker
//! mode, as Debian's unit runs it) with the operator config of
//! site-templates/apps/haproxy.standalone.cfg; its runtime API socket is a file in the test's
//! directory, the same path inside the namespace and out.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::app::{AppSite, free_ports};
use super::app_load::start_proxy_unit;
use super::load::Connection;
use super::templates::template_dir;

/// The unit HAProxy runs as inside the namespace.
pub const UNIT: &str = "test-haproxy.service";

/// An app site behind an HAProxy that runs inside its systemd.
pub struct HaproxySite {
    pub site: AppSite,
    pub front: SocketAddr,
    /// The admin-level runtime API socket the deploys use.
    pub socket: PathBuf,
    /// A second socket at level operator, which may look but not change.
    pub operator_socket: PathBuf,
    pub state_file: PathBuf,
}

impl HaproxySite {
    /// Boots the site (`init --proxy haproxy`, the socket set to one in the test's
    /// directory) and its HAProxy; `None` (skipped) without HAProxy.
    pub fn new(prefix: &str) -> Option<HaproxySite> {
        if !Path::new("/usr/sbin/haproxy").exists() {
            crate::support::skip("no /usr/sbin/haproxy (Debian's haproxy package)");
            return None;
        }
        let site = AppSite::with_init(prefix, &["--proxy", "haproxy"])?;
        let rundir = site.env.root.join("haproxy-run");
        fs::create_dir_all(&rundir).expect("create haproxy-run");
        let state_file = site.env.target.join(".pushdeploy/proxy/haproxy.state");
        assert!(state_file.exists(), "init --proxy haproxy wrote no state file");
        let socket = rundir.join("admin.sock");
        let operator_socket = rundir.join("operator.sock");
        let (port, _) = free_ports();
        let template = fs::read_to_string(template_dir("apps").join("haproxy.standalone.cfg"))
            .expect("template");
        let text = template
            .replace("@PORT@", &port.to_string())
            .replace("@RUNDIR@", &rundir.display().to_string())
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@BACKEND@", "www")
            .replace("@STATE_FILE@", &state_file.display().to_string())
            .replace("@BLUE_PORT@", &site.blue.to_string())
            .replace("@GREEN_PORT@", &site.green.to_string());
        assert!(!text.contains("@"), "a placeholder is left\n{text}");
        let operator = format!(
            "\nglobal\n\tstats socket {} mode 660 level operator\n",
            operator_socket.display()
        );
        let config = rundir.join("haproxy.cfg");
        fs::write(&config, text + &operator).expect("write haproxy.cfg");
        site.edit_config(|toml| {
            toml.replace(
                "kind = \"haproxy\"\n",
                &format!("kind = \"haproxy\"\nsocket = \"{}\"\n", socket.display()),
            )
        });
        let front = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config_arg = config.display().to_string();
        start_proxy_unit(&site, UNIT, &[], &["/usr/sbin/haproxy", "-W", "-f", &config_arg], front);
        Some(HaproxySite { site, front, socket, operator_socket, state_file })
    }

    /// Returns the body HAProxy answers `/` with (the live commit) and its slot header.
    pub fn get(&self) -> (u16, String, Option<String>) {
        let response = Connection::new(self.front, Duration::from_secs(5))
            .get("/")
            .unwrap_or_else(|e| panic!("GET / through HAProxy: {e}"));
        let slot = response.header("x-pushdeploy-slot").map(str::to_owned);
        (response.status, String::from_utf8_lossy(&response.body).into_owned(), slot)
    }

    /// Sends one command to the admin socket; returns HAProxy's answer.
    #[track_caller]
    pub fn ask(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.socket.display()));
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.write_all(format!("{command}\n").as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read the answer");
        answer
    }

    /// Returns `(server, srv_op_state, srv_admin_state)` of the backend's servers.
    #[track_caller]
    pub fn states(&self) -> Vec<(String, u32, u32)> {
        let answer = self.ask("show servers state www");
        parse_states(&answer).unwrap_or_else(|| panic!("show servers state www: {answer:?}"))
    }

    /// Asserts `live` is ready and UP and the other server in maintenance.
    #[track_caller]
    pub fn assert_points_at(&self, live: &str) {
        let other = if live == "blue" { "green" } else { "blue" };
        let states = self.states();
        let expected = vec![(live.to_owned(), 2, 0), (other.to_owned(), 0, 1)];
        let mut sorted = states.clone();
        sorted.sort_by_key(|(name, _, _)| name != live);
        assert_eq!(sorted, expected, "server states of www (op, admin)");
    }

    /// Returns the pid of HAProxy's worker (`show info`), which a reload replaces.
    pub fn worker_pid(&self) -> String {
        let info = self.ask("show info");
        let pid = info.lines().find_map(|line| line.strip_prefix("Pid: "));
        pid.unwrap_or_else(|| panic!("no Pid in show info: {info:?}")).to_owned()
    }

    /// Reloads HAProxy as Debian's unit does (SIGUSR2 to the master), and waits until a new
    /// worker answers on the socket.
    #[track_caller]
    pub fn reload(&self) {
        let before = self.worker_pid();
        let args = ["kill", "--kill-whom=main", "--signal=USR2", UNIT];
        let reload = self.site.systemd.systemctl(&args);
        assert!(reload.status.success(), "reload HAProxy\n{reload}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = UnixStream::connect(&self.socket).ok().map(|_| self.worker_pid());
            if pid.as_ref().is_some_and(|pid| *pid != before) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new HAProxy worker after the reload\n{}",
                self.site.systemd.journal(UNIT)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads the server name, op state and admin state of each line of `show servers state`.
fn parse_states(answer: &str) -> Option<Vec<(String, u32, u32)>> {
    let mut lines = answer.lines();
    (lines.next()? == "1").then_some(())?;
    lines
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.get(3)?.to_string(),
                fields.get(5)?.parse().ok()?,
                fields.get(6)?.parse().ok()?,
            ))
        })
        .collect()
}
