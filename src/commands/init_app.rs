//! `pushdeploy init --app`: its options, the `[app]` table they write, and the steps init
//! runs for an app (check the app user, render and verify the units, plan the git user's
//! sudoers drop-in, write the app's files).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;
use nix::unistd::User;

use crate::app::proxy;
use crate::app::state::{self, Owner};
use crate::app::sudoers;
use crate::app::unit::{self, Verified};
use crate::config::{self, App, Config, ProxyKind, Strategy, toml_string};
use crate::error::Error;
use crate::report::{self, escape_path};

/// The options of an app (all need --app).
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Set up an app: a systemd template unit pushdeploy-NAME@.service runs it in each slot,
    /// one instance per slot on its own port (run init as root to write the unit)
    #[arg(long, requires_all = ["app_command", "app_user", "ports"])]
    pub app: bool,
    /// The app's command, run by /bin/sh in the slot with PORT set
    /// (e.g. "gunicorn -b 127.0.0.1:$PORT app:app")
    #[arg(long, value_name = "CMD", requires = "app")]
    pub app_command: Option<String>,
    /// The user the app runs as: a user of its own, never root or the git user
    #[arg(long, value_name = "USER", requires = "app")]
    pub app_user: Option<String>,
    /// The ports of the blue and the green instance on 127.0.0.1; with --strategy restart or
    /// reload, the one port of the one instance
    #[arg(long, value_name = "BLUE,GREEN|PORT", requires = "app", value_parser = parse_ports)]
    pub ports: Option<PortPair>,
    /// How a deploy makes the new release live: two instances and a proxy switch
    /// (blue-green), one instance restarted while the proxy holds requests (restart), a port
    /// systemd owns that both slots' instances share (socket), or the app's own graceful
    /// reload (reload)
    #[arg(
        long,
        value_enum,
        value_name = "STRATEGY",
        default_value = "blue-green",
        requires = "app"
    )]
    pub strategy: Strategy,
    /// With --strategy socket: the address pushdeploy-NAME.socket listens on (e.g.
    /// 127.0.0.1:8000 or 0.0.0.0:80)
    #[arg(long, value_name = "ADDRESS", requires = "app")]
    pub listen: Option<String>,
    /// With --strategy reload: the command systemd runs for `systemctl reload` (ExecReload=)
    #[arg(long, value_name = "CMD", requires = "app")]
    pub app_reload: Option<String>,
    /// A command run once per deploy, as the app's user in the new slot before its instance
    /// starts, such as migrations (e.g. "python3 manage.py migrate"); init writes the unit
    /// pushdeploy-NAME-release@.service that runs it
    #[arg(long, value_name = "CMD", requires = "app")]
    pub app_release: Option<String>,
    /// How long the release command may run before systemd stops it and the deploy fails
    #[arg(long, value_name = "DURATION", requires = "app_release", default_value = "10min")]
    pub release_timeout: String,
    /// A path of each release that is replaced by a link to TARGET/shared/PATH, which the app
    /// may write and which outlives releases (SQLite files, uploads); repeat for several
    #[arg(long, value_name = "PATH", requires = "app")]
    pub shared: Vec<PathBuf>,
    /// The reverse proxy in front of the app
    #[arg(long, value_enum, value_name = "KIND", default_value = "none")]
    pub proxy: ProxyKind,
    /// The file pushdeploy drives in the proxy: Caddy's imported snippet, the link nginx
    /// includes [default: TARGET/.pushdeploy/proxy/upstream.caddy, /etc/nginx/pushdeploy/NAME.conf]
    #[arg(long, value_name = "FILE", requires = "app")]
    pub proxy_file: Option<PathBuf>,
    /// The proxy's configuration the deploys check and reload
    /// [default: /etc/caddy/Caddyfile, /etc/nginx/nginx.conf]
    #[arg(long, value_name = "FILE", requires = "app")]
    pub proxy_config: Option<PathBuf>,
    /// Where the unit file is written
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Where the unit's environment files go ([app.env], the secrets of `pushdeploy env`,
    /// each slot's PORT): root's, outside the target [default: /etc/pushdeploy/NAME]
    #[arg(long, value_name = "DIR", requires = "app")]
    pub env_dir: Option<PathBuf>,
    /// The unit's NAME in pushdeploy-NAME@.service [default: the target's last component,
    /// with what systemd does not allow replaced by `-`]
    #[arg(long, value_name = "NAME", requires = "app")]
    pub name: Option<String>,
    /// Where the sudoers drop-in pushdeploy-NAME is written, which lets the git user run the
    /// app's systemctl and journalctl command lines as root
    #[arg(long, value_name = "DIR", default_value = "/etc/sudoers.d")]
    pub sudoers_dir: PathBuf,
    /// The user the deploys run as, who owns the repository and the target
    /// [default: the target's owner]
    #[arg(long, value_name = "USER", requires = "app")]
    pub git_user: Option<String>,
}

/// `--ports BLUE,GREEN`, or `--ports PORT` (`green` is `None`).
#[derive(Debug, Clone, Copy)]
pub struct PortPair {
    blue: u16,
    green: Option<u16>,
}

fn parse_ports(text: &str) -> Result<PortPair, String> {
    let parsed = match text.split_once(',') {
        Some((blue, green)) => (|| {
            Some(PortPair {
                blue: blue.trim().parse().ok()?,
                green: Some(green.trim().parse().ok()?),
            })
        })(),
        None => text.trim().parse().ok().map(|blue| PortPair { blue, green: None }),
    };
    parsed.ok_or_else(|| format!("{text:?} is not two ports such as 8001,8002 (or one port)"))
}

/// Returns the `[app]` table the options describe (nothing without --app), with each default
/// written out so the file shows what the deploy will do.
pub fn config_text(args: &AppArgs, target: &Path) -> String {
    let (true, Some(command), Some(user), Some(ports)) =
        (args.app, &args.app_command, &args.app_user, args.ports)
    else {
        return String::new();
    };
    let name = args.name.clone().unwrap_or_else(|| config::default_unit_name(target));
    let release = match &args.app_release {
        Some(release) => format!(
            "release = {}\nrelease_timeout = {}\n",
            toml_string(release),
            toml_string(&args.release_timeout)
        ),
        None => String::new(),
    };
    let shared: Vec<String> =
        args.shared.iter().map(|path| toml_string(&path.to_string_lossy())).collect();
    let ports = match (args.strategy.is_single(), ports.green) {
        (true, _) => format!("port = {}\n", ports.blue),
        (false, Some(green)) => format!("ports = {{ blue = {}, green = {green} }}\n", ports.blue),
        // config::app says what is missing, with its line.
        (false, None) => format!("port = {}\n", ports.blue),
    };
    let mut strategy = String::new();
    if args.strategy != Strategy::BlueGreen {
        strategy = format!("strategy = {}\n", toml_string(args.strategy.name()));
    }
    if let Some(listen) = &args.listen {
        strategy.push_str(&format!("listen = {}\n", toml_string(listen)));
    }
    if let Some(reload) = &args.app_reload {
        strategy.push_str(&format!("reload = {}\n", toml_string(reload)));
    }
    let mut proxy = format!("kind = {}\n", toml_string(args.proxy.name()));
    for (key, path) in [("file", &args.proxy_file), ("config", &args.proxy_config)] {
        if let Some(path) = path {
            proxy.push_str(&format!("{key} = {}\n", toml_string(&path.to_string_lossy())));
        }
    }
    let env_dir = args.env_dir.clone().unwrap_or_else(|| config::default_env_dir(&name));
    format!(
        "\n[app]\nname = {}\ncommand = {}\n{strategy}{ports}user = {}\n\
         {release}stop_timeout = \"30s\"\nshared = [{}]\nenv_dir = {}\n\n[app.env]\n\n\
         [app.health]\npath = \"/health\"\ndeadline = \"60s\"\n\n[app.proxy]\n{proxy}",
        toml_string(&name),
        toml_string(command),
        toml_string(user),
        shared.join(", "),
        toml_string(&env_dir.to_string_lossy()),
    )
}

/// What init writes for an app, decided (and the units verified) before anything is written.
pub struct Prepared {
    pub unit_path: PathBuf,
    pub unit_text: String,
    /// The unit that runs `[app] release`, when there is one.
    pub release_unit: Option<(PathBuf, String)>,
    /// The socket strategy's sockets and the service they name.
    pub extra_units: Vec<(PathBuf, String)>,
    /// A release unit init wrote earlier, for a `release` the configuration no longer has.
    stale_release_unit: Option<PathBuf>,
    app_user: Owner,
    sudoers: Option<sudoers::Planned>,
}

/// Checks the app user, renders the units and has systemd verify them, and checks the git
/// user's sudoers drop-in with visudo; nothing is written yet.
pub fn prepare(args: &AppArgs, repo: &Path, config: &Config) -> Result<Option<Prepared>, Error> {
    let Some(app) = &config.app else { return Ok(None) };
    let app_user = state::app_owner(app, &config.target)?;
    state::check_env_dir(app)?;
    let git_user = sudoers::git_user(&config.target, args.git_user.as_deref())?;
    if git_user.uid.as_raw() == app_user.uid {
        return Err(Error::user(
            format!("the app user {:?} is the git user, who owns the releases", app.user),
            "run the app as a user of its own (--app-user), not as the git user",
        ));
    }
    check_repository(repo, &git_user)?;
    let file_name = unit::file_name(app);
    let unit_text = unit::render(config, app);
    let extra = unit::render_socket_units(app);
    verify(&file_name, &unit_text, &extra)?;
    for (name, text) in &extra {
        verify(name, text, &extra)?;
    }
    let extra_units =
        extra.into_iter().map(|(name, text)| (args.unit_dir.join(name), text)).collect();
    let release_name = unit::release_file_name(app);
    let release_path = args.unit_dir.join(&release_name);
    let release_unit = match unit::render_release(config, app) {
        Some(text) => {
            verify(&release_name, &text, &[])?;
            Some((release_path.clone(), text))
        }
        None => None,
    };
    let stale_release_unit = Some(release_path).filter(|path| {
        release_unit.is_none() && fs::read_to_string(path).is_ok_and(|text| unit::is_ours(&text))
    });
    let sudoers = sudoers::plan(app, &git_user, &args.sudoers_dir)?;
    Ok(Some(Prepared {
        unit_path: args.unit_dir.join(file_name),
        unit_text,
        release_unit,
        extra_units,
        stale_release_unit,
        app_user,
        sudoers,
    }))
}

/// Refuses, when root runs init for a git user who is not root, a repository that user could
/// not push to: root would create it (or fill an empty directory) as its own.
fn check_repository(repo: &Path, git_user: &User) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() || git_user.uid.is_root() {
        return Ok(());
    }
    let objects = fs::symlink_metadata(repo.join("objects"));
    if objects.is_ok_and(|meta| meta.is_dir() && meta.uid() == git_user.uid.as_raw()) {
        return Ok(());
    }
    let (repo, name) = (escape_path(repo), &git_user.name);
    Err(Error::user(
        format!(
            "{repo} is not a repository of the git user {name}, who pushes to it and runs the deploys"
        ),
        format!(
            "create it as that user (`runuser -u {name} -- git init --bare {repo}`) or give it to them (`chown -R {name}: {repo}`), then run init again"
        ),
    ))
}

/// Has `systemd-analyze verify` check one unit, and says how that went.
fn verify(file_name: &str, text: &str, others: &[(String, String)]) -> Result<(), Error> {
    let others: Vec<(String, String)> =
        others.iter().filter(|(name, _)| name != file_name).cloned().collect();
    match unit::verify_with(file_name, text, &others) {
        Ok(Verified::Passed) => {
            report::line(&format!("systemd-analyze verify: {file_name} passed"));
            Ok(())
        }
        Ok(Verified::NotChecked) => {
            report::line(&format!(
                "systemd-analyze is not installed: {file_name} was not verified"
            ));
            Ok(())
        }
        Err(why) => Err(Error::user(
            why,
            "fix [app] in the options (a command systemd cannot run?), or report it as a pushdeploy bug",
        )),
    }
}

/// Writes the app's environment files and `shared/`, removes a release unit that is no longer
/// configured, then says what is left to do.
pub fn finish(config: &Config, prepared: &Prepared) -> Result<(), Error> {
    let Some(app) = &config.app else { return Ok(()) };
    state::write(config, app, prepared.app_user)?;
    for line in proxy::install(&config.target, app)? {
        report::line(&line);
    }
    if let Some(stale) = &prepared.stale_release_unit {
        fs::remove_file(stale).map_err(|err| {
            Error::user(
                format!("cannot remove {}: {err}", escape_path(stale)),
                "remove it by hand: the configuration has no `release` any more",
            )
        })?;
        report::line(&format!("removed {} (no `release` in [app])", escape_path(stale)));
    }
    if let Some(planned) = &prepared.sudoers {
        sudoers::write(planned)?;
    }
    report_next_steps(app, &prepared.unit_path);
    Ok(())
}

fn report_next_steps(app: &App, unit_path: &Path) {
    if app.strategy.is_single() {
        report::line(&format!(
            "app: {} runs {:?} as {} on port {} ({} strategy, in the release TARGET/.pushdeploy/current links to); run `systemctl daemon-reload` after a change to {}",
            unit::file_name(app),
            app.command,
            app.user,
            app.ports.blue,
            app.strategy.name(),
            escape_path(unit_path),
        ));
        return report_release(app);
    }
    report::line(&format!(
        "app: {} runs {:?} as {} on ports {} (blue) and {} (green); run `systemctl daemon-reload` after a change to {}",
        unit::file_name(app),
        app.command,
        app.user,
        app.ports.blue,
        app.ports.green,
        escape_path(unit_path),
    ));
    if let Some(listen) = app.listen {
        report::line(&format!(
            "socket: pushdeploy-{}.socket listens on {listen} for both slots' instances (and each slot's own socket on its port); the command must serve every socket systemd passes (LISTEN_FDS)",
            app.name
        ));
    }
    report_release(app);
}

fn report_release(app: &App) {
    if let Some(release) = &app.release {
        report::line(&format!(
            "release: {} runs {release:?} as {} in the new slot before each deploy starts its instance",
            unit::release_file_name(app),
            app.user,
        ));
    }
}
