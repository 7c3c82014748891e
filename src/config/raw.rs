//! The file as written: serde types that mirror `pushdeploy.toml` key for key (with spans, so
//! an error can name its line), and the text they were read from.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Error, Mode, SubmodulePolicy, SymlinkPolicy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub branch: Option<Spanned<String>>,
    pub target: Spanned<PathBuf>,
    pub link: Option<Spanned<String>>,
    pub umask: Option<Spanned<String>>,
    pub world_writable: Option<bool>,
    pub symlinks: Option<SymlinkPolicy>,
    pub mode: Option<Mode>,
    pub submodules: Option<SubmodulePolicy>,
    pub build: Option<Build>,
    pub retire: Option<Retire>,
    pub app: Option<super::app_raw::RawApp>,
    pub webhook: Option<super::tables_raw::RawWebhook>,
    pub previews: Option<super::tables_raw::RawPreviews>,
    pub logs: Option<super::tables_raw::RawLogs>,
    pub notify: Option<super::tables_raw::RawNotify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retire {
    pub grace: Option<Spanned<String>>,
    pub keep_previous: Option<bool>,
    pub keep: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: Option<Spanned<String>>,
    pub publish: Option<Spanned<PathBuf>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub cache: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub git_history: Option<bool>,
    pub allow_no_index: Option<bool>,
}

/// The text of a configuration file and the path that names it in errors.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// Deserializes the text into [`File`], naming the line of the first error.
    pub fn file(self) -> Result<File, Error> {
        toml::from_str(self.text).map_err(|err| {
            // serde names an unknown key but not a mistyped one: quote the line so both are named.
            let quoted = err
                .span()
                .and_then(|span| {
                    self.text
                        .get(..span.start)
                        .map(|before| before.rfind('\n').map_or(0, |i| i + 1))
                })
                .and_then(|start| self.text[start..].lines().next())
                .map(|line| format!(" (in `{}`)", line.trim()))
                .unwrap_or_default();
            self.invalid(err.span(), format!("{}{quoted}", one_line(err.message())))
        })
    }

    /// Returns the error for a value at `span` (line 1 when there is none).
    pub fn invalid(self, span: Option<Range<usize>>, message: String) -> Error {
        Error::Invalid {
            path: self.path.to_owned(),
            line: span.map_or(1, |span| line_of(self.text, span.start)),
            message,
        }
    }

    /// Returns the error for `value`, naming its line.
    pub fn invalid_at<T>(self, value: &Spanned<T>, message: String) -> Error {
        self.invalid(Some(value.span()), message)
    }
}

/// Returns the 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Joins a multi-line message into one line: an error reaches the pusher as one `remote:` line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns `value` as a TOML string literal.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests::parse_err;
    use crate::config::{Mode, SubmodulePolicy, SymlinkPolicy, parse};

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse_err("target = \"/srv\"\n[build]\ncomand = \"make\"\n");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("comand"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse_err("target = \"/srv\"\nbranch = 3\n");
        assert_eq!(
            err,
            "/r/pushdeploy.toml: line 2: invalid type: integer `3`, expected a string (in `branch = 3`)"
        );
    }

    #[test]
    fn enums_name_their_choices() {
        let config =
            parse(Path::new("p"), "target = \"/s\"\nmode = \"pre-receive\"\nsymlinks = \"none\"\n")
                .unwrap();
        assert_eq!((config.mode, config.symlinks), (Mode::PreReceive, SymlinkPolicy::None));
        let err = parse_err("target = \"/s\"\nsymlinks = \"outside\"\n");
        assert!(
            err.contains("line 2") && err.contains("`inside`") && err.contains("`none`"),
            "{err}"
        );
    }

    #[test]
    fn submodules_default_to_fetch_and_may_be_skipped() {
        let fetch = parse(Path::new("p"), "target = \"/s\"\n").unwrap();
        assert_eq!(fetch.submodules, SubmodulePolicy::Fetch);
        let skip = parse(Path::new("p"), "target = \"/s\"\nsubmodules = \"skip\"\n").unwrap();
        assert_eq!(skip.submodules, SubmodulePolicy::Skip);
        let err = parse_err("target = \"/s\"\nsubmodules = \"clone\"\n");
        assert!(
            err.contains("line 2") && err.contains("`fetch`") && err.contains("`skip`"),
            "{err}"
        );
    }
}
