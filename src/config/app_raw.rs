//! The `[app]` table as the file spells it (serde types), and the choice of proxy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// Which reverse proxy sends traffic to the live instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Caddy,
    Nginx,
    Haproxy,
    /// No proxy: clients reach one slot's port directly.
    #[default]
    None,
}

impl ProxyKind {
    /// Returns the kind as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Caddy => "caddy",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::None => "none",
        }
    }
}

/// The `[app]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub(super) name: Option<Spanned<String>>,
    pub(super) command: Spanned<String>,
    pub(super) ports: RawPorts,
    pub(super) user: Spanned<String>,
    pub(super) allow_root: Option<bool>,
    pub(super) release: Option<Spanned<String>>,
    pub(super) release_timeout: Option<Spanned<String>>,
    pub(super) stop_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) shared: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, Spanned<String>>,
    pub(super) env_dir: Option<Spanned<PathBuf>>,
    pub(super) health: Option<RawHealth>,
    pub(super) proxy: Option<RawProxy>,
    pub(super) check: Option<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPorts {
    pub(super) blue: Spanned<i64>,
    pub(super) green: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) path: Option<Spanned<String>>,
    pub(super) deadline: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) kind: Option<ProxyKind>,
    pub(super) file: Option<Spanned<PathBuf>>,
    pub(super) config: Option<Spanned<PathBuf>>,
    pub(super) socket: Option<Spanned<PathBuf>>,
    pub(super) backend: Option<Spanned<String>>,
    pub(super) state_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) url: Spanned<String>,
}
