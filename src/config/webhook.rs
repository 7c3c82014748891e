//! The `[webhook]` table: deploys triggered by a push to a hosted repository (GitHub, Gitea,
//! GitLab), which `pushdeploy serve` receives.

use std::path::PathBuf;
use std::time::Duration;

use super::Error;
use super::keys::duration;
use super::raw::Source;
pub use super::tables_raw::Provider;
use super::tables_raw::RawWebhook;

/// How long `git fetch` from the hosted repository may take when the file does not say.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// The shortest secret accepted: a guessable secret makes the signature worthless.
pub const MIN_SECRET_LEN: usize = 16;

/// Where the shared secret is.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `secret_file = "/etc/pushdeploy/site.secret"`: read by `serve` when it starts.
    File(PathBuf),
    /// `secret = "..."`: in the file itself.
    Inline(String),
}

impl std::fmt::Debug for Secret {
    /// Names the file, never the secret itself: a configuration may be traced.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

/// The validated `[webhook]` table.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub provider: Provider,
    /// The hosted repository the pushed commit is fetched from (any URL `git fetch` takes).
    pub url: String,
    pub secret: Secret,
    pub fetch_timeout: Duration,
}

/// Returns the `[webhook]` table, if there is one.
pub fn webhook(source: Source, raw: Option<RawWebhook>) -> Result<Option<Webhook>, Error> {
    let Some(raw) = raw else { return Ok(None) };
    let url = raw.url.get_ref();
    // git would take a URL starting with `-` for an option; one with a newline could not be
    // printed on one line. Neither is a repository anyone means.
    if url.is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(source.invalid_at(
            &raw.url,
            format!("`webhook.url`: {url:?} is not a repository URL git can fetch from"),
        ));
    }
    let secret = match (raw.secret, raw.secret_file) {
        (Some(secret), None) => {
            if secret.get_ref().len() < MIN_SECRET_LEN {
                return Err(source.invalid_at(
                    &secret,
                    format!(
                        "`webhook.secret` is shorter than {MIN_SECRET_LEN} characters; use a random one, e.g. from `openssl rand -hex 32`"
                    ),
                ));
            }
            Secret::Inline(secret.into_inner())
        }
        (None, Some(file)) => {
            if !file.get_ref().is_absolute() {
                let shown = file.get_ref().display();
                return Err(source.invalid_at(
                    &file,
                    format!("`webhook.secret_file`: {shown} is not an absolute path"),
                ));
            }
            Secret::File(file.into_inner())
        }
        (Some(secret), Some(_)) => {
            return Err(source
                .invalid_at(&secret, "`webhook`: set `secret_file` or `secret`, not both".into()));
        }
        (None, None) => {
            return Err(source.invalid_at(
                &raw.url,
                "`webhook`: set `secret_file` (a file only the server's user can read) or `secret`"
                    .into(),
            ));
        }
    };
    let fetch_timeout = match raw.fetch_timeout {
        Some(timeout) => duration(source, &timeout, "webhook.fetch_timeout", false)?,
        None => DEFAULT_FETCH_TIMEOUT,
    };
    Ok(Some(Webhook { provider: raw.provider, url: raw.url.into_inner(), secret, fetch_timeout }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Provider, Secret};
    use crate::config::parse;
    use crate::config::tests::parse_err;

    #[test]
    fn webhook_reads_provider_url_and_secret_file() {
        let text = "target = \"/s\"\n[webhook]\nprovider = \"gitea\"\nurl = \"https://git.example.com/a/b.git\"\nsecret_file = \"/etc/pushdeploy/b.secret\"\n";
        let webhook = parse(Path::new("p"), text).unwrap().webhook.unwrap();
        assert_eq!(webhook.provider, Provider::Gitea);
        assert_eq!(webhook.secret, Secret::File("/etc/pushdeploy/b.secret".into()));
    }

    #[test]
    fn webhook_refuses_weak_or_missing_secrets_and_option_urls() {
        let base = "target = \"/s\"\n[webhook]\nprovider = \"github\"\n";
        let short = parse_err(&format!("{base}url = \"/r.git\"\nsecret = \"abc\"\n"));
        assert!(short.contains("line 5") && short.contains("shorter than 16"), "{short}");
        let none = parse_err(&format!("{base}url = \"/r.git\"\n"));
        assert!(none.contains("set `secret_file`"), "{none}");
        let option = parse_err(&format!("{base}url = \"--upload-pack=x\"\nsecret_file = \"/s\"\n"));
        assert!(option.contains("line 4") && option.contains("not a repository URL"), "{option}");
        let provider = parse_err("target = \"/s\"\n[webhook]\nprovider = \"bitbucket\"\n");
        assert!(provider.contains("`gitlab`"), "{provider}");
    }
}
