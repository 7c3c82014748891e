//! The app's files in the target, written by `init --app` as root: the environment files in
//! `TARGET/.pushdeploy/app/` and the `TARGET/shared/` directory the app may write.
//!
//! The target belongs to the git user, who could swap a directory in it for a symlink to
//! `/etc` while root writes there; so every step goes through directory handles opened with
//! `O_NOFOLLOW` (`openat`, `mkdirat`, `renameat`), never through a joined path. What init
//! creates in the state directory is given to the target's owner, who runs the deploys (they
//! refuse state files owned by anyone else); `shared/` is given to the app's user, with the
//! target owner's group.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::env::{self, ENV_FILE};
use crate::config::{App, Config};
use crate::error::{Error, Kind};
use crate::report::{self, escape_path};
use crate::target_dir::Slot;

/// A user and group to give what init creates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Returns the app user's ids, refusing a user that does not exist or owns the target (the git
/// user, who owns the releases; running as root, init cannot tell it from the config alone).
pub fn app_owner(app: &App, target: &Path) -> Result<Owner, Error> {
    let user = nix::unistd::User::from_name(&app.user).ok().flatten().ok_or_else(|| {
        Error::user(
            format!("the app user {:?} does not exist", app.user),
            format!(
                "create it: `useradd --system --no-create-home --shell /usr/sbin/nologin {}`",
                app.user
            ),
        )
    })?;
    let owner = target_owner(target);
    if owner.uid == user.uid.as_raw() {
        return Err(Error::user(
            format!(
                "the app user {:?} owns the target {}, and could change its own releases",
                app.user,
                escape_path(target)
            ),
            "run the app as a user of its own (--app-user), not as the git user",
        ));
    }
    Ok(Owner { uid: user.uid.as_raw(), gid: user.gid.as_raw() })
}

/// Returns the owner of the target, or this user's ids when it does not exist yet.
pub fn target_owner(target: &Path) -> Owner {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(target) {
        Ok(meta) => Owner { uid: meta.uid(), gid: meta.gid() },
        Err(_) => {
            Owner { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
        }
    }
}

/// Writes the app's environment files and creates `shared/`; each file that is already as it
/// should be is left alone.
pub fn write(config: &Config, app: &App, app_user: Owner) -> Result<(), Error> {
    let target = &config.target;
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |errno: Errno| {
            Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(&path)))
                .hint("check that it is a directory (not a symlink) pushdeploy can write")
        }
    };
    let root = open_dir(None, target).map_err(fail(target))?;
    let owner = {
        let stat = fstat(&root).map_err(fail(target))?;
        Owner { uid: stat.st_uid, gid: stat.st_gid }
    };
    let state_path = target.join(".pushdeploy");
    let state = ensure_dir(&root, &state_path, 0o755, owner, true)?;
    let app_path = state_path.join("app");
    let app_dir = ensure_dir(&state, &app_path, 0o700, owner, true)?;
    // restart and reload run one instance, which reads `current.env` (written by each deploy).
    let current = app.strategy.is_single().then_some(CURRENT_ENV.to_owned());
    let mut files = vec![
        (ENV_FILE.to_owned(), None),
        (env::slot_file(Slot::Blue), Some(Slot::Blue)),
        (env::slot_file(Slot::Green), Some(Slot::Green)),
    ];
    files.extend(current.map(|name| (name, Some(Slot::Blue))));
    for (name, slot) in files {
        let path = app_path.join(&name);
        let old = read_at(&app_dir, &name).map_err(fail(&path))?;
        let content = match slot {
            None => env::render_env(&app.env),
            Some(slot) => {
                env::render_slot(app, slot, &env::commit_in(old.as_deref().unwrap_or_default()))
            }
        };
        if old.as_deref() == Some(content.as_str()) {
            report::line(&format!("unchanged {}", escape_path(&path)));
            continue;
        }
        write_at(&app_dir, &name, &content, owner).map_err(fail(&path))?;
        report::line(&format!("wrote {}", escape_path(&path)));
    }
    // The app's user owns shared/; the target owner's group (setgid, so entries made in it
    // keep that group) lets the git user's deploys check that each `shared` entry exists. The
    // git user deploys the code the app runs, so reading its data is no new power.
    let shared = Owner { uid: app_user.uid, gid: owner.gid };
    ensure_dir(&root, &target.join("shared"), 0o2750, shared, false)?;
    Ok(())
}

/// Writes the file `name` in `TARGET/.pushdeploy/SUBDIR/` (made, mode 0755, when missing),
/// both given to the target's owner, through the same `O_NOFOLLOW` handles; a file that exists
/// is left as it is. Returns whether it was written. For the files a proxy reads from the
/// target (the Caddy snippet, HAProxy's server states), which the deploys rewrite.
pub fn write_proxy_file(
    target: &Path,
    subdir: &str,
    name: &str,
    content: &str,
) -> Result<bool, Error> {
    let state_path = target.join(".pushdeploy");
    let dir_path = state_path.join(subdir);
    let path = dir_path.join(name);
    let fail = |errno: Errno| {
        Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(&path)))
            .hint("check that it is a directory (not a symlink) pushdeploy can write")
    };
    let root = open_dir(None, target).map_err(fail)?;
    let stat = fstat(&root).map_err(fail)?;
    let owner = Owner { uid: stat.st_uid, gid: stat.st_gid };
    let state = ensure_dir(&root, &state_path, 0o755, owner, true)?;
    let dir = ensure_dir(&state, &dir_path, 0o755, owner, true)?;
    if read_at(&dir, name).map_err(fail)?.is_some() {
        return Ok(false);
    }
    // A proxy running as its own user reads it (the env files stay 0600).
    write_file_at(&dir, name, content, owner, 0o644).map_err(fail)?;
    Ok(true)
}

/// The environment file of the one instance of `restart` and `reload`: the live release's
/// `PORT`, `PUSHDEPLOY_SLOT` and `PUSHDEPLOY_COMMIT`.
pub const CURRENT_ENV: &str = "current.env";

/// Writes `slot`'s environment file for a deploy of `commit` (temporary name, then rename),
/// through the same `O_NOFOLLOW` handles as init; the file stays its directory owner's.
pub fn write_slot_env(target: &Path, app: &App, slot: Slot, commit: &str) -> Result<(), Error> {
    write_env(target, app, slot, commit, env::slot_file(slot))
}

/// Writes `current.env` for the one instance of `restart` and `reload`, running `commit` in
/// `slot`, as [`write_slot_env`] writes a slot's.
pub fn write_current_env(target: &Path, app: &App, slot: Slot, commit: &str) -> Result<(), Error> {
    write_env(target, app, slot, commit, CURRENT_ENV.to_owned())
}

/// Points [`crate::app::unit::current_link`] at `slot` (a new link renamed over it), so the
/// next start or re-exec of the one instance runs that slot's release.
pub fn point_current(target: &Path, slot: Slot) -> Result<(), String> {
    let link = crate::app::unit::current_link(target);
    let new = target.join(".pushdeploy").join(".current.new");
    let fail =
        |err: std::io::Error| format!("cannot point {} at {slot}: {err}", escape_path(&link));
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail(err)),
    }
    std::os::unix::fs::symlink(Path::new("..").join(slot.name()), &new).map_err(fail)?;
    std::fs::rename(&new, &link).map_err(fail)
}

/// Returns the slot [`crate::app::unit::current_link`] names, if any.
pub fn current_slot(target: &Path) -> Option<Slot> {
    let to = std::fs::read_link(crate::app::unit::current_link(target)).ok()?;
    Slot::ALL.into_iter().find(|slot| to == Path::new("..").join(slot.name()))
}

fn write_env(
    target: &Path,
    app: &App,
    slot: Slot,
    commit: &str,
    name: String,
) -> Result<(), Error> {
    let app_path = target.join(".pushdeploy").join("app");
    let path = app_path.join(&name);
    let fail = |errno: Errno| {
        Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(&path)))
            .hint("run `pushdeploy init --app` again (as root) to recreate the app's files")
    };
    let root = open_dir(None, target).map_err(fail)?;
    let state = open_dir(Some(&root), &target.join(".pushdeploy")).map_err(fail)?;
    let app_dir = open_dir(Some(&state), &app_path).map_err(fail)?;
    let stat = fstat(&app_dir).map_err(fail)?;
    let owner = Owner { uid: stat.st_uid, gid: stat.st_gid };
    write_at(&app_dir, &name, &env::render_slot(app, slot, commit), owner).map_err(fail)
}

/// Opens a directory without following a symlink in its last component (`at` the handle of
/// its parent, or `path` as given when `None`).
pub(crate) fn open_dir(at: Option<&OwnedFd>, path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    match at {
        None => nix::fcntl::open(path, flags, Mode::empty()),
        Some(parent) => {
            let name = path.file_name().unwrap_or_default();
            openat(parent, name, flags | OFlag::O_NOFOLLOW, Mode::empty())
        }
    }
}

/// Opens the directory `path` in `parent`, made (and given to `owner`) when missing. An
/// existing one must be a real directory and, where `must_own`, be `owner`'s.
fn ensure_dir(
    parent: &OwnedFd,
    path: &Path,
    mode: u32,
    owner: Owner,
    must_own: bool,
) -> Result<OwnedFd, Error> {
    let shown = escape_path(path);
    let name = path.file_name().unwrap_or_default();
    let created = match mkdirat(parent, name, Mode::from_bits_truncate(mode)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(errno) => {
            return Err(Error::new(Kind::Io, format!("cannot create {shown}: {errno}")));
        }
    };
    let dir = open_dir(Some(parent), path).map_err(|errno| {
        Error::user(
            format!(
                "{shown} is not a directory ({errno}); pushdeploy does not follow a symlink there"
            ),
            format!("move {shown} away and run init again"),
        )
    })?;
    let stat = fstat(&dir)
        .map_err(|errno| Error::new(Kind::Io, format!("cannot stat {shown}: {errno}")))?;
    if created {
        give(&dir, owner).map_err(|errno| {
            Error::new(Kind::Io, format!("cannot give {shown} to uid {}: {errno}", owner.uid))
        })?;
        // mkdir(2) drops the setgid bit of a mode; it is set once the group is right.
        if mode & 0o7000 != 0 {
            fchmod(&dir, Mode::from_bits_truncate(mode)).map_err(|errno| {
                Error::new(Kind::Io, format!("cannot set the mode of {shown}: {errno}"))
            })?;
        }
        report::line(&format!("created {shown}"));
    } else if must_own && stat.st_uid != owner.uid {
        return Err(Error::user(
            format!(
                "{shown} is owned by uid {}, not by the target's owner (uid {}), who runs the deploys",
                stat.st_uid, owner.uid
            ),
            format!("`chown -R {}: {shown}`, then run init again", owner.uid),
        ));
    }
    Ok(dir)
}

/// Gives a file to `owner` when running as root (otherwise it is this user's already).
fn give(fd: &impl std::os::fd::AsFd, owner: Owner) -> nix::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    fchown(fd, Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(owner.gid)))
}

/// Reads the regular file `name` in `dir`: `None` when it does not exist.
pub(crate) fn read_at(dir: &OwnedFd, name: &str) -> nix::Result<Option<String>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(errno),
    };
    if !nix::sys::stat::SFlag::from_bits_truncate(fstat(&fd)?.st_mode)
        .contains(nix::sys::stat::SFlag::S_IFREG)
    {
        return Err(Errno::EINVAL);
    }
    let mut text = String::new();
    File::from(fd)
        .read_to_string(&mut text)
        .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(0)))?;
    Ok(Some(text))
}

/// Writes `name` in `dir` by a temporary name and a rename, so the unit never reads half a
/// file; mode 0600 (systemd reads it as root), given to `owner`.
fn write_at(dir: &OwnedFd, name: &str, content: &str, owner: Owner) -> nix::Result<()> {
    write_file_at(dir, name, content, owner, 0o600)
}

/// Writes `name` in `dir` as [`write_at`] does, with `mode` (set whatever the umask).
pub(crate) fn write_file_at(
    dir: &OwnedFd,
    name: &str,
    content: &str,
    owner: Owner,
    mode: u32,
) -> nix::Result<()> {
    let temp = PathBuf::from(format!(".{name}.pushdeploy-new"));
    match unlinkat(dir, &temp, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(errno),
    }
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, &temp, flags, Mode::from_bits_truncate(0o600))?;
    give(&fd, owner)?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
    let mut file = File::from(fd);
    let io = |err: std::io::Error| Errno::from_raw(err.raw_os_error().unwrap_or(0));
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    renameat(dir, &temp, dir, name)
}
