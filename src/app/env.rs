//! The environment files the unit reads from `[app] env_dir`: `env` (the `[app.env]` table),
//! `secrets.env` (what `pushdeploy env set` keeps outside git) and one `SLOT.env` per slot
//! (`PORT`, `PUSHDEPLOY_SLOT`, `PUSHDEPLOY_COMMIT`), in systemd's `EnvironmentFile=` syntax,
//! with every value double-quoted and escaped so none is expanded.

use std::collections::BTreeMap;

use crate::config::App;
use crate::target_dir::layout::Slot;

/// The file name of the `[app.env]` file in the app's environment directory.
pub const ENV_FILE: &str = "env";
/// The file name of the secrets `pushdeploy env` edits, in the same directory.
pub const SECRETS_FILE: &str = "secrets.env";
/// The environment file of the one instance of `restart` and `reload`: the live release's
/// `PORT`, `PUSHDEPLOY_SLOT` and `PUSHDEPLOY_COMMIT`.
pub const CURRENT_ENV: &str = "current.env";

/// Returns the file name of a slot's environment file (`blue.env`).
pub fn slot_file(slot: Slot) -> String {
    format!("{}.env", slot.name())
}

/// Returns the text of the `[app.env]` file.
pub fn render_env(env: &BTreeMap<String, String>) -> String {
    render(
        "# Written by pushdeploy from [app.env] in pushdeploy.toml; change that, not this.\n",
        env,
    )
}

/// Returns `header` and a `KEY="value"` line for each variable.
fn render(header: &str, variables: &BTreeMap<String, String>) -> String {
    let mut text = String::from(header);
    for (key, value) in variables {
        text.push_str(&format!("{key}={}\n", quoted(value)));
    }
    text
}

/// Returns the text of the secrets file.
pub fn render_secrets(secrets: &BTreeMap<String, String>) -> String {
    render(
        "# The app's secrets, kept by `pushdeploy env set|unset` (run as root); not in git.\n",
        secrets,
    )
}

/// Reads back a file [`render_secrets`] wrote: each `KEY="value"` line, unescaped. Lines it
/// did not write (comments, a hand edit that is not quoted) are skipped; `Err` names one.
pub fn parse_secrets(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut secrets = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(key, value)| {
            let inner = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((key.to_owned(), unquoted(inner)?))
        });
        let Some((key, value)) = parsed else {
            return Err(format!("line {} is not KEY=\"value\"", number + 1));
        };
        secrets.insert(key, value);
    }
    Ok(secrets)
}

/// Undoes [`quoted`]'s escapes; `None` for a `\` that escapes nothing it would have.
fn unquoted(inner: &str) -> Option<String> {
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\' | '$' | '`') => value.push(escaped),
                _ => return None,
            },
            '"' => return None,
            c => value.push(c),
        }
    }
    Some(value)
}

/// Returns the text of `slot`'s environment file; `commit` is empty before a deploy started it.
pub fn render_slot(app: &App, slot: Slot, commit: &str) -> String {
    let port = match slot {
        Slot::Blue => app.ports.blue,
        Slot::Green => app.ports.green,
    };
    format!(
        "# Written by pushdeploy for the {slot} instance.\nPORT={port}\nPUSHDEPLOY_SLOT={slot}\nPUSHDEPLOY_COMMIT={}\n",
        quoted(commit)
    )
}

/// Returns the commit a slot's environment file names, so init rewriting the port keeps it.
pub fn commit_in(text: &str) -> String {
    let Some(value) = text.lines().find_map(|line| line.strip_prefix("PUSHDEPLOY_COMMIT=")) else {
        return String::new();
    };
    let value = value.trim_matches('"');
    // A commit id is hex; anything else is not one pushdeploy wrote, and is dropped.
    if value.chars().all(|c| c.is_ascii_hexdigit()) { value.to_owned() } else { String::new() }
}

/// Double-quotes a value with `"`, `\`, `$` and `` ` `` escaped, which systemd then reads as
/// the value itself (values are one line: `config::app` refuses control characters).
fn quoted(value: &str) -> String {
    let mut text = String::with_capacity(value.len() + 2);
    text.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            text.push('\\');
        }
        text.push(c);
    }
    text.push('"');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{commit_in, parse_secrets, render_env, render_secrets};

    #[test]
    fn secrets_are_read_back_as_written() {
        let secrets = BTreeMap::from([
            ("TOKEN".to_owned(), r#"a "b" $c \d `e` = f"#.to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]);
        assert_eq!(parse_secrets(&render_secrets(&secrets)), Ok(secrets));
        assert_eq!(parse_secrets("# x\nA=plain\n"), Err("line 2 is not KEY=\"value\"".into()));
    }

    #[test]
    fn values_are_quoted_and_escaped() {
        let env = BTreeMap::from([("A".to_owned(), r#"x "$HOME" \ `id`"#.to_owned())]);
        assert!(render_env(&env).ends_with("\nA=\"x \\\"\\$HOME\\\" \\\\ \\`id\\`\"\n"));
    }

    #[test]
    fn commit_is_read_back() {
        assert_eq!(commit_in("PORT=1\nPUSHDEPLOY_COMMIT=\"abc123\"\n"), "abc123");
        assert_eq!(commit_in("PUSHDEPLOY_COMMIT=\"\"\n"), "");
        assert_eq!(commit_in("PUSHDEPLOY_COMMIT=\"$(x)\"\n"), "");
    }
}
