//! The app's files, written by `init --app` as root: the environment files in `[app] env_dir`
//! (root's, outside the target), the app's state directory `TARGET/.pushdeploy/app/` and the
//! `TARGET/shared/` directory the app may write.
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

/// Writes the app's environment files into `[app] env_dir` (made when missing), creates the
/// app's state directory and `shared/`; each file that is already as it should be is left
/// alone, and the secrets file, once made, is `pushdeploy env`'s alone.
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
    let env_dir = walk_env_dir(app, Missing::Create)?;
    let env_dir = env_dir.ok_or_else(|| Error::new(Kind::Internal, "env_dir: not made"))?;
    // Root's, readable by the app's group (systemd reads them as root; the app and its
    // `release` may read them too); never by the git user, whose builds run pushed code.
    let secret = Owner { uid: 0, gid: app_user.gid };
    let mut files = vec![
        (ENV_FILE.to_owned(), None),
        (env::slot_file(Slot::Blue), Some(Slot::Blue)),
        (env::slot_file(Slot::Green), Some(Slot::Green)),
    ];
    // restart and reload run one instance, which reads `current.env` (written by each deploy).
    if app.strategy.is_single() {
        files.push((env::CURRENT_ENV.to_owned(), Some(Slot::Blue)));
    }
    for (name, slot) in files {
        let path = app.env_dir.join(&name);
        let old = read_at(&env_dir, &name).map_err(fail(&path))?;
        let (content, file_owner, mode) = match slot {
            None => (env::render_env(&app.env), secret, 0o640),
            Some(slot) => {
                let commit = env::commit_in(old.as_deref().unwrap_or_default());
                // The deploys rewrite it in place (they may not rename in root's directory).
                (env::render_slot(app, slot, &commit), owner, 0o644)
            }
        };
        if old.as_deref() == Some(content.as_str()) {
            report::line(&format!("unchanged {}", escape_path(&path)));
            continue;
        }
        write_file_at(&env_dir, &name, &content, file_owner, mode).map_err(fail(&path))?;
        report::line(&format!("wrote {}", escape_path(&path)));
    }
    let secrets = app.env_dir.join(env::SECRETS_FILE);
    if read_at(&env_dir, env::SECRETS_FILE).map_err(fail(&secrets))?.is_none() {
        let empty = env::render_secrets(&Default::default());
        write_file_at(&env_dir, env::SECRETS_FILE, &empty, secret, 0o640)
            .map_err(fail(&secrets))?;
        report::line(&format!("wrote {} (empty: `pushdeploy env set`)", escape_path(&secrets)));
    }
    remove_old_env_files(&app_dir, &app_path, &app.env_dir);
    // The app's user owns shared/; the target owner's group (setgid, so entries made in it
    // keep that group) lets the git user's deploys check that each `shared` entry exists. The
    // git user deploys the code the app runs, so reading its data is no new power.
    let shared = Owner { uid: app_user.uid, gid: owner.gid };
    ensure_dir(&root, &target.join("shared"), 0o2750, shared, false)?;
    Ok(())
}

/// Removes the environment files earlier versions kept in the target's state directory (the
/// `[app.env]` values among them), which the unit no longer reads.
fn remove_old_env_files(app_dir: &OwnedFd, app_path: &Path, env_dir: &Path) {
    for name in [ENV_FILE.to_owned(), env::slot_file(Slot::Blue), env::slot_file(Slot::Green)] {
        if unlinkat(app_dir, name.as_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
            report::line(&format!(
                "removed {} (the unit reads its environment from {} now)",
                escape_path(&app_path.join(&name)),
                escape_path(env_dir)
            ));
        }
    }
}

/// How [`walk_env_dir`] treats a missing directory of `[app] env_dir`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Makes it, root's, mode 0755 (init, as root).
    Create,
    /// Stops there: what exists is fine, the rest will be made (init, before it writes).
    Stop,
    /// Fails (a deploy, `pushdeploy env`).
    Fail,
}

/// Checks `[app] env_dir` before init writes anything: each of its directories that exists
/// must pass [`open_env_dir`]'s rules.
pub fn check_env_dir(app: &App) -> Result<(), Error> {
    walk_env_dir(app, Missing::Stop).map(drop)
}

/// Opens `[app] env_dir` (see [`walk_env_dir`]); a missing directory fails.
pub fn open_env_dir(app: &App) -> Result<OwnedFd, Error> {
    let dir = walk_env_dir(app, Missing::Fail)?;
    dir.ok_or_else(|| Error::new(Kind::Internal, "env_dir: a missing directory did not fail"))
}

/// Opens `[app] env_dir` from `/`, one component at a time without following a symlink: each
/// must be a directory of root's that nobody else may write (a sticky one such as /tmp, whose
/// other users cannot rename root's entries, is allowed above the last). Whoever could write
/// one of them could point the unit's environment files, which systemd reads as root, at any
/// file. `None` when `missing` is [`Missing::Stop`] and a directory does not exist yet.
fn walk_env_dir(app: &App, missing: Missing) -> Result<Option<OwnedFd>, Error> {
    let path = &app.env_dir;
    let shown = escape_path(path);
    let fail = |errno: Errno| {
        let hint = if missing == Missing::Fail {
            "run `pushdeploy init --app` again (as root) to create the app's files"
        } else {
            "run `pushdeploy init --app` as root, or choose another [app] env_dir"
        };
        Error::new(Kind::Io, format!("cannot open {shown}: {errno}")).hint(hint)
    };
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let mut dir = nix::fcntl::open("/", flags, Mode::empty()).map_err(fail)?;
    let names: Vec<_> = path.components().skip(1).collect();
    for (index, name) in names.iter().enumerate() {
        let here: PathBuf = path.iter().take(index + 2).collect();
        let created = missing == Missing::Create
            && match mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(errno) => return Err(fail(errno)),
            };
        let next = match openat(&dir, name.as_os_str(), flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if missing == Missing::Stop => return Ok(None),
            Err(errno) => return Err(fail(errno)),
        };
        if created {
            fchmod(&next, Mode::from_bits_truncate(0o755)).map_err(fail)?;
            report::line(&format!("created {}", escape_path(&here)));
        }
        let stat = fstat(&next).map_err(fail)?;
        let sticky = stat.st_mode & 0o1000 != 0 && index + 1 < names.len();
        if stat.st_uid != 0 || (stat.st_mode & 0o022 != 0 && !sticky) {
            let here = escape_path(&here);
            return Err(Error::user(
                format!(
                    "{here} (uid {}, mode {:o}) may be changed by others than root, who could then choose what systemd reads as root for {shown}",
                    stat.st_uid,
                    stat.st_mode & 0o7777
                ),
                format!(
                    "`chown root: {here} && chmod go-w {here}`, or choose another [app] env_dir"
                ),
            ));
        }
        dir = next;
    }
    Ok(Some(dir))
}

/// Rewrites `slot`'s environment file for a deploy of `commit`, in place (the directory is
/// root's): opened without following a symlink, it must be a file of this user's, which init
/// gave the target's owner. Its instance is stopped while it is written.
pub fn write_slot_env(app: &App, slot: Slot, commit: &str) -> Result<(), Error> {
    rewrite_env(app, env::slot_file(slot), &env::render_slot(app, slot, commit))
}

/// Rewrites `current.env` (restart, reload) for the one instance running `commit` in `slot`,
/// as [`write_slot_env`] does a slot's; systemd reads it at the unit's next start or reload.
pub fn write_current_env(app: &App, slot: Slot, commit: &str) -> Result<(), Error> {
    rewrite_env(app, env::CURRENT_ENV.to_owned(), &env::render_slot(app, slot, commit))
}

/// Rewrites the file `name` of `[app] env_dir` with `content`, in place (see
/// [`write_slot_env`]).
fn rewrite_env(app: &App, name: String, content: &str) -> Result<(), Error> {
    let path = app.env_dir.join(&name);
    let fail = |errno: Errno| {
        Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(&path)))
            .hint("run `pushdeploy init --app` again (as root) to recreate the app's files")
    };
    let dir = open_env_dir(app)?;
    let flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(&dir, name.as_str(), flags, Mode::empty()).map_err(fail)?;
    let stat = fstat(&fd).map_err(fail)?;
    let is_file = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode)
        .contains(nix::sys::stat::SFlag::S_IFREG);
    if !is_file || stat.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(fail(Errno::EPERM));
    }
    let mut file = File::from(fd);
    let io = |err: std::io::Error| fail(Errno::from_raw(err.raw_os_error().unwrap_or(0)));
    file.write_all(content.as_bytes()).map_err(io)?;
    file.set_len(content.len() as u64).map_err(io)?;
    Ok(())
}

/// Writes the secrets file (`pushdeploy env`, as root): root's, readable by the app's group.
pub fn write_secrets(app: &App, text: &str, app_gid: u32) -> Result<(), Error> {
    let path = app.env_dir.join(env::SECRETS_FILE);
    let dir = open_env_dir(app)?;
    write_file_at(&dir, env::SECRETS_FILE, text, Owner { uid: 0, gid: app_gid }, 0o640).map_err(
        |errno| Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(&path))),
    )
}

/// Reads the secrets file; `None` when there is none yet.
pub fn read_secrets(app: &App) -> Result<Option<String>, Error> {
    let path = app.env_dir.join(env::SECRETS_FILE);
    let dir = open_env_dir(app)?;
    read_at(&dir, env::SECRETS_FILE).map_err(|errno| {
        let hint = if errno == Errno::EACCES {
            "only root and the app's group may read the app's secrets: run it with sudo"
        } else {
            "run `pushdeploy init --app` again (as root) to recreate the app's files"
        };
        Error::new(Kind::Io, format!("cannot read {}: {errno}", escape_path(&path))).hint(hint)
    })
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

/// Writes `name` in `dir` by a temporary name and a rename, so no reader sees half a file,
/// with `mode` (set whatever the umask), given to `owner`.
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
