//! The `[previews]` table: branches deployed each to its own preview, beside production.

use toml::Spanned;

use super::Error;
use super::raw::Source;
use super::tables_raw::RawPreviews;

/// How many previews exist at most when the file does not say.
pub const DEFAULT_MAX_PREVIEWS: usize = 10;

/// The validated `[previews]` table.
#[derive(Debug, Clone)]
pub struct Previews {
    /// Glob patterns of the branches that get a preview (`*` within a path component, `**`
    /// across them, `?` one character).
    pub branches: Vec<String>,
    /// The preview's address, with `{slug}` where the preview's name goes.
    pub url: Option<String>,
    /// How many previews may exist; a new one beyond it removes the oldest.
    pub max: usize,
}

impl Previews {
    /// Tells whether `branch` (short name) gets a preview.
    pub fn matches(&self, branch: &str) -> bool {
        self.branches.iter().any(|pattern| glob_matches(pattern.as_bytes(), branch.as_bytes()))
    }

    /// Returns the address of the preview named `slug`, when `url` is set.
    pub fn url_of(&self, slug: &str) -> Option<String> {
        self.url.as_ref().map(|url| url.replace("{slug}", slug))
    }
}

/// Returns the `[previews]` table, if there is one. An app's previews are not supported yet.
pub fn previews(
    source: Source,
    raw: Option<RawPreviews>,
    has_app: bool,
) -> Result<Option<Previews>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    if has_app {
        return Err(source.invalid_at(
            &raw.branches,
            "`[previews]` is for sites; previews of an app (an instance per preview) are not supported yet".into(),
        ));
    }
    if raw.branches.get_ref().is_empty() {
        return Err(source.invalid_at(
            &raw.branches,
            "`previews.branches` is empty; name the branches that get a preview, e.g. [\"feature/*\"]".into(),
        ));
    }
    let mut branches = Vec::new();
    for pattern in raw.branches.into_inner() {
        let text = pattern.get_ref();
        let plain = text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'*' | b'?')
        });
        if text.is_empty() || !plain {
            return Err(source.invalid_at(
                &pattern,
                format!(
                    "`previews.branches`: {text:?} is not a branch pattern (letters, digits, `._-/` and the wildcards `*`, `?`)"
                ),
            ));
        }
        branches.push(pattern.into_inner());
    }
    let url = match raw.url {
        Some(url) if !url.get_ref().contains("{slug}") => {
            return Err(source.invalid_at(
                &url,
                format!(
                    "`previews.url`: {:?} has no `{{slug}}`, so every preview would have the same address",
                    url.get_ref()
                ),
            ));
        }
        url => url.map(Spanned::into_inner),
    };
    let max = match raw.max {
        Some(max) => match usize::try_from(*max.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(source.invalid_at(
                    &max,
                    format!(
                        "`previews.max`: {} is not a number of previews (1 or more)",
                        max.get_ref()
                    ),
                ));
            }
        },
        None => DEFAULT_MAX_PREVIEWS,
    };
    Ok(Some(Previews { branches, url, max }))
}

/// Matches `name` against a glob: `*` is any run of characters but `/`, `**` any run at all,
/// `?` one character but `/`.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=name.len()).any(|skip| glob_matches(rest, &name[skip..])),
        [b'*', rest @ ..] => {
            let run = name.iter().position(|&b| b == b'/').unwrap_or(name.len());
            (0..=run).any(|skip| glob_matches(rest, &name[skip..]))
        }
        [b'?', rest @ ..] => {
            matches!(name, [first, tail @ ..] if *first != b'/' && glob_matches(rest, tail))
        }
        [literal, rest @ ..] => {
            matches!(name, [first, tail @ ..] if first == literal && glob_matches(rest, tail))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::glob_matches;
    use crate::config::parse;
    use crate::config::tests::parse_err;

    #[test]
    fn globs_match_within_and_across_components() {
        let m = |pattern: &str, name: &str| glob_matches(pattern.as_bytes(), name.as_bytes());
        assert!(m("feature/*", "feature/x"));
        assert!(!m("feature/*", "feature/x/y"));
        assert!(m("feature/**", "feature/x/y"));
        assert!(!m("feature/*", "feature"));
        assert!(m("fix-?", "fix-1") && !m("fix-?", "fix-12"));
        assert!(m("*", "main") && !m("*", "a/b"));
    }

    #[test]
    fn previews_read_patterns_url_and_max() {
        let text = "target = \"/s\"\n[previews]\nbranches = [\"feature/*\"]\nurl = \"https://{slug}.preview.example.com/\"\nmax = 3\n";
        let previews = parse(Path::new("p"), text).unwrap().previews.unwrap();
        assert!(previews.matches("feature/login") && !previews.matches("main"));
        assert_eq!(previews.max, 3);
        assert_eq!(previews.url_of("a").as_deref(), Some("https://a.preview.example.com/"));
        let no_slug =
            parse_err("target = \"/s\"\n[previews]\nbranches = [\"f/*\"]\nurl = \"https://x/\"\n");
        assert!(no_slug.contains("line 4") && no_slug.contains("{slug}"), "{no_slug}");
        let shell = parse_err("target = \"/s\"\n[previews]\nbranches = [\"$(x)\"]\n");
        assert!(shell.contains("not a branch pattern"), "{shell}");
        let zero = parse_err("target = \"/s\"\n[previews]\nbranches = [\"f/*\"]\nmax = 0\n");
        assert!(zero.contains("`previews.max`"), "{zero}");
    }
}
