//! The sudoers drop-in `init --app` writes as root, `/etc/sudoers.d/pushdeploy-NAME`: the
//! rules of [`super::sudo_rules::rules`] for the git user, checked with `visudo -cf` before anything
//! is written, then written mode 0440 and root's by a temporary name and a rename, through the
//! directory's handle with `O_NOFOLLOW` (as [`super::state`] writes the target).
//!
//! sudo reads every file of its include directory whose name has no `.` and does not end in
//! `~`: the file is named without the `.` of an app name, and the temporary one starts with
//! one, so sudo never reads half a file.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::sys::stat::fstat;
use nix::unistd::{Uid, User, fsync};

use super::state;
use super::sudo_rules;
use crate::config::App;
use crate::error::{Error, Kind};
use crate::report::{self, escape, escape_path};

/// The mode sudo wants of a sudoers file: read-only, root's and its group's.
const MODE: u32 = 0o440;

/// The drop-in init will write (or leave, when it is already as it should be).
pub struct Planned {
    dir: PathBuf,
    name: String,
    text: String,
    git_user: String,
    unchanged: bool,
}

/// Decides the drop-in for `app` and the git user `user`, refusing before anything is
/// written; `None` (said in a line) when none is needed or none can be written: the git user
/// is root, or init is not.
pub fn plan(app: &App, user: &User, dir: &Path) -> Result<Option<Planned>, Error> {
    if user.uid.is_root() {
        report::line("the git user is root: no sudoers drop-in is needed");
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        report::line(&format!(
            "not running as root: no sudoers drop-in written, so the git user {} cannot start the \
             app's units; run init as root",
            user.name
        ));
        return Ok(None);
    }
    if !is_user_name(&user.name) {
        return Err(Error::user(
            format!("the git user's name {:?} cannot be written into sudoers", user.name),
            "use a git user whose name has only letters, digits and `_-.` (--git-user)",
        ));
    }
    if let Some(arg) = sudo_rules::unsupported_argument(app) {
        return Err(Error::user(
            format!("sudoers cannot hold the argument {:?} of a command line of the app", arg),
            "use paths of letters, digits and `/._+@:,=-` only ([app.proxy] file and config)",
        ));
    }
    let text = sudo_rules::rules(app, &user.name);
    let name = file_name(app);
    check(&name, &text)?;
    let unchanged = existing(dir, &name, app)?.as_deref() == Some(text.as_str());
    let git_user = user.name.clone();
    Ok(Some(Planned { dir: dir.to_owned(), name, text, git_user, unchanged }))
}

/// Writes the planned drop-in, or says it is unchanged.
pub fn write(planned: &Planned) -> Result<(), Error> {
    let path = planned.dir.join(&planned.name);
    let shown = escape_path(&path);
    if planned.unchanged {
        report::line(&format!("unchanged {shown}"));
        return Ok(());
    }
    let dir = state::open_dir(None, &planned.dir).map_err(|errno| cannot_write(&path, errno))?;
    let existed = state::read_at(&dir, &planned.name).is_ok_and(|old| old.is_some());
    write_at(&dir, &planned.name, &planned.text).map_err(|errno| cannot_write(&path, errno))?;
    report::line(&format!(
        "{} {shown}: the git user {} may run the app's systemctl and journalctl command lines as \
         root (`sudo -l -U {}` lists them)",
        if existed { "updated" } else { "wrote" },
        planned.git_user,
        planned.git_user
    ));
    Ok(())
}

fn cannot_write(path: &Path, errno: Errno) -> Error {
    Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(path)))
        .hint("check that the directory exists and is root's (--sudoers-dir)")
}

/// Returns the drop-in's file name, `pushdeploy-NAME` with each `.` of the name made `_`.
pub fn file_name(app: &App) -> String {
    format!("pushdeploy-{}", app.name.replace('.', "_"))
}

/// Returns the git user, who runs the deploys: `name` (`--git-user`), or else the target's
/// owner.
pub fn git_user(target: &Path, name: Option<&str>) -> Result<User, Error> {
    let user = match name {
        Some(name) => User::from_name(name).ok().flatten().ok_or_else(|| {
            Error::user(
                format!("the git user {name:?} does not exist"),
                "pass the user that owns the repository and the target (--git-user)",
            )
        })?,
        None => {
            let owner = state::target_owner(target);
            let uid = Uid::from_raw(owner.uid);
            User::from_uid(uid).ok().flatten().ok_or_else(|| {
                Error::user(
                    format!(
                        "the target {} is owned by uid {uid}, which has no user name",
                        escape_path(target)
                    ),
                    "give the target to the git user, or name it with --git-user",
                )
            })?
        }
    };
    Ok(user)
}

/// Tells whether `name` can stand unquoted in sudoers as a user (and is a usual user name).
fn is_user_name(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Checks the drop-in with `visudo -cf` on a copy in a private temporary directory, so that
/// a refusal leaves the include directory untouched. Without visudo init refuses: a drop-in
/// sudo cannot parse would break sudo for everyone.
fn check(name: &str, text: &str) -> Result<(), Error> {
    let refuse = |why: String| {
        Error::user(why, "report it as a pushdeploy bug; nothing was written".to_owned())
    };
    let dir = tempfile::tempdir()
        .map_err(|err| refuse(format!("cannot make a temporary directory: {err}")))?;
    let path = dir.path().join(name);
    std::fs::write(&path, text)
        .map_err(|err| refuse(format!("cannot write {}: {err}", escape_path(&path))))?;
    let output = match Command::new("visudo").arg("-c").arg("-f").arg(&path).output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::user(
                "visudo is not installed, so the sudoers drop-in for the git user cannot be \
                 checked; nothing was written",
                "install sudo (`apt-get install sudo`), then run init again",
            ));
        }
        Err(err) => return Err(refuse(format!("cannot run visudo: {err}"))),
    };
    if output.status.success() {
        report::line(&format!("visudo -cf: {name} parsed OK"));
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr.lines().find(|line| !line.trim().is_empty()).unwrap_or("no message");
    let why = escape(why.trim()).replace(&*path.to_string_lossy(), name);
    Err(refuse(format!("visudo refused the sudoers drop-in {name}: {why}")))
}

/// Returns the drop-in's current text (`None`: there is none), refusing a directory sudo
/// would not trust and a file that init did not write for this app.
fn existing(dir_path: &Path, name: &str, app: &App) -> Result<Option<String>, Error> {
    let shown = escape_path(dir_path);
    let dir = state::open_dir(None, dir_path).map_err(|errno| {
        Error::user(
            format!("cannot open the sudoers directory {shown}: {errno}"),
            "install sudo, whose /etc/sudoers includes /etc/sudoers.d, or pass --sudoers-dir",
        )
    })?;
    let stat = fstat(&dir)
        .map_err(|errno| Error::new(Kind::Io, format!("cannot stat {shown}: {errno}")))?;
    if stat.st_uid != 0 || stat.st_mode & 0o022 != 0 {
        return Err(Error::user(
            format!(
                "the sudoers directory {shown} is not root's alone (uid {}, mode {:o})",
                stat.st_uid,
                stat.st_mode & 0o7777
            ),
            format!("`chown root: {shown}` and `chmod go-w {shown}` (sudo refuses it as it is)"),
        ));
    }
    let path = dir_path.join(name);
    let old = state::read_at(&dir, name).map_err(|errno| {
        Error::user(
            format!("cannot read {}: {errno}", escape_path(&path)),
            format!("move {} away (init writes a regular file there)", escape_path(&path)),
        )
    })?;
    let ours = |text: &String| text.lines().next() == Some(sudo_rules::first_line(app).as_str());
    if old.as_ref().is_some_and(|old| !ours(old)) {
        return Err(Error::user(
            format!(
                "{} exists and was not written by init for pushdeploy-{}@.service; nothing was changed",
                escape_path(&path),
                app.name
            ),
            "move it away, or give this app another name (--name)",
        ));
    }
    Ok(old)
}

/// Writes `name` in `dir` by a temporary name (which sudo skips: it has a `.`) and a rename,
/// mode 0440 and root's whatever the umask, synced before and after the rename.
fn write_at(dir: &OwnedFd, name: &str, text: &str) -> nix::Result<()> {
    state::write_file_at(dir, name, text, state::Owner { uid: 0, gid: 0 }, MODE)?;
    fsync(dir)
}
