//! The program a build command runs first, and the build's PATH: what `doctor` checks and
//! what a build that exits with status 127 (the shell's "command not found") is told.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Shell words that are not programs looked up in PATH: keywords and the builtins a build
/// command starts with (`cd site && hugo`, `test -f x || make`, `set -e; ...`).
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "[", "{", "(", "alias", "break", "case", "cd", "command", "continue", "echo",
    "eval", "exec", "exit", "export", "false", "for", "if", "printf", "pwd", "read", "readonly",
    "return", "set", "shift", "source", "test", "trap", "true", "type", "ulimit", "umask", "unset",
    "until", "wait", "while",
];

/// Returns the program a build command starts with, when it is one looked up in PATH: not a
/// shell keyword or builtin, not a path (`./build.sh` is in the release, not here yet), and
/// plain (a word with quotes or `$` means something only the shell can say).
pub fn first_program(command: &str) -> Option<&str> {
    let word = command
        .split_whitespace()
        // `NAME=value cmd` sets a variable for cmd.
        .find(|word| !word.split_once('=').is_some_and(|(name, _)| is_name(name)))?;
    let word = word.trim_end_matches([';', '&', '|']);
    let plain = word.chars().all(|c| c.is_ascii_alphanumeric() || "._+-@".contains(c));
    (plain && !word.is_empty() && !SHELL_WORDS.contains(&word)).then_some(word)
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Returns the PATH a build with this environment (pushdeploy's variables, then
/// `[build.env]`) runs with: the last PATH it sets, else pushdeploy's own.
pub fn build_path<'a>(env: impl DoubleEndedIterator<Item = (&'a str, &'a str)>) -> OsString {
    env.rev()
        .find(|(key, _)| *key == "PATH")
        .map(|(_, value)| OsString::from(value))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default()
}

/// Finds `program` as an executable file in one of PATH's directories, as the shell would.
pub fn find(program: &str, path: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_program() {
        assert_eq!(first_program("hugo --minify"), Some("hugo"));
        assert_eq!(first_program("NODE_ENV=production npm run build"), Some("npm"));
        assert_eq!(first_program("make; true"), Some("make"));
        assert_eq!(first_program("cd site && hugo"), None);
        assert_eq!(first_program("./build.sh"), None);
        assert_eq!(first_program("$HOME/bin/x"), None);
        assert_eq!(first_program("\"hugo\""), None);
        assert_eq!(first_program("  "), None);
    }

    #[test]
    fn uses_the_last_path_set() {
        let env = [("PATH", "/a"), ("X", "y"), ("PATH", "/b")];
        assert_eq!(build_path(env.into_iter()), OsString::from("/b"));
        let path = OsString::from("/nonexistent:/bin");
        assert!(find("sh", &path).is_some());
        assert_eq!(find("no-such-program-here", &path), None);
    }
}
