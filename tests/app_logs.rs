//! `pushdeploy logs`: the app's journal under real systemd (support::systemd) and Debian's
//! gunicorn, both slots' instances merged in time order, each line marked with its slot, the
//! app's control characters escaped; `-f` prints what the app writes after it started and ends
//! quietly when its reader goes away; as the git user it reads the journal (the `release`
//! runs' too) through the sudo rules `init --app` writes, and without them is told to run init
//! again; a site without `[app]` gets one line of error.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::support::app::{APP_PY, AppSite, SUDOERS_DIR};
use crate::support::load::Connection;
use crate::support::{BIN, Cmd, TestEnv};

/// How long a line the app writes may take to reach `logs -f`, and `logs -f` to end.
const PATIENCE: Duration = Duration::from_secs(15);

/// What the tests add to the test app: each worker, as it boots, writes a line with control
/// characters (an escape sequence, a bell); `/say/WORD` writes `said: WORD`.
const LOGGING_APP: &str = r#"
print("logs-test: \x1b[31mred\x1b[0m and a bell \x07", file=sys.stderr, flush=True)

_serve = app


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/say/"):
        print("said:", path[len("/say/"):], file=sys.stderr, flush=True)
    return _serve(environ, start_response)
"#;

/// How the line above reads in `logs`: every control character escaped.
const ESCAPED: &str = r"logs-test: \u{1b}[31mred\u{1b}[0m and a bell \u{7}";

/// Deploys the logging app twice (blue, then green) on `site`; returns the second commit.
fn deploy_twice(site: &AppSite) -> String {
    site.env.write("app.py", format!("{APP_PY}{LOGGING_APP}"));
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let b = site.commit("ok", "b");
    site.push().assert_live(&b, "refs/heads/main", "green");
    b
}

/// Returns `pushdeploy logs ARGS --repo REPO`, run inside the namespace as the site's git user
/// (root when it has none).
fn logs(site: &AppSite, args: &[&str]) -> Cmd {
    site.systemd.run(&site.env, BIN).arg("logs").args(args).arg("--repo").arg(&site.env.bare)
}

/// Returns the line gunicorn writes once `port` listens.
fn listening(port: u16) -> String {
    format!("Listening at: http://127.0.0.1:{port} ")
}

/// Asserts that `logs -n 100` shows both instances' start, each marked with its slot, blue's
/// first, every line `SLOT | TIME ...` in time order; returns its lines.
#[track_caller]
fn assert_both_slots_in_time_order(site: &AppSite) -> Vec<String> {
    let output = logs(site, &["-n", "100"]).success();
    eprintln!("logs -n 100:\n{}", output.stdout);
    assert_eq!(output.stderr, "", "{output}");
    let lines: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}\n{output}"))
    };
    let (blue, green) = (find(&listening(site.blue)), find(&listening(site.green)));
    assert!(lines[blue].starts_with("blue  | "), "{}", lines[blue]);
    assert!(lines[green].starts_with("green | "), "{}", lines[green]);
    assert!(blue < green, "blue started first, so its line comes first\n{output}");
    let mut last = UNIX_EPOCH;
    for line in &lines {
        let (slot, rest) = line.split_once(" | ").unwrap_or_else(|| panic!("no slot: {line:?}"));
        assert!(matches!(slot, "blue " | "green"), "{line:?}");
        let time = rest.split(' ').next().and_then(|time| humantime::parse_rfc3339(time).ok());
        let time = time.unwrap_or_else(|| panic!("no RFC 3339 time after the slot: {line:?}"));
        assert!(time >= last, "out of time order: {line:?}\n{output}");
        last = time;
    }
    // systemd's own lines about the units are there too, marked as its.
    assert!(
        lines.iter().any(|line| line.starts_with("blue  | ") && line.contains(" systemd: Stopp")),
        "no line of systemd stopping blue's instance\n{output}"
    );
    lines
}

/// GETs `/say/WORD` from the live (green) instance, which writes `said: WORD`.
#[track_caller]
fn say(site: &AppSite, word: &str) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, site.green));
    let response = Connection::new(addr, Duration::from_secs(5))
        .get(&format!("/say/{word}"))
        .unwrap_or_else(|e| panic!("GET /say/{word} on {addr}: {e}"));
    assert_eq!(response.status, 200);
}

/// A running `pushdeploy logs -f` in a process group of its own, read line by line in a
/// thread; dropping it kills the whole group (nsenter, pushdeploy, sudo, journalctl).
struct Following {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Following {
    /// Starts `command`; its reader closes the pipe once it has read a line holding `last`.
    fn start(command: Cmd, last: &'static str) -> Following {
        let mut child = command.spawn_piped();
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let done = line.contains(last);
                if send.send(line).is_err() || done {
                    break;
                }
            }
            // The pipe closes here: `logs -f` has no reader left.
        });
        Following { child, lines, seen: Vec::new() }
    }

    /// Waits for a line holding `needle` (at most [`PATIENCE`]); returns it.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.seen.iter().find(|line| line.contains(needle)) {
                return line.clone();
            }
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line with {needle:?} within {PATIENCE:?}; `logs -f` printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for it to end by itself (at most [`PATIENCE`]); returns its status and stderr.
    #[track_caller]
    fn wait_for_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for logs -f") {
                break status;
            }
            assert!(Instant::now() < deadline, "`logs -f` still runs after its reader went away");
            thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        // Only the group this guard started: its leader's pid is the group's id.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Asserts that `logs -f` prints the tail, then a line the app writes after it started,
/// marked green; and that it ends quietly (status 0, nothing on stderr, no journalctl left
/// behind in the namespace) once its reader closes the pipe, with no further line to write.
#[track_caller]
fn assert_follows(site: &AppSite) {
    let mut following = Following::start(logs(site, &["-f"]), "said: last");
    // The tail is printed: journalctl follows from here on.
    let _ = following.wait_for(&listening(site.green));
    say(site, "after-the-start");
    let line = following.wait_for("said: after-the-start");
    assert!(line.starts_with("green | "), "{line:?}");
    say(site, "last");
    let _ = following.wait_for("said: last");
    let (status, stderr) = following.wait_for_exit();
    assert!(status.success() && stderr.is_empty(), "`logs -f` ended with {status}: {stderr}");
    let deadline = Instant::now() + PATIENCE;
    while let Some(pid) = journalctl_in(site) {
        assert!(Instant::now() < deadline, "journalctl (pid {pid}) outlived `logs -f`");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Returns a journalctl process running in the site's namespace, if there is one.
fn journalctl_in(site: &AppSite) -> Option<String> {
    let proc = site.systemd.host_path("/proc");
    fs::read_dir(proc).ok()?.filter_map(Result::ok).find_map(|entry| {
        let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == "journalctl").then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

#[test]
fn logs_shows_both_slots_in_time_order_escaped_and_follows_new_lines() {
    let Some(site) = AppSite::new("pdlogs1-") else { return };
    let _ = deploy_twice(&site);
    let lines = assert_both_slots_in_time_order(&site);
    assert!(lines.iter().any(|line| line.ends_with(ESCAPED)), "{ESCAPED:?} not in {lines:#?}");

    let one = logs(&site, &["-n", "1"]).success();
    assert_eq!(one.stdout.lines().collect::<Vec<_>>(), [lines[lines.len() - 1].as_str()], "{one}");

    assert_follows(&site);
}

#[test]
fn the_git_user_reads_the_logs_through_sudo_and_is_told_to_rerun_init_without_the_rules() {
    let release = ["--app-release", "echo \"migrated $PUSHDEPLOY_COMMIT\""];
    let Some(site) = AppSite::with_git_user("pdlogs2-", "pdlgit2-", &release) else { return };
    let b = deploy_twice(&site);
    let lines = assert_both_slots_in_time_order(&site);
    assert!(lines.iter().any(|line| line.ends_with(ESCAPED)), "{ESCAPED:?} not in {lines:#?}");
    // The release unit's run for green, marked as the release's.
    let migrated = format!(" release: migrated {b}");
    assert!(
        lines.iter().any(|line| line.starts_with("green | ") && line.ends_with(&migrated)),
        "{migrated:?} not in {lines:#?}"
    );
    assert_follows(&site);

    // The rules allow `logs`' command lines and no other unit.
    let sudo = || site.systemd.run(&site.env, "sudo").arg("-n");
    let journal = [
        "journalctl",
        "--no-pager",
        "--all",
        "-o",
        "json",
        "--output-fields=MESSAGE,_SYSTEMD_UNIT,UNIT,OBJECT_SYSTEMD_UNIT,COREDUMP_UNIT",
        "-n",
        "3",
    ];
    let units = [
        "-u",
        "pushdeploy-www@blue.service",
        "-u",
        "pushdeploy-www-release@blue.service",
        "-u",
        "pushdeploy-www@green.service",
        "-u",
        "pushdeploy-www-release@green.service",
    ];
    let allowed = sudo().args(journal).args(units).success();
    assert_eq!(allowed.stdout.lines().count(), 3, "{allowed}");
    for extra in [&["-u", "ssh.service"][..], &["--follow", "-u", "ssh.service"], &["-o", "export"]]
    {
        let refused = sudo().args(journal).args(units).args(extra).failure();
        assert!(refused.stderr.contains("sudo: a password is required"), "{refused}");
    }

    // Without the drop-in: one line that says to run init again.
    let drop_in = site.systemd.host_path(format!("{SUDOERS_DIR}/pushdeploy-www"));
    fs::remove_file(&drop_in).expect("remove the drop-in");
    let refused = logs(&site, &[]).failure();
    eprintln!("logs without the drop-in:\n{}", refused.stderr);
    assert_eq!(refused.code(), Some(1), "{refused}");
    let errors: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(errors.len(), 1, "{refused}");
    assert!(
        errors[0].starts_with("pushdeploy: error: cannot read the app's journal: "),
        "{refused}"
    );
    assert!(errors[0].contains("sudo: a password is required"), "{refused}");
    assert!(errors[0].contains("run `pushdeploy init --app` again as root"), "{refused}");
    assert_eq!(refused.stdout, "");
}

#[test]
fn logs_of_a_site_without_an_app_is_one_line_of_error() {
    let env = TestEnv::new();
    env.init(&[]);
    let output = env.pushdeploy().args(["logs", "--repo"]).arg(&env.bare).failure();
    assert_eq!(output.code(), Some(2), "{output}");
    assert_eq!(
        output.normalized_stderr(),
        "pushdeploy: error: $TMP/site.git/ deploys a site, not an app: there is no app journal \
         to show (`pushdeploy log` lists its deploys)\n"
    );
    assert_eq!(output.stdout, "");
}
