//! What `init --app` writes for nginx, as root: the directory of the included file (root's,
//! 0755, made when missing), the two slot files in it (root's, 0644) and the included file
//! itself, a link to blue's (where the first deploy goes). Whoever can write that directory,
//! or the one holding it, could change what nginx reads as root: both must be root's and
//! writable by root only. Every step goes through directory handles opened with `O_NOFOLLOW`
//! (as in [`crate::app::state`]), so a symlink swapped in on the way is refused.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::readlinkat;
use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
use nix::unistd::symlinkat;

use super::{name_error, render, slot_file, upstream_name};
use crate::app::state::{self, Owner};
use crate::config::App;
use crate::error::{Error, Kind};
use crate::report::escape_path;
use crate::target_dir::Slot;

/// Who owns what init writes for nginx.
const ROOT: Owner = Owner { uid: 0, gid: 0 };

/// Writes the slot files (each one that differs) and, unless there is one, the link; returns
/// what it did and the lines that tell the operator what to add to nginx's configuration.
pub fn install(app: &App, link: &Path, config: &Path) -> Result<Vec<String>, Error> {
    let shown = escape_path(link);
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::user(
            format!("nginx reads {shown} as root, so it and the files it links to must be root's"),
            "run `pushdeploy init --app` as root",
        ));
    }
    let (Some(dir_path), Some(name)) = (link.parent(), link.file_name()) else {
        return Err(name_error(format!("[app.proxy] file {shown} is not a file's path")));
    };
    let above_path = dir_path.parent().unwrap_or(dir_path);
    let above = state::open_dir(None, above_path).map_err(io_error(above_path))?;
    check_root_only(&above, above_path)?;
    let mut lines = Vec::new();
    let dir = root_dir(&above, dir_path, &mut lines)?;
    for slot in [Slot::Blue, Slot::Green] {
        let file = slot_file(link, slot).map_err(name_error)?;
        let path = dir_path.join(&file);
        let content = render(app, slot);
        let old = state::read_at(&dir, &file).map_err(io_error(&path))?;
        if old.as_deref() == Some(content.as_str()) {
            lines.push(format!("unchanged {}", escape_path(&path)));
            continue;
        }
        state::write_file_at(&dir, &file, &content, ROOT, 0o644).map_err(io_error(&path))?;
        lines.push(format!("wrote {}", escape_path(&path)));
    }
    let blue = slot_file(link, Slot::Blue).map_err(name_error)?;
    let green = slot_file(link, Slot::Green).map_err(name_error)?;
    let refuse = |what: String| {
        Error::user(
            format!("{shown} {what}, not a link to {blue} or {green}"),
            format!("move {shown} away (pushdeploy switches a link there) and run init again"),
        )
    };
    match readlinkat(&dir, name) {
        Ok(target) if target == blue.as_str() || target == green.as_str() => {
            lines.push(format!("kept {shown} (links to {})", escape_path(Path::new(&target))));
        }
        Ok(target) => {
            return Err(refuse(format!("links to {}", escape_path(Path::new(&target)))));
        }
        Err(Errno::EINVAL) => return Err(refuse("is a file".to_owned())),
        Err(Errno::ENOENT) => {
            symlinkat(blue.as_str(), &dir, name).map_err(io_error(link))?;
            lines.push(format!("linked {shown} to {blue}"));
        }
        Err(errno) => return Err(io_error(link)(errno)),
    }
    lines.extend(operator_lines(app, link, config, [&blue, &green]));
    Ok(lines)
}

/// Opens the directory `path` in `above`, made (root's, 0755) when missing; an existing one
/// must be a real directory, root's and writable by root only.
fn root_dir(above: &OwnedFd, path: &Path, lines: &mut Vec<String>) -> Result<OwnedFd, Error> {
    let shown = escape_path(path);
    let name = path.file_name().unwrap_or_default();
    let created = match mkdirat(above, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(errno) => return Err(Error::new(Kind::Io, format!("cannot create {shown}: {errno}"))),
    };
    let dir = state::open_dir(Some(above), path).map_err(|errno| {
        Error::user(
            format!(
                "{shown} is not a directory ({errno}); pushdeploy does not follow a symlink there"
            ),
            format!("move {shown} away and run init again"),
        )
    })?;
    if created {
        // Whatever the umask: nginx's workers need not read it, but the operator does.
        fchmod(&dir, Mode::from_bits_truncate(0o755)).map_err(io_error(path))?;
        lines.push(format!("created {shown}"));
    }
    check_root_only(&dir, path)?;
    Ok(dir)
}

/// Refuses a directory that is not root's or that others may write.
fn check_root_only(dir: &OwnedFd, path: &Path) -> Result<(), Error> {
    let shown = escape_path(path);
    let stat = fstat(dir).map_err(io_error(path))?;
    if stat.st_uid == 0 && stat.st_mode & 0o022 == 0 {
        return Ok(());
    }
    Err(Error::user(
        format!(
            "{shown} (uid {}, mode {:o}) may be written by others than root, who could then change what nginx reads as root",
            stat.st_uid,
            stat.st_mode & 0o7777
        ),
        format!("`chown root: {shown} && chmod go-w {shown}`, or choose another [app.proxy] file"),
    ))
}

/// Returns the lines that tell the operator what nginx's configuration needs, and what the
/// deploys run as root.
fn operator_lines(app: &App, link: &Path, config: &Path, [blue, green]: [&str; 2]) -> [String; 2] {
    let upstream = upstream_name(app);
    let (shown, config) = (escape_path(link), escape_path(config));
    [
        format!(
            "nginx: add `include {};` to the http {{}} block of {config}, and to the app's location `proxy_pass http://{upstream};` and `add_header X-Pushdeploy-Slot ${upstream}_slot always;` (site-templates/apps/nginx.conf has the server block)",
            include_path(link)
        ),
        format!(
            "nginx: each deploy runs, as root, `ln -sfn {green} {shown}` (or {blue}), `nginx -t -c {config}` and `nginx -s reload -c {config}`"
        ),
    ]
}

/// Returns the link's path as an nginx word: quoted when it holds more than letters, digits
/// and `/._-` (the configuration refuses paths with quotes, `;` or control characters).
fn include_path(link: &Path) -> String {
    let text = escape_path(link);
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
        text
    } else {
        format!("\"{text}\"")
    }
}

/// Returns the error for a failed call on `path`.
fn io_error(path: &Path) -> impl Fn(Errno) -> Error + '_ {
    move |errno| {
        Error::new(Kind::Io, format!("cannot write {}: {errno}", escape_path(path)))
            .hint("check that it is a directory (not a symlink) root can write")
    }
}
