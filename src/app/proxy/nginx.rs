//! nginx: the operator's configuration includes one file, `[app.proxy] file` (by default
//! `/etc/nginx/pushdeploy/NAME.conf`), and that file is a symlink to one of two root-owned
//! files beside it, `NAME-blue.conf` and `NAME-green.conf`, each naming one slot's instance as
//! the upstream `pushdeploy_NAME`. nginx parses its configuration as root: a file there that
//! the git user could write would let it have root create files anywhere (an `access_log`
//! path), so no deploy writes one. `init --app` (as root) writes the two files and the link
//! ([`files`]); a deploy only switches the link (`ln -sfn`), checks the whole configuration
//! (`nginx -t`) and has the master reload it (`nginx -s reload`), each as root. The operator's
//! own reloads read the same link, so they keep the live instance.
//!
//! A reload starts new workers, which know only the new upstream, and has the old ones stop
//! accepting, answer what they have in flight and exit ([`workers`]): [`point`] returns once
//! the new workers run and no old one accepts any more; [`drain`] waits until the old ones
//! have exited, which is when nothing is in flight to the old instance.

mod files;
mod workers;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::port;
use crate::config::App;
use crate::error::Error;
use crate::report::{escape, escape_path};
use crate::target_dir::Slot;

pub use files::install;

/// The programs a deploy runs as root, by the absolute paths sudoers rules name (Debian's).
pub const LN: &str = "/usr/bin/ln";
pub const NGINX: &str = "/usr/sbin/nginx";
/// The arguments of `nginx` before the configuration: the check, then the reload.
pub const TEST_ARGS: [&str; 2] = ["-t", "-c"];
pub const RELOAD_ARGS: [&str; 3] = ["-s", "reload", "-c"];
/// How long the master may take to parse the configuration and start its new workers.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the drain waits on: the master, and its workers from before the reload.
#[derive(Debug)]
pub struct Pointed {
    master: workers::Master,
    old: Vec<workers::Child>,
}

/// Returns the upstream's name, `pushdeploy_` and the unit's name with each character an
/// nginx variable name cannot hold (`.`, `-`, `:`) made `_`; `$NAME_slot` names the slot.
pub fn upstream_name(app: &App) -> String {
    let name: String =
        app.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("pushdeploy_{name}")
}

/// Returns the name of `slot`'s file beside the link: `NAME.conf` links to `NAME-blue.conf`
/// or `NAME-green.conf`.
pub fn slot_file(link: &Path, slot: Slot) -> Result<String, String> {
    let name = link.file_name().and_then(OsStr::to_str).ok_or_else(|| {
        format!("[app.proxy] file {} must end in a UTF-8 file name", escape_path(link))
    })?;
    let stem = name.strip_suffix(".conf").filter(|stem| !stem.is_empty()).unwrap_or(name);
    Ok(format!("{stem}-{}.conf", slot.name()))
}

/// Returns the file that names `slot`'s instance: the upstream, and the variable the
/// operator's location puts in the `X-Pushdeploy-Slot` header, so that the check through
/// the proxy knows which configuration answered.
pub fn render(app: &App, slot: Slot) -> String {
    let upstream = upstream_name(app);
    format!(
        "# Written by `pushdeploy init --app` (as root): the upstream of pushdeploy-{name}@.service\n\
         # while its {slot} instance is live. Each deploy links the file nginx includes to this\n\
         # one or to its twin; keep both writable by root only.\n\
         upstream {upstream} {{\n    server 127.0.0.1:{port};\n    keepalive 16;\n}}\n\
         # For the app's location: add_header X-Pushdeploy-Slot ${upstream}_slot always;\n\
         map \"\" ${upstream}_slot {{\n    default {slot};\n}}\n",
        name = app.name,
        port = port(app, slot),
    )
}

/// Links the included file to `to`'s, checks the configuration with `nginx -t` and reloads
/// it; returns once the master's new workers run and its old ones accept nothing more. On a
/// failure the link goes back to the file it named (and nginx reloads it again if the reload
/// had been asked for), so nginx keeps the old instance.
pub fn point(link: &Path, config: &Path, to: Slot) -> Result<Pointed, String> {
    let new = slot_file(link, to)?;
    let old = linked_slot_file(link)?;
    let master = workers::Master::of(config)?;
    let before = master.children()?;
    switch_link(link, &new)?;
    let mut reloaded = false;
    let applied = nginx(&TEST_ARGS, config).and_then(|()| {
        nginx(&RELOAD_ARGS, config)?;
        reloaded = true;
        master.wait_switched(&before, RELOAD_TIMEOUT)
    });
    match applied {
        Ok(()) => Ok(Pointed { master, old: before }),
        Err(why) => Err(format!("{why}{}", put_back(link, &old, config, reloaded))),
    }
}

/// Returns the file the link names now, which must be one of the two slot files: the switch
/// and its undo only ever run `ln` with one of them (the command lines sudoers allows).
fn linked_slot_file(link: &Path) -> Result<String, String> {
    let shown = escape_path(link);
    let target = std::fs::read_link(link).map_err(|err| {
        format!("cannot read the link {shown}: {err}; run `pushdeploy init --app` (as root)")
    })?;
    let names = [slot_file(link, Slot::Blue)?, slot_file(link, Slot::Green)?];
    names.into_iter().find(|name| target == Path::new(name)).ok_or_else(|| {
        format!(
            "{shown} links to {}, not to a slot's file; run `pushdeploy init --app` (as root)",
            escape_path(&target)
        )
    })
}

/// Links `link` to `old` again after nginx refused the new file; says so, for the failure.
fn put_back(link: &Path, old: &str, config: &Path, reload: bool) -> String {
    let shown = escape_path(link);
    if let Err(why) = switch_link(link, old) {
        return format!("; putting {shown} back to {old} failed too: {why}");
    }
    if reload {
        if let Err(why) = nginx(&RELOAD_ARGS, config) {
            return format!("; {shown} links to {old} again, but {why}");
        }
    }
    format!("; {shown} links to {old} again")
}

/// Points the link at `target`, a file beside it, by one rename: GNU `ln -sfn NEW LINK`
/// tries symlinkat(NEW, LINK), gets EEXIST, makes the link at a random name in LINK's
/// directory and renameat()s it over LINK (gnulib's force_symlinkat; seen with strace on
/// Debian 12's coreutils 9.1). So nginx, whenever it reads the configuration, finds the old
/// file or the new one, never no file. `-n` replaces a link to a directory instead of
/// entering it.
fn switch_link(link: &Path, target: &str) -> Result<(), String> {
    let shown = format!("ln -sfn {} {}", escape(target), escape_path(link));
    run(&shown, command(LN).arg("-sfn").arg(target).arg(link))
}

/// Runs `nginx ARGS CONFIG`.
fn nginx(args: &[&str], config: &Path) -> Result<(), String> {
    let shown = format!("nginx {} {}", args.join(" "), escape_path(config));
    run(&shown, command(NGINX).args(args).arg(config))
}

/// Returns the command for `program`, run as root: through `sudo -n` for the git user, whose
/// rules allow exactly these command lines (`sudo_rules::lines`).
fn command(program: &str) -> Command {
    crate::app::sudo::command(program)
}

/// Runs `command` (shown as `shown`); an error is one line with what it said.
fn run(shown: &str, command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `{shown}`: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("`{shown}` failed: {}", error_line(&output.stderr)))
}

/// Returns the line that says what went wrong in what nginx (or ln) printed, escaped: the
/// first `[emerg]`, `[alert]`, `[crit]` or `[error]` line (the file and line nginx refused),
/// from its level on, else the last line. nginx writes `nginx: [emerg] ...` when its error log
/// is a file, and the log's own `2024/01/02 03:04:05 [emerg] 12#12: ...` when that file
/// cannot be opened and the log goes to stderr.
fn error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines = || text.lines().map(str::trim).filter(|line| !line.is_empty());
    let error = lines().find_map(|line| {
        let start = ["[emerg] ", "[alert] ", "[crit] ", "[error] "]
            .iter()
            .find_map(|level| line.find(level))?;
        let (level, message) = line[start..].split_once("] ")?;
        // The log's `PID#TID: ` after the level.
        let message = match message.split_once(": ") {
            Some((ids, rest)) if ids.split('#').all(|id| id.parse::<u32>().is_ok()) => rest,
            _ => message,
        };
        Some(format!("{level}] {message}"))
    });
    let line = error.unwrap_or_else(|| {
        let last = lines().next_back().unwrap_or("no message");
        last.strip_prefix("nginx: ").unwrap_or(last).to_owned()
    });
    escape(&line)
}

/// Waits, at most `timeout`, until the workers from before the reload have exited: each one
/// answers its requests in flight first (to the old instance), then exits.
pub fn drain(pointed: Pointed, timeout: Duration) -> Result<(), String> {
    pointed.master.wait_exited(&pointed.old, timeout)
}

/// Returns the slot whose file the link names; `None` when there is no link, or it names
/// neither file.
pub fn current(link: &Path) -> Result<Option<Slot>, String> {
    let target = match std::fs::read_link(link) {
        Ok(target) => target,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read the link {}: {err}", escape_path(link))),
    };
    let named = |slot| slot_file(link, slot).is_ok_and(|name| target == Path::new(&name));
    Ok([Slot::Blue, Slot::Green].into_iter().find(|slot| named(*slot)))
}

/// Returns the error for a slot file name [`install`] cannot use.
fn name_error(why: String) -> Error {
    Error::user(why, "set [app.proxy] file to a path such as /etc/nginx/pushdeploy/NAME.conf")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{current, error_line, render, slot_file, upstream_name};
    use crate::config::App;
    use crate::target_dir::Slot;

    fn app(name: &str) -> App {
        let text = format!(
            "target = \"/srv/shop\"\n[app]\nname = \"{name}\"\ncommand = \"run\"\nports = {{ blue = 8001, green = 8002 }}\n\
             user = \"shop\"\n[app.proxy]\nkind = \"nginx\"\n"
        );
        let config = crate::config::parse(Path::new("/srv/shop.git/pushdeploy.toml"), &text);
        config.expect("config").app.expect("[app]")
    }

    #[test]
    fn unit_names_become_nginx_names() {
        assert_eq!(upstream_name(&app("shop")), "pushdeploy_shop");
        assert_eq!(upstream_name(&app("example.com")), "pushdeploy_example_com");
        assert_eq!(upstream_name(&app("a-b:c_d.9")), "pushdeploy_a_b_c_d_9");
    }

    #[test]
    fn each_slot_file_names_its_port_and_slot() {
        let green = render(&app("example.com"), Slot::Green);
        assert!(green.contains(
            "upstream pushdeploy_example_com {\n    server 127.0.0.1:8002;\n    keepalive 16;\n}\n"
        ));
        assert!(
            green.ends_with("map \"\" $pushdeploy_example_com_slot {\n    default green;\n}\n")
        );
        let blue = render(&app("example.com"), Slot::Blue);
        assert!(blue.contains("server 127.0.0.1:8001;") && blue.contains("default blue;"));
        assert!(!blue.contains("8002"));
    }

    #[test]
    fn slot_files_are_named_after_the_link() {
        let link = Path::new("/etc/nginx/pushdeploy/shop.conf");
        assert_eq!(slot_file(link, Slot::Blue).as_deref(), Ok("shop-blue.conf"));
        assert_eq!(slot_file(link, Slot::Green).as_deref(), Ok("shop-green.conf"));
        let bare = Path::new("/etc/nginx/pushdeploy/shop");
        assert_eq!(slot_file(bare, Slot::Green).as_deref(), Ok("shop-green.conf"));
    }

    #[test]
    fn the_slot_is_read_from_the_links_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("shop.conf");
        assert_eq!(current(&link), Ok(None));
        std::os::unix::fs::symlink("shop-green.conf", &link).expect("link");
        assert_eq!(current(&link), Ok(Some(Slot::Green)));
        std::fs::remove_file(&link).expect("unlink");
        std::os::unix::fs::symlink("other-blue.conf", &link).expect("link");
        assert_eq!(current(&link), Ok(None));
    }

    #[test]
    fn nginx_t_is_summed_up_by_its_emerg_line() {
        let stderr = b"nginx: [warn] the \"user\" directive makes sense only as root\n\
            nginx: [emerg] unknown directive \"oops\" in /etc/nginx/nginx.conf:12\n\
            nginx: configuration file /etc/nginx/nginx.conf test failed\n";
        assert_eq!(
            error_line(stderr),
            "[emerg] unknown directive \"oops\" in /etc/nginx/nginx.conf:12"
        );
        let logged =
            b"2026/12/03 10:40:40 [emerg] 495#495: unknown directive \"oops\" in /x.conf:3\n";
        assert_eq!(error_line(logged), "[emerg] unknown directive \"oops\" in /x.conf:3");
        assert_eq!(error_line(b"ln: failed \x1b[31m\n\n"), "ln: failed \\u{1b}[31m");
        assert_eq!(error_line(b""), "no message");
    }
}
