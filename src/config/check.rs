//! The rules a value must follow whatever file it came from: where a target may be, what a
//! link may be named, which paths lie inside a release, which umasks let others write. They
//! know the filesystem and pushdeploy's names, not TOML; `init` and the deploy use some too.

use std::path::{Component, Path, PathBuf};

use crate::report::escape_path;

/// Names under the target that pushdeploy owns, so the link may not take them.
const RESERVED_NAMES: [&str; 3] = ["blue", "green", ".pushdeploy"];

/// Tells whether a umask leaves others' write bit unmasked, so that every user of the machine
/// could change what is served.
pub fn lets_others_write(umask: u32) -> bool {
    umask & 0o002 == 0
}

/// Explains why `target` is a directory no deploy may write into, or accepts it.
///
/// A deploy creates `blue/`, `green/`, the link and `.pushdeploy/` in the target and moves
/// aside what it finds there under those names, so `/` or a home directory would be filled
/// with them, a target inside the repository would put releases among git's files, and a
/// repository under one of those names would be moved aside by the first deploy. A repository
/// elsewhere in the target is left alone, as is anything else already there. Paths are
/// compared as the kernel resolves them (symlinks, `..`), so a spelling cannot hide a trap.
pub fn target_location(target: &Path, repo: &Path, link: &str) -> Result<(), String> {
    let own_dir = "give the site a directory of its own, such as /srv/www/example.com";
    let shown = escape_path(target);
    let resolved = resolve(target);
    if resolved.parent().is_none() {
        return Err(format!("{shown} is the root directory; {own_dir}"));
    }
    if home_directories().any(|home| resolve(&home) == resolved) {
        return Err(format!("{shown} is the home directory of this user; {own_dir}"));
    }
    let repo = match std::path::absolute(repo) {
        Ok(repo) => resolve(&repo),
        Err(_) => return Ok(()),
    };
    if resolved == repo {
        return Err(format!("{shown} is the repository itself; {own_dir}"));
    }
    if resolved.starts_with(&repo) {
        return Err(format!("{shown} is inside the repository {}; {own_dir}", escape_path(&repo)));
    }
    if let Ok(inside) = repo.strip_prefix(&resolved)
        && let Some(Component::Normal(first)) = inside.components().next()
        && let Some(first) = first.to_str()
        && (RESERVED_NAMES.contains(&first)
            || first.starts_with(".pushdeploy")
            || first == link
            || first == format!(".{link}.pushdeploy-new"))
    {
        return Err(format!(
            "{shown} holds the repository {} at `{first}`, a name pushdeploy writes to; move the \
             repository elsewhere or choose another target",
            escape_path(&repo)
        ));
    }
    Ok(())
}

/// Returns this user's home directories: `$HOME` and the password database's, which differ
/// under `sudo -E` or a changed `HOME`, and either one would be a trap.
fn home_directories() -> impl Iterator<Item = PathBuf> {
    let homes = [
        std::env::var_os("HOME").map(PathBuf::from),
        nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|user| user.dir),
    ];
    homes.into_iter().flatten().filter(|home| home.is_absolute())
}

/// Returns `path` as the kernel would resolve it: the longest part that exists canonicalized
/// (symlinks and `..` followed), the rest appended with `.` and `..` applied lexically.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            for component in rest.into_iter().rev() {
                match component {
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => resolved.push(name),
                    _ => {}
                }
            }
            return resolved;
        }
        let mut components = existing.components();
        match components.next_back() {
            Some(last @ (Component::Normal(_) | Component::ParentDir | Component::CurDir)) => {
                rest.push(last);
                existing = components.as_path();
            }
            _ => return path.to_owned(),
        }
    }
}

/// Explains why a link name is unusable, or accepts it.
pub fn check_link_name(link: &str) -> Result<(), &'static str> {
    if link.is_empty() || link == "." || link == ".." {
        Err("is not a file name")
    } else if link.contains('/') || link.contains('\0') {
        Err("must be a plain file name inside the target, without `/`")
    } else if RESERVED_NAMES.contains(&link) || link.starts_with(".pushdeploy") {
        Err("is a name pushdeploy uses for itself; choose another, such as \"public_html\"")
    } else {
        Ok(())
    }
}

/// Explains why a path inside the release (publish or cache) is unusable, or accepts it.
pub fn check_inside_release(publish: &Path) -> Result<(), &'static str> {
    let mut normal = 0;
    for component in publish.components() {
        match component {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            _ => return Err("must be a relative path inside the release, without `..`"),
        }
    }
    if normal == 0 { Err("names the release itself; leave `publish` out instead") } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;
    use crate::config::tests::parse_err;

    #[test]
    fn targets_that_are_root_or_the_repository_are_refused() {
        let own = "give the site a directory of its own, such as /srv/www/example.com";
        assert_eq!(
            parse_err("target = \"/\"\n"),
            format!("/r/pushdeploy.toml: line 1: `target`: / is the root directory; {own}")
        );
        assert!(parse_err("target = \"/usr/..\"\n").contains("/usr/.. is the root directory"));
        assert!(parse_err("target = \"/r\"\n").contains("/r is the repository itself"));
        assert!(parse_err("target = \"/r/www\"\n").contains("is inside the repository /r;"));
        let err = parse(Path::new("/srv/www/blue/pushdeploy.toml"), "target = \"/srv/www\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds the repository /srv/www/blue at `blue`"), "{err}");
        // Beside the slots, under a name of its own, the repository is left alone.
        parse(Path::new("/srv/www/site.git/pushdeploy.toml"), "target = \"/srv/www\"\n").unwrap();
    }
}
