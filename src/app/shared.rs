//! `[app] shared`: paths of every release that are links to `TARGET/shared/PATH`, which the
//! app's user owns and which outlive releases (SQLite files, uploads, `.env.local`).
//!
//! Once the release is built, whatever it has at each such path is removed and replaced by a
//! link to the absolute `TARGET/shared/PATH`. These links are the only ones allowed to lead
//! out of a release ([`links`] is what `release::check::served` lets through): a pushed or
//! built symlink into `shared/` is still refused. Every entry of `shared/` is checked before
//! the release is touched, so a missing one fails the deploy with nothing changed.
//!
//! The release is the git user's and nothing runs in it any more (the build has ended), so
//! `lstat` of each component suffices there. `shared/` is the app user's, who may change it
//! at any time: a deploy checks what it can tell (each entry is there, as a file or a
//! directory, not behind a symlink out of `shared/`), then only links to it, never writes it.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Failed;
use crate::config::App;
use crate::release::check::{self, Escape, OnDisk};
use crate::report::{self, escape_path};
use crate::target_dir::slots;

/// What the pusher is told after a failure to change the release.
const RETRY: &str = "fix the problem and push again, or run `pushdeploy deploy`";

/// Returns `TARGET/shared`.
pub fn shared_dir(target: &Path) -> PathBuf {
    target.join("shared")
}

/// Returns the links [`link`] makes in a release: each `shared` path (relative to the
/// release) with its target, the absolute `TARGET/shared/PATH`.
pub fn links(app: &App, target: &Path) -> Vec<(PathBuf, PathBuf)> {
    let shared = shared_dir(target);
    app.shared.iter().map(|path| (path.clone(), shared.join(path))).collect()
}

/// Replaces each `shared` path of the release in `dir` by its link into `TARGET/shared/`,
/// creating the directories above it that the release lacks, and says what it replaced.
pub fn link(app: &App, target: &Path, dir: &Path) -> Result<(), Failed> {
    let shared = shared_dir(target);
    check_root(&shared)?;
    for path in &app.shared {
        check_entry(app, &shared, path, dir)?;
    }
    for (path, to) in links(app, target) {
        let replaced = make_room(dir, &path)?;
        std::os::unix::fs::symlink(&to, dir.join(&path)).map_err(|err| {
            let (path, to) = (escape_path(&path), escape_path(&to));
            Failed::new(format!("shared: cannot link {path} to {to}: {err}"), RETRY)
        })?;
        let what = match replaced {
            Some(Replaced::Dir) => format!("replaced {}/ of the commit with", escape_path(&path)),
            Some(Replaced::Other) => format!("replaced {} of the commit with", escape_path(&path)),
            None => format!("{} is", escape_path(&path)),
        };
        report::line(&format!("shared: {what} a link to {}", escape_path(&to)));
    }
    Ok(())
}

/// Checks that `TARGET/shared` is a real directory.
fn check_root(shared: &Path) -> Result<(), Failed> {
    match fs::symlink_metadata(shared) {
        Ok(meta) if meta.is_dir() => Ok(()),
        found => {
            let what = match found {
                Ok(_) => "is not a directory".to_owned(),
                Err(err) => format!("cannot be used: {err}"),
            };
            Err(Failed::new(
                format!("shared: {} {what}", escape_path(shared)),
                "as root, run `pushdeploy init --app` again: it creates shared/ for the app's user",
            ))
        }
    }
}

/// Checks that `TARGET/shared/PATH` is a file or a directory, reached without leaving
/// `shared/`; the hint of a missing one says how to create it, as what the release has there.
fn check_entry(app: &App, shared: &Path, path: &Path, dir: &Path) -> Result<(), Failed> {
    let full = shared.join(path);
    let shown = escape_path(&full);
    let tree = OnDisk { root: shared };
    let problem =
        match check::resolve_inside(&tree, Vec::new(), path.as_os_str().as_bytes(), &mut 0) {
            Err(Escape::Absolute | Escape::OutOfRelease) => {
                "leads out of it through a symlink; shared/ may hold only links that stay inside it"
                    .to_owned()
            }
            Err(Escape::Loop) => "is part of a symlink loop".to_owned(),
            Err(Escape::Unreadable { path, source }) => {
                format!("cannot be checked past {}: {source}", escape_path(&path))
            }
            Ok(resolved) => {
                match fs::symlink_metadata(shared.join(resolved.iter().collect::<PathBuf>())) {
                    Ok(meta) if meta.is_dir() || meta.is_file() => return Ok(()),
                    Ok(_) => "is neither a file nor a directory".to_owned(),
                    Err(err)
                        if err.kind() == io::ErrorKind::NotFound
                            || err.raw_os_error() == Some(nix::libc::ENOTDIR) =>
                    {
                        let file =
                            fs::symlink_metadata(dir.join(path)).is_ok_and(|meta| meta.is_file());
                        let hint = create_hint(app, &full, file);
                        return Err(Failed::new(format!("shared: {shown} does not exist"), hint));
                    }
                    Err(err) => format!("cannot be checked: {err}"),
                }
            }
        };
    Err(Failed::new(
        format!("shared: {shown} {problem}"),
        format!("fix it as the app's user ({}), then push again", app.user),
    ))
}

/// Returns how to create a missing shared entry: a file when the release has a file there,
/// else a directory.
fn create_hint(app: &App, full: &Path, file: bool) -> String {
    let user = &app.user;
    let make = match (file, full.parent()) {
        (true, Some(parent)) => format!(
            "sudo -u {user} mkdir -p {} && sudo -u {user} touch {}",
            sh_word(parent),
            sh_word(full)
        ),
        _ => format!("sudo -u {user} mkdir -p {}", sh_word(full)),
    };
    format!("create it as the app's user: `{make}`, then push again")
}

/// Quotes a path for a shell command in a hint, when it needs quoting.
fn sh_word(path: &Path) -> String {
    let text = escape_path(path);
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@:,".contains(c)) {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// What a release had at a shared path before its link replaced it.
enum Replaced {
    Dir,
    Other,
}

/// Makes `path` of the release in `dir` free for a link: the directories above it real
/// directories (created when missing), and whatever is at it removed.
fn make_room(dir: &Path, path: &Path) -> Result<Option<Replaced>, Failed> {
    let io_failed = |at: &Path, err: &dyn std::fmt::Display| {
        Failed::new(format!("shared: cannot replace {}: {err}", escape_path(at)), RETRY)
    };
    let mut above = PathBuf::new();
    for component in path.parent().into_iter().flat_map(Path::components) {
        above.push(component);
        let full = dir.join(&above);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() { "a symlink" } else { "a file" };
                return Err(Failed::new(
                    format!(
                        "shared: cannot link {}: {} in the release is {what}, not a directory",
                        escape_path(path),
                        escape_path(&above)
                    ),
                    format!(
                        "make {} a directory in the repository, or share it instead",
                        escape_path(&above)
                    ),
                ));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&full).map_err(|err| io_failed(&above, &err))?;
            }
            Err(err) => return Err(io_failed(&above, &err)),
        }
    }
    let full = dir.join(path);
    match fs::symlink_metadata(&full) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_failed(path, &err)),
        // `remove_path` removes a tree without following a symlink in it.
        Ok(meta) if meta.is_dir() => slots::remove_path(&full)
            .map(|()| Some(Replaced::Dir))
            .map_err(|err| io_failed(path, &err)),
        Ok(_) => fs::remove_file(&full)
            .map(|()| Some(Replaced::Other))
            .map_err(|err| io_failed(path, &err)),
    }
}
