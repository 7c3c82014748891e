//! `.gitmodules` as git reads it, and the URLs it names: parsed by `git config` itself (so
//! quoting, continuation lines and case rules are git's), relative URLs resolved the way git
//! resolves them, and URLs that would make git run something refused.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One `[submodule "NAME"]` section that has both a `path` and a `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Where its gitlink is, relative to the tree that holds `.gitmodules`.
    pub path: PathBuf,
    pub url: String,
}

/// Parses the bytes of a `.gitmodules` file with `git config --file - --list`.
///
/// `--no-includes`: an `[include] path = /etc/…` in a pushed file must not make pushdeploy
/// read the server's files (git itself never follows includes in `.gitmodules`; `--file -`
/// alone would). The environment's `GIT_*` variables are dropped so only these bytes count.
pub fn parse(content: &[u8]) -> Result<Vec<Module>, String> {
    let mut command = Command::new("git");
    command.args(["config", "--no-includes", "--file", "-", "--null", "--list"]);
    let mut child = without_git_env(&mut command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `git config`: {err}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means git exited early; its status and stderr say why.
        let _ = stdin.write_all(content);
    }
    let output = child.wait_with_output().map_err(|err| format!("`git config` failed: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().next().unwrap_or("it is not in git's config syntax");
        return Err(reason.trim_start_matches("fatal: ").to_owned());
    }
    Ok(modules(&output.stdout))
}

/// Returns the modules of `git config --null --list` output (`key\nvalue\0` records).
fn modules(listing: &[u8]) -> Vec<Module> {
    let mut paths: Vec<(String, Vec<u8>)> = Vec::new();
    let mut urls: Vec<(String, String)> = Vec::new();
    for record in listing.split(|&b| b == 0).filter(|record| !record.is_empty()) {
        let (key, value) = match record.iter().position(|&b| b == b'\n') {
            Some(at) => (&record[..at], &record[at + 1..]),
            None => (record, &b""[..]),
        };
        let Ok(key) = std::str::from_utf8(key) else { continue };
        // The section and the variable name are lower-cased by git; the name in between is not.
        let Some(rest) = key.strip_prefix("submodule.") else { continue };
        let Some((name, variable)) = rest.rsplit_once('.') else { continue };
        match variable {
            "path" => paths.push((name.to_owned(), value.to_vec())),
            "url" => urls.push((name.to_owned(), String::from_utf8_lossy(value).into_owned())),
            _ => {}
        }
    }
    // As git does, the last value of a key wins.
    let mut modules: Vec<Module> = Vec::new();
    for (name, path) in paths.into_iter().rev() {
        if modules.iter().any(|module| module.name == name) {
            continue;
        }
        let Some((_, url)) = urls.iter().rev().find(|(url_name, _)| *url_name == name) else {
            continue;
        };
        let trimmed = path.strip_suffix(b"/").unwrap_or(&path).to_vec();
        let path = PathBuf::from(OsString::from_vec(trimmed));
        modules.push(Module { name, path, url: url.clone() });
    }
    modules.reverse();
    modules
}

/// Removes every `GIT_*` variable from a git command's environment (in a hook, `GIT_DIR` and
/// the quarantine's object directories point at the site's repository) and makes it fail
/// instead of asking for credentials.
pub fn without_git_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_none_or(|key| key.starts_with("GIT_")) {
            command.env_remove(&key);
        }
    }
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        // As `git submodule` does: only the well-known transports, never `ext::`.
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .stdin(Stdio::null())
}

/// Refuses a URL that git would read as an option, or whose transport runs a command.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let lower = url.to_ascii_lowercase();
    if url.is_empty() {
        Err("it is empty")
    } else if url.starts_with('-') {
        Err("it starts with `-`, so git would read it as an option")
    } else if lower.starts_with("ext::") || lower.starts_with("fd::") {
        Err("the `ext::` and `fd::` transports run commands or use file descriptors")
    } else if url.chars().any(char::is_control) {
        Err("it holds a control character")
    } else {
        Ok(())
    }
}

/// Resolves a submodule's URL against the URL (or path) of the repository whose `.gitmodules`
/// names it, as git does: `./x` and `../x` are relative, anything else is used as written.
pub fn resolve_url(base: &str, url: &str) -> Result<String, &'static str> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_owned());
    }
    let mut base = base.trim_end_matches('/').to_owned();
    let mut rest = url;
    let mut colon = false;
    loop {
        if let Some(after) = rest.strip_prefix("../") {
            rest = after;
            if let Some(at) = base.rfind('/') {
                base.truncate(at);
            } else if let Some(at) = base.rfind(':') {
                // `host:path` (scp-like): climbing past the path keeps the host.
                base.truncate(at);
                colon = true;
            } else {
                return Err("it climbs above the repository's own location");
            }
        } else if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else {
            break;
        }
    }
    let rest = rest.trim_end_matches('/');
    Ok(format!("{base}{}{rest}", if colon { ":" } else { "/" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_as_git_resolves_them() {
        assert_eq!(resolve_url("/srv/git/site.git", "../theme.git").unwrap(), "/srv/git/theme.git");
        assert_eq!(
            resolve_url("/srv/git/site.git/", "./sub.git").unwrap(),
            "/srv/git/site.git/sub.git"
        );
        assert_eq!(
            resolve_url("https://example.com/a/site.git", "../../b/t.git").unwrap(),
            "https://example.com/b/t.git"
        );
        assert_eq!(resolve_url("git@host:site.git", "../t.git").unwrap(), "git@host:t.git");
        assert_eq!(resolve_url("/x", "https://h/t.git").unwrap(), "https://h/t.git");
        assert!(resolve_url("site", "../../t.git").is_err());
    }

    #[test]
    fn urls_git_would_misread_are_refused() {
        assert!(check_url("-uhack").is_err());
        assert!(check_url("ext::sh -c touch% /tmp/x").is_err());
        assert!(check_url("EXT::sh").is_err());
        assert!(check_url("a\nb").is_err());
        assert!(check_url("https://github.com/theNewDynamic/gohugo-theme-ananke.git").is_ok());
    }

    #[test]
    fn parse_reads_sections_and_ignores_includes() {
        let text = b"[submodule \"themes/ananke\"]\n\tpath = themes/ananke/\n\turl = ../a.git\n\
            [submodule \"no-url\"]\n\tpath = x\n[include]\n\tpath = /etc/gitconfig\n";
        let modules = parse(text).unwrap();
        assert_eq!(
            modules,
            [Module {
                name: "themes/ananke".into(),
                path: "themes/ananke".into(),
                url: "../a.git".into()
            }]
        );
        assert!(parse(b"[submodule \"x\"\n").is_err());
    }
}
