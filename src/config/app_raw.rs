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

/// How a deploy makes the new release of an app live (`[app] strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Two instances, one per slot, each on its own port; the proxy switches between them.
    #[default]
    BlueGreen,
    /// One instance on one port, restarted on the new release; the proxy holds requests.
    Restart,
    /// `pushdeploy-NAME.socket` owns the public port; both slots' instances take it.
    Socket,
    /// One instance, reloaded in place by its own `ExecReload` (gunicorn's USR2).
    Reload,
}

impl Strategy {
    /// Returns the strategy as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Restart => "restart",
            Strategy::Socket => "socket",
            Strategy::Reload => "reload",
        }
    }

    /// Tells whether one stable unit, `pushdeploy-NAME.service`, runs the app (restart,
    /// reload) instead of one instance per slot.
    pub fn is_single(self) -> bool {
        matches!(self, Strategy::Restart | Strategy::Reload)
    }
}

/// The `[app]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub(super) name: Option<Spanned<String>>,
    pub(super) command: Spanned<String>,
    pub(super) strategy: Option<Spanned<String>>,
    pub(super) ports: Option<RawPorts>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) reload: Option<Spanned<String>>,
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
