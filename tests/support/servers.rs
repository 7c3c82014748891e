//! Real web servers for end-to-end tests: Apache, nginx and Caddy, each started from the
//! standalone configs in `site-templates/servers/` on a free loopback port, serving
//! `TARGET/public_html`, and stopped (the whole process group) when the guard drops.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::load::Connection;

/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before its group gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Start attempts, each on a new port, for when another process took the port meanwhile.
const START_ATTEMPTS: usize = 3;
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// The servers pushdeploy is tested under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Apache,
    Nginx,
    Caddy,
}

impl ServerKind {
    /// Returns the executable's name.
    pub fn program(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache2",
            ServerKind::Nginx => "nginx",
            ServerKind::Caddy => "caddy",
        }
    }

    /// Returns the file in `site-templates/servers/` the config is rendered from.
    fn template(self) -> &'static str {
        match self {
            ServerKind::Apache => "apache-standalone.conf",
            ServerKind::Nginx => "nginx-standalone.conf",
            ServerKind::Caddy => "Caddyfile.standalone",
        }
    }

    /// Returns the server's executable, looked up in `PATH` and the `sbin` directories (where
    /// Debian puts `apache2` and `nginx`, often outside a user's `PATH`).
    pub fn binary(self) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(self.program()))
            .find(|candidate| {
                fs::metadata(candidate)
                    .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            })
    }

    /// Returns whether the server's executable is installed.
    pub fn available(self) -> bool {
        self.binary().is_some()
    }

    /// Returns whether a test needing this server can run. A missing server fails the test
    /// when `CI` is set (CI installs all of them, so a skip there would hide a broken setup);
    /// elsewhere it prints a notice and the test returns early.
    #[track_caller]
    pub fn require(self) -> bool {
        if self.available() {
            return true;
        }
        super::skip(&format!("{} is not installed (`{}` not found)", self, self.program()));
        false
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Apache => "Apache",
            ServerKind::Nginx => "nginx",
            ServerKind::Caddy => "Caddy",
        })
    }
}

/// A running server; dropping it stops the server and every process it started.
pub struct WebServer {
    kind: ServerKind,
    child: Child,
    port: u16,
    rundir: PathBuf,
}

impl WebServer {
    /// Starts `kind` serving `target/public_html` on a free loopback port, with its config,
    /// pid file and logs in `rundir`, and waits until it answers HTTP.
    #[track_caller]
    pub fn start(kind: ServerKind, target: &Path, rundir: &Path) -> Self {
        let template = Path::new("servers").join(kind.template());
        Self::start_template(kind, &template, target, rundir)
    }

    /// Starts `kind` as [`WebServer::start`] does, from `site-templates/TEMPLATE` (e.g.
    /// `previews/Caddyfile.standalone`), `@PREVIEW_DOMAIN@` being `preview.test`.
    #[track_caller]
    pub fn start_template(kind: ServerKind, template: &Path, target: &Path, rundir: &Path) -> Self {
        let binary = kind
            .binary()
            .unwrap_or_else(|| panic!("{kind} is not installed (`{}`)", kind.program()));
        assert_readable_by_workers(target);
        fs::create_dir_all(rundir).unwrap_or_else(|e| panic!("create {}: {e}", rundir.display()));
        fs::set_permissions(rundir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", rundir.display()));
        let template_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("site-templates").join(template);
        let text = fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", template_path.display()));

        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let config = render(&text, target, port, rundir);
            let config_path = rundir.join(template.file_name().expect("a template file"));
            fs::write(&config_path, config)
                .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            let child = spawn(kind, &binary, &config_path, rundir);
            let mut server = WebServer { kind, child, port, rundir: rundir.to_owned() };
            match server.wait_until_ready() {
                Ok(()) => return server,
                // Most likely another process took the port between our probe and the
                // server's bind: try another port.
                Err(Exit(status)) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "{kind} exited at start ({status}) on port {port}, retrying:\n{}",
                        server.logs()
                    );
                }
                Err(Exit(status)) => {
                    panic!(
                        "{kind} exited at start ({status}), {START_ATTEMPTS} attempts\n{}",
                        server.logs()
                    )
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    /// Returns `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls with a GET of `/` until any HTTP response arrives; the server may still be
    /// setting up (nginx's master binds before its workers accept).
    #[track_caller]
    fn wait_until_ready(&mut self) -> Result<(), Exit> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return Err(Exit(status));
            }
            let mut connection = Connection::new(self.addr(), Duration::from_secs(2));
            let last_error = match connection.get("/") {
                // Still ours: a server that lost the port race exits at once.
                Ok(_) => match self.child.try_wait().expect("wait for server") {
                    Some(status) => return Err(Exit(status)),
                    None => return Ok(()),
                },
                Err(err) => err,
            };
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {} within {READY_TIMEOUT:?} (last: {last_error})\n{}",
                self.kind,
                self.port,
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the tail of every log the server wrote, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["error.log", "server.stderr", "server.stdout"] {
            let path = self.rundir.join(name);
            let Ok(contents) = fs::read_to_string(&path) else {
                continue;
            };
            if contents.trim().is_empty() {
                continue;
            }
            let lines: Vec<&str> = contents.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            text.push_str(&format!(
                "--- {} {} (last {} lines) ---\n{}\n",
                self.kind,
                path.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        if text.is_empty() {
            text.push_str(&format!("--- {}: no log output ---\n", self.kind));
        }
        text
    }

    /// Stops the server's process group: SIGTERM, a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        // First the main process (reaped here), then whatever workers it left in its group.
        let mut exited = false;
        while Instant::now() < deadline {
            if !exited {
                exited = matches!(self.child.try_wait(), Ok(Some(_)) | Err(_));
            }
            if exited && killpg(group, None) == Err(Errno::ESRCH) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {STOP_TIMEOUT:?} of SIGTERM; sending SIGKILL", self.kind);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The server exited before it answered.
struct Exit(ExitStatus);

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Fills the template's placeholders.
fn render(template: &str, target: &Path, port: u16, rundir: &Path) -> String {
    template
        .replace("@TARGET@", &target.to_string_lossy())
        .replace("@PORT@", &port.to_string())
        .replace("@SERVER_NAME@", "127.0.0.1")
        .replace("@RUNDIR@", &rundir.to_string_lossy())
        .replace("@PREVIEW_DOMAIN_REGEX@", r"preview\.test")
        .replace("@PREVIEW_DOMAIN@", "preview.test")
}

/// Starts the server in the foreground, in a process group of its own so that stopping it
/// reaches the workers too (SIGKILL of Apache's or nginx's main process leaves them listening).
fn spawn(kind: ServerKind, binary: &Path, config: &Path, rundir: &Path) -> Child {
    let mut command = Command::new(binary);
    match kind {
        ServerKind::Apache => {
            command.arg("-f").arg(config).arg("-DFOREGROUND");
        }
        ServerKind::Nginx => {
            command
                .arg("-e")
                .arg(rundir.join("error.log"))
                .arg("-c")
                .arg(config)
                .args(["-g", "daemon off;"]);
        }
        ServerKind::Caddy => {
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(config)
                .env("XDG_CONFIG_HOME", rundir)
                .env("XDG_DATA_HOME", rundir);
        }
    }
    let log = |name: &str| {
        let path = rundir.join(name);
        fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
    };
    command
        .current_dir(rundir)
        .stdin(Stdio::null())
        .stdout(log("server.stdout"))
        .stderr(log("server.stderr"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

/// Asserts every directory from `/` down to `target` is searchable by others: Apache and
/// nginx workers run as `www-data` when started by root, and a 0700 temp dir on the way gives
/// 403 or 404 instead of the site.
#[track_caller]
fn assert_readable_by_workers(target: &Path) {
    for dir in target.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        assert!(
            meta.permissions().mode() & 0o001 != 0,
            "{} is mode {:o}: the server's workers cannot reach {}; chmod 0755 it",
            dir.display(),
            meta.permissions().mode() & 0o7777,
            target.display()
        );
    }
}
