//! The systemd template unit `pushdeploy-NAME@.service`: one instance per slot
//! (`@blue`, `@green`), each running `[app] command` in its slot on its own port.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::config::{App, Config};
use crate::report::escape_path;

/// What marks a unit file as written by pushdeploy (so init may replace it).
pub const MARKER: &str = "written by `pushdeploy init --app`";

/// Returns the template unit's file name, `pushdeploy-NAME@.service`.
pub fn file_name(app: &App) -> String {
    format!("pushdeploy-{}@.service", app.name)
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
    unit.push_str(&hardening(&config.target));
    unit
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
pub fn verify(file_name: &str, text: &str) -> Result<Verified, String> {
    let dir =
        tempfile::tempdir().map_err(|err| format!("cannot make a temporary directory: {err}"))?;
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
}
