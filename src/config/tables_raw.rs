//! The tables that `[previews]`, `[webhook]`, `[logs]` and `[notify]` are as the file spells
//! them (serde types), apart from the modules that validate them, so that `raw` (which holds
//! them) and those modules do not import each other.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[previews]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreviews {
    pub(super) branches: Spanned<Vec<Spanned<String>>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) max: Option<Spanned<i64>>,
}

/// The hosting service that sends the deliveries, which decides how they are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`.
    Github,
    /// `X-Gitea-Signature: <HMAC-SHA256 of the body>` (or GitHub's header, which Gitea also sends).
    Gitea,
    /// `X-Gitlab-Token: <the secret itself>`.
    Gitlab,
}

impl Provider {
    /// Returns the provider's name, as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitea => "gitea",
            Provider::Gitlab => "gitlab",
        }
    }
}

/// `[webhook]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub(super) provider: Provider,
    pub(super) url: Spanned<String>,
    pub(super) secret: Option<Spanned<String>>,
    pub(super) secret_file: Option<Spanned<PathBuf>>,
    pub(super) fetch_timeout: Option<Spanned<String>>,
}

/// `[logs]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    pub keep: Option<Spanned<i64>>,
    pub max_size: Option<Spanned<String>>,
}

/// `[notify]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub command: Option<Spanned<String>>,
    pub webhook: Option<Spanned<String>>,
    pub on: Option<Vec<Spanned<String>>>,
    pub url: Option<String>,
    pub timeout: Option<Spanned<String>>,
}
