//! The systemd template unit `pushdeploy-NAME@.service`: one instance per slot
//! (`@blue`, `@green`), each running `[app] command` in its slot on its own port.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{App, Config, Strategy};
use crate::report::escape_path;

/// What marks a unit file as written by pushdeploy (so init may replace it).
pub const MARKER: &str = "written by `pushdeploy init --app`";

/// Returns the app unit's file name: the template `pushdeploy-NAME@.service` (one instance
/// per slot), or `pushdeploy-NAME.service` for the strategies that run one instance
/// (`restart`, `reload`).
pub fn file_name(app: &App) -> String {
    if app.strategy.is_single() {
        format!("pushdeploy-{}.service", app.name)
    } else {
        format!("pushdeploy-{}@.service", app.name)
    }
}

/// Returns where the one instance of `restart` and `reload` runs: a link in the target's
/// state directory to the live slot, `TARGET/.pushdeploy/current`, which the unit's
/// `WorkingDirectory=` names. systemd resolves it at each start, and gunicorn's re-exec
/// (USR2) changes into it again, so both find the release the link names then.
pub fn current_link(target: &Path) -> PathBuf {
    target.join(".pushdeploy").join("current")
}

/// Tells whether a unit file's text was written by pushdeploy.
pub fn is_ours(text: &str) -> bool {
    text.lines().next().is_some_and(|first| first.contains(MARKER))
}

/// Returns the text of the template unit for `config`'s app.
///
/// The target's path was checked to need no quoting (`config::app`); the command is passed to
/// `/bin/sh -c` as one double-quoted word, escaped so systemd expands nothing in it.
pub fn render(config: &Config, app: &App) -> String {
    if app.strategy.is_single() {
        return render_single(config, app);
    }
    let target = config.target.to_string_lossy();
    let (blue, green) = (app.ports.blue, app.ports.green);
    let mut unit = format!(
        "# {MARKER}; init replaces it when the configuration changes.\n\
         # One instance per slot: @blue runs {target}/blue on port {blue}, @green {target}/green on port {green}.\n\
         [Unit]\n\
         Description=pushdeploy app {name} (slot %i)\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=exec\n",
        name = app.name,
    );
    unit.push_str(&run_as(config, app));
    unit.push_str(&format!(
        "ExecStart=/bin/sh -c {command}\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}\n\
         Restart=on-failure\n\
         RestartSec=1s\n",
        command = exec_word(&app.command),
        stop = time_span(app.stop_timeout),
    ));
    if app.strategy == Strategy::Socket {
        unit.push_str(&format!(
            "# The socket the slots share (clients), then this slot's own (the health gate).\n\
             Sockets={} {}\n",
            socket_file_name(app, None),
            socket_file_name(app, Some("%i")),
        ));
    }
    unit.push_str(&hardening(&config.target));
    unit
}

/// Returns the unit of `restart` and `reload`: one instance, `pushdeploy-NAME.service`, run
/// in the release [`current_link`] names, on the one port.
fn render_single(config: &Config, app: &App) -> String {
    let current = current_link(&config.target);
    let mut unit = format!(
        "# {MARKER}; init replaces it when the configuration changes.\n\
         # One instance ({strategy} strategy) on port {port}, in the release {current} links to.\n\
         [Unit]\n\
         Description=pushdeploy app {name}\n\
         After=network.target\n\
         # Each deploy restarts this one unit: systemd's default start limit (5 starts in 10 s)\n\
         # would refuse the sixth push of a busy minute.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=exec\n\
         User={user}\n\
         WorkingDirectory={current}\n\
         # [app.env], the secrets of `pushdeploy env`, then PORT, PUSHDEPLOY_SLOT and\n\
         # PUSHDEPLOY_COMMIT of the live release; in a directory of root's, outside the target.\n\
         EnvironmentFile={dir}/{env}\n\
         EnvironmentFile=-{dir}/{secrets}\n\
         EnvironmentFile={dir}/{current_env}\n\
         # The release through the link (e.g. gunicorn --chdir $PUSHDEPLOY_DIR, so that its\n\
         # re-exec on USR2 finds the new release, not the directory it started in).\n\
         Environment=PUSHDEPLOY_DIR={current}\n\
         ExecStart=/bin/sh -c {command}\n",
        strategy = app.strategy.name(),
        port = app.ports.blue,
        current = current.to_string_lossy(),
        name = app.name,
        user = app.user,
        dir = app.env_dir.to_string_lossy(),
        env = super::env::ENV_FILE,
        secrets = super::env::SECRETS_FILE,
        current_env = super::env::CURRENT_ENV,
        command = exec_word(&app.command),
    );
    if let Some(reload) = &app.reload {
        // After gunicorn's USR2 the new master outlives the old one: `reload` writes its pid
        // to PIDFile= before it stops the old master, and systemd, seeing its main process
        // exit, reads the file and follows the new one.
        unit.push_str(&format!(
            "ExecReload=/bin/sh -c {}\n\
             RuntimeDirectory=pushdeploy-{name}\n\
             PIDFile=/run/pushdeploy-{name}/main.pid\n",
            exec_word(reload),
            name = app.name,
        ));
    }
    unit.push_str(&format!(
        "KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}\n\
         Restart=on-failure\n\
         RestartSec=1s\n",
        stop = time_span(app.stop_timeout),
    ));
    unit.push_str(&hardening(&config.target));
    unit
}

/// Returns the file name of a socket unit of the socket strategy: the shared one,
/// `pushdeploy-NAME.socket`, or `slot`'s own, `pushdeploy-NAME@SLOT.socket` (no template:
/// a file per slot, each on its slot's port).
pub fn socket_file_name(app: &App, slot: Option<&str>) -> String {
    match slot {
        None => format!("pushdeploy-{}.socket", app.name),
        Some(slot) => format!("pushdeploy-{}@{slot}.socket", app.name),
    }
}

/// Returns the file name of the service the socket strategy's sockets name in `Service=`.
pub fn idle_file_name(app: &App) -> String {
    format!("pushdeploy-{}-idle.service", app.name)
}

/// Returns the socket strategy's other units, each with its file name: the shared socket on
/// `listen`, each slot's own socket on its port, and the service they would start on a
/// connection when no instance runs. A socket starts its `Service=` then; were that a slot's
/// instance, a connection could start an old release. The idle service runs nothing and
/// stays active, so a connection waits in the backlog until an instance accepts it.
pub fn render_socket_units(app: &App) -> Vec<(String, String)> {
    let Some(listen) = app.listen.filter(|_| app.strategy == Strategy::Socket) else {
        return Vec::new();
    };
    let idle = idle_file_name(app);
    let socket = |description: String, address: String| {
        format!(
            "# {MARKER}; init replaces it when the configuration changes.\n\
             [Unit]\n\
             Description={description}\n\
             \n\
             [Socket]\n\
             ListenStream={address}\n\
             # Connections wait in the backlog while no instance accepts; nothing is started.\n\
             Service={idle}\n\
             Backlog=4096\n\
             \n\
             [Install]\n\
             WantedBy=sockets.target\n"
        )
    };
    let mut units = vec![(
        socket_file_name(app, None),
        socket(
            format!("pushdeploy app {}: the port the slots share", app.name),
            listen.to_string(),
        ),
    )];
    for (slot, port) in [("blue", app.ports.blue), ("green", app.ports.green)] {
        units.push((
            socket_file_name(app, Some(slot)),
            socket(
                format!(
                    "pushdeploy app {}: the {slot} instance's own port (health gate)",
                    app.name
                ),
                format!("127.0.0.1:{port}"),
            ),
        ));
    }
    units.push((
        idle,
        format!(
            "# {MARKER}; init replaces it when the configuration changes.\n\
             # What pushdeploy-{name}.socket would start on a connection while no instance runs: nothing.\n\
             [Unit]\n\
             Description=pushdeploy app {name}: nothing to start (the deploys start the instances)\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             ExecStart=/bin/true\n",
            name = app.name,
        ),
    ));
    units
}

/// Returns the file name of the unit that runs `[app] release`,
/// `pushdeploy-NAME-release@.service`.
pub fn release_file_name(app: &App) -> String {
    format!("pushdeploy-{}-release@.service", app.name)
}

/// Returns the text of the oneshot template unit that runs `[app] release` in a slot, as the
/// app's instance would run (user, directory, environment, hardening), or `None` when there
/// is no `release`. A deploy starts it through systemd, so the git user needs no power beyond
/// starting fixed units, and the command never runs as the git user.
pub fn render_release(config: &Config, app: &App) -> Option<String> {
    let release = app.release.as_deref()?;
    let target = config.target.to_string_lossy();
    let mut unit = format!(
        "# {MARKER}; init replaces it when the configuration changes, and removes it with `release`.\n\
         # `[app] release`, run once per deploy in the new slot (@blue: {target}/blue, @green: {target}/green) before its instance starts.\n\
         [Unit]\n\
         Description=pushdeploy app {name}: release command (slot %i)\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n",
        name = app.name,
    );
    unit.push_str(&run_as(config, app));
    unit.push_str(&format!(
        "ExecStart=/bin/sh -c {command}\n\
         TimeoutStartSec={timeout}\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop}\n",
        command = exec_word(release),
        timeout = time_span(app.release_timeout),
        stop = time_span(app.stop_timeout),
    ));
    unit.push_str(&hardening(&config.target));
    Some(unit)
}

/// Returns the `User=`, `WorkingDirectory=` and `EnvironmentFile=` lines both units share.
fn run_as(config: &Config, app: &App) -> String {
    let target = config.target.to_string_lossy();
    let dir = app.env_dir.to_string_lossy();
    format!(
        "User={user}\n\
         WorkingDirectory={target}/%i\n\
         # [app.env], the secrets of `pushdeploy env`, then this slot's PORT, PUSHDEPLOY_SLOT\n\
         # and PUSHDEPLOY_COMMIT; in a directory of root's, outside the target.\n\
         EnvironmentFile={dir}/{env}\n\
         EnvironmentFile=-{dir}/{secrets}\n\
         EnvironmentFile={dir}/%i.env\n",
        user = app.user,
        env = super::env::ENV_FILE,
        secrets = super::env::SECRETS_FILE,
    )
}

/// Returns the hardening both units share: the app reads its release and writes only
/// `TARGET/shared`.
fn hardening(target: &Path) -> String {
    let mut lines = format!(
        "\n\
         # The app reads its release and writes only {target}/shared.\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ReadWritePaths={target}/shared\n",
        target = target.to_string_lossy(),
    );
    lines.push_str(&home_and_tmp(target));
    lines.push_str(
        "PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         LockPersonality=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         SystemCallArchitectures=native\n\
         UMask=0027\n",
    );
    lines
}

/// Returns the `ProtectHome=` and `PrivateTmp=` lines that still let the app see its target:
/// `ProtectHome=yes` would hide a target under a home directory, and `PrivateTmp=yes` one
/// under /tmp or /var/tmp.
fn home_and_tmp(target: &Path) -> String {
    let under = |dirs: &[&str]| dirs.iter().any(|dir| target.starts_with(dir));
    let home = if under(&["/home", "/root", "/run/user"]) { "read-only" } else { "yes" };
    let mut lines = format!("ProtectHome={home}\n");
    if under(&["/tmp", "/var/tmp"]) {
        lines.push_str("# No PrivateTmp=: the target is under a temporary directory.\n");
    } else {
        lines.push_str("PrivateTmp=yes\n");
    }
    lines
}

/// Returns a duration as a systemd time span: whole seconds when it is, else milliseconds.
fn time_span(duration: std::time::Duration) -> String {
    match duration.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Quotes a shell command as one word of a unit's `ExecStart=`: in double quotes, with `\`
/// and `"` escaped, and `%` and `$` doubled so systemd passes them to the shell as written.
fn exec_word(command: &str) -> String {
    let mut word = String::with_capacity(command.len() + 2);
    word.push('"');
    for c in command.chars() {
        match c {
            '\\' | '"' => word.extend(['\\', c]),
            '%' | '$' => word.extend([c, c]),
            _ => word.push(c),
        }
    }
    word.push('"');
    word
}

/// What `systemd-analyze verify` said about a unit.
pub enum Verified {
    Passed,
    /// systemd-analyze is not installed: the unit was not checked.
    NotChecked,
}

/// Checks the unit text with `systemd-analyze verify`, on a copy under its own name in a
/// private temporary directory, so that a refusal leaves the unit directory untouched.
///
/// A warning about the file counts as a refusal: systemd ignores a setting it cannot parse,
/// and the unit would run without it (a hardening line, say).
///
/// `others` (units it names, such as its sockets) are written beside it.
pub fn verify_with(
    file_name: &str,
    text: &str,
    others: &[(String, String)],
) -> Result<Verified, String> {
    let dir =
        tempfile::tempdir().map_err(|err| format!("cannot make a temporary directory: {err}"))?;
    for (name, other) in others {
        let path = dir.path().join(name);
        std::fs::write(&path, other)
            .map_err(|err| format!("cannot write {}: {err}", escape_path(&path)))?;
    }
    let path = dir.path().join(file_name);
    std::fs::write(&path, text)
        .map_err(|err| format!("cannot write {}: {err}", escape_path(&path)))?;
    let output =
        match Command::new("systemd-analyze").arg("verify").arg("--man=no").arg(&path).output() {
            Ok(output) => output,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Verified::NotChecked),
            Err(err) => return Err(format!("cannot run systemd-analyze: {err}")),
        };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = path.to_string_lossy();
    let complaint = stderr.lines().find(|line| line.contains(&*shown) || line.contains(file_name));
    match complaint {
        None if output.status.success() => Ok(Verified::Passed),
        complaint => Err(format!(
            "systemd-analyze verify refused the unit {file_name}: {}",
            complaint.or(stderr.lines().next()).unwrap_or("no message").replace(&*shown, file_name)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{exec_word, render, render_release};
    use crate::config::{self, Config};

    fn config(extra: &str) -> Config {
        let text = format!(
            "target = \"/srv/www/shop\"\n[app]\ncommand = \"./server\"\nports = {{ blue = 8001, green = 8002 }}\nuser = \"shopapp\"\nstop_timeout = \"5s\"\n{extra}"
        );
        config::parse(Path::new("p"), &text).unwrap()
    }

    #[test]
    fn no_release_unit_without_release() {
        let config = config("");
        assert!(render_release(&config, config.app.as_ref().unwrap()).is_none());
    }

    #[test]
    fn the_release_unit_runs_like_the_instance_but_once() {
        let config = config(
            "release = \"python3 manage.py migrate --db=$DB 100%\"\nrelease_timeout = \"90s\"\n",
        );
        let app = config.app.as_ref().unwrap();
        let release = render_release(&config, app).unwrap();
        let lines: Vec<&str> = release.lines().collect();
        for line in [
            "Type=oneshot",
            r#"ExecStart=/bin/sh -c "python3 manage.py migrate --db=$$DB 100%%""#,
            "TimeoutStartSec=90s",
            "TimeoutStopSec=5s",
        ] {
            assert!(lines.contains(&line), "no {line:?} in\n{release}");
        }
        assert!(!release.contains("Restart="), "{release}");
        // Everything the instance runs with, the release command runs with.
        let main = render(&config, app);
        let own = [
            "Type=",
            "ExecStart=",
            "KillSignal=",
            "TimeoutStopSec=",
            "Restart",
            "#",
            "Description=",
        ];
        for line in main.lines().filter(|line| !own.iter().any(|p| line.starts_with(p))) {
            assert!(lines.contains(&line), "the release unit lacks {line:?}\n{release}");
        }
        assert!(
            lines.contains(&"User=shopapp")
                && lines.contains(&"ReadWritePaths=/srv/www/shop/shared")
        );
    }

    #[test]
    fn the_release_timeout_defaults_to_ten_minutes() {
        let config = config("release = \"./migrate\"\n");
        let release = render_release(&config, config.app.as_ref().unwrap()).unwrap();
        assert!(release.lines().any(|line| line == "TimeoutStartSec=600s"), "{release}");
    }

    #[test]
    fn exec_word_leaves_nothing_for_systemd_to_expand() {
        assert_eq!(
            exec_word(r#"gunicorn -b 127.0.0.1:$PORT "app:make()" 100% \x"#),
            r#""gunicorn -b 127.0.0.1:$$PORT \"app:make()\" 100%% \\x""#
        );
    }

    #[test]
    fn restart_and_reload_run_one_unit_in_the_link_and_socket_instances_take_two_sockets() {
        let single = "target = \"/srv/www/shop\"\n[app]\ncommand = \"exec ./server\"\nport = 8001\nuser = \"shopapp\"\n";
        let reloading = config::parse(
            Path::new("p"),
            &single.replace("port", "strategy = \"reload\"\nreload = \"sh reload.sh\"\nport"),
        )
        .unwrap();
        let app = reloading.app.as_ref().unwrap();
        assert_eq!(super::file_name(app), "pushdeploy-shop.service");
        let unit = render(&reloading, app);
        for line in [
            "WorkingDirectory=/srv/www/shop/.pushdeploy/current",
            "EnvironmentFile=/etc/pushdeploy/shop/current.env",
            "Environment=PUSHDEPLOY_DIR=/srv/www/shop/.pushdeploy/current",
            "ExecReload=/bin/sh -c \"sh reload.sh\"",
            "PIDFile=/run/pushdeploy-shop/main.pid",
            "StartLimitIntervalSec=0",
        ] {
            assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
        }
        let config = config("strategy = \"socket\"\nlisten = \"0.0.0.0:80\"\n");
        let app = config.app.as_ref().unwrap();
        let unit = render(&config, app);
        assert!(
            unit.lines().any(|l| l == "Sockets=pushdeploy-shop.socket pushdeploy-shop@%i.socket")
        );
        let units = super::render_socket_units(app);
        let names: Vec<&str> = units.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pushdeploy-shop.socket",
                "pushdeploy-shop@blue.socket",
                "pushdeploy-shop@green.socket",
                "pushdeploy-shop-idle.service"
            ]
        );
        assert!(
            units[0].1.contains("ListenStream=0.0.0.0:80\nService=pushdeploy-shop-idle.service")
                || units[0].1.contains("ListenStream=0.0.0.0:80\n"),
            "{}",
            units[0].1
        );
        assert!(
            units[1].1.contains("ListenStream=127.0.0.1:8001\n")
                && units[1].1.contains("Service=pushdeploy-shop-idle.service\n")
        );
    }
}
