//! `pushdeploy env`: the app's secrets, kept outside git in `[app] env_dir`/secrets.env (root's,
//! mode 0640, the app's group: the git user and the builds it runs never read them). Root edits
//! them; a change takes effect by deploying the live release again (a blue/green cycle with the
//! health gate, the old instance serving until the new one passed it). No value is printed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use clap::{Args, Subcommand};

use super::{Site, open_site};
use crate::app::{env, state};
use crate::config::{self, App};
use crate::error::{Error, ExitCode, Kind};
use crate::report;
use crate::target_dir::record;

/// Sets, removes or lists the app's secrets (environment variables kept outside git).
///
/// They live in [app] env_dir/secrets.env, root's and readable by the app's group only, so
/// neither the git user nor a pushed build can read them. `set` and `unset` run as root and
/// then deploy the live release again as the target's owner, so that a new instance starts
/// with them and passes the health gate while the old one serves. Values are never printed.
#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    action: Action,
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO", global = true)]
    repo: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Sets each KEY to VALUE; a bare KEY reads its value from standard input (one line), which
    /// keeps it out of the process list and the shell's history
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
        /// Only write the file: the next deploy starts with it
        #[arg(long)]
        no_deploy: bool,
    },
    /// Removes each KEY
    Unset {
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        /// Only write the file: the next deploy starts without them
        #[arg(long)]
        no_deploy: bool,
    },
    /// Lists the keys, with their values hidden
    List,
}

pub fn run(args: EnvArgs) -> Result<ExitCode, Error> {
    if nix::unistd::geteuid().is_root() {
        // Root edits the secrets of the git user's repository (as `init` writes into it).
        crate::git::trust_repository_owners();
    }
    let site = open_site(args.repo)?;
    let Some(app) = site.config.app.clone() else {
        return Err(Error::user(
            format!(
                "{} deploys a site, not an app: it has no environment",
                report::escape_path(site.repo.path())
            ),
            "add an [app] table with `pushdeploy init --app`",
        ));
    };
    let mut secrets = read(&app)?;
    match args.action {
        Action::List => {
            let keys: String = secrets.keys().map(|key| format!("{key}=******\n")).collect();
            report::stdout(&keys);
            if secrets.is_empty() {
                report::line("no secrets: `pushdeploy env set KEY=VALUE` adds one");
            }
            Ok(ExitCode::Success)
        }
        Action::Set { pairs, no_deploy } => {
            for pair in pairs {
                let (key, value) = match pair.split_once('=') {
                    Some((key, value)) => (key.to_owned(), value.to_owned()),
                    None => (pair.clone(), value_from_stdin(&pair)?),
                };
                if let Some(problem) = config::env_problem(&key, &value) {
                    return Err(Error::user(format!("{key:?} {problem}"), USAGE));
                }
                let verb =
                    if secrets.insert(key.clone(), value).is_some() { "changed" } else { "set" };
                report::line(&format!("{verb} {key} (the value is not shown)"));
            }
            write_and_deploy(&site, &app, &secrets, no_deploy)
        }
        Action::Unset { keys, no_deploy } => {
            for key in keys {
                if secrets.remove(&key).is_none() {
                    return Err(Error::user(
                        format!("the app has no secret {key:?}"),
                        "`pushdeploy env list` shows the keys",
                    ));
                }
                report::line(&format!("removed {key}"));
            }
            write_and_deploy(&site, &app, &secrets, no_deploy)
        }
    }
}

const USAGE: &str = "give KEY=VALUE, with KEY of letters, digits and `_` and VALUE one line";

/// Reads the secrets file (none yet: no secrets).
fn read(app: &App) -> Result<BTreeMap<String, String>, Error> {
    let Some(text) = state::read_secrets(app)? else { return Ok(BTreeMap::new()) };
    env::parse_secrets(&text).map_err(|why| {
        let path = app.env_dir.join(env::SECRETS_FILE);
        Error::new(Kind::Config, format!("{}: {why}", report::escape_path(&path)))
            .hint("fix or remove that line by hand (values are written as KEY=\"value\")")
    })
}

/// Reads one line of standard input as the value of `key`.
fn value_from_stdin(key: &str) -> Result<String, Error> {
    let mut text = String::new();
    std::io::stdin().take(1 << 20).read_to_string(&mut text).map_err(|err| {
        Error::user(format!("cannot read the value of {key:?} from standard input: {err}"), USAGE)
    })?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// Writes the secrets (root only), then deploys the live release again unless told not to.
fn write_and_deploy(
    site: &Site,
    app: &App,
    secrets: &BTreeMap<String, String>,
    no_deploy: bool,
) -> Result<ExitCode, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::user(
            "the app's secrets are root's: pushdeploy env set and unset run as root",
            "run it with sudo",
        ));
    }
    let app_gid = state::app_owner(app, &site.config.target)?.gid;
    state::write_secrets(app, &env::render_secrets(secrets), app_gid)?;
    let shown = report::escape_path(&app.env_dir.join(env::SECRETS_FILE));
    report::line(&format!("wrote {shown}"));
    let live = site.layout.live()?.and_then(|live| record::read(&site.layout, live.slot).ok()?);
    match (no_deploy, live) {
        (true, _) => {
            report::line("the next deploy starts the app with it (--no-deploy)");
            Ok(ExitCode::Success)
        }
        (false, None) => {
            report::line("nothing is live yet: the first deploy starts the app with it");
            Ok(ExitCode::Success)
        }
        (false, Some(_)) if app.strategy == config::Strategy::Reload => {
            // A reload re-executes the app from its running master, whose environment is the
            // one the unit started with: only a restart reads the files again.
            report::line(&format!(
                "the reload strategy keeps the environment {unit} started with: `systemctl restart {unit}` applies it (a short outage)",
                unit = crate::app::systemd::single(app)
            ));
            Ok(ExitCode::Success)
        }
        (false, Some(live)) => {
            report::line(&format!(
                "deploying the live release {} again, so that a new instance starts with it",
                live.commit.short()
            ));
            redeploy(site, &live.commit.to_string())
        }
    }
}

/// Runs `pushdeploy deploy COMMIT` as the target's owner, who runs every deploy (the state
/// directory refuses root's writes); its exit code is this command's.
fn redeploy(site: &Site, commit: &str) -> Result<ExitCode, Error> {
    let owner = state::target_owner(&site.config.target);
    let exe = std::env::current_exe()
        .map_err(|err| Error::new(Kind::Io, format!("cannot find pushdeploy's binary: {err}")))?;
    let mut command = Command::new(exe);
    command.args(["deploy", "--repo"]).arg(site.repo.path()).arg(commit).current_dir("/");
    if owner.uid != 0 {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner.uid))
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::user(
                    format!("the target's owner (uid {}) is not a user", owner.uid),
                    "give the target to the git user, who runs the deploys",
                )
            })?;
        // As root, std drops the supplementary groups before it changes the ids.
        command
            .uid(owner.uid)
            .gid(owner.gid)
            .env("HOME", &user.dir)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    let status = command
        .status()
        .map_err(|err| Error::new(Kind::Io, format!("cannot run pushdeploy deploy: {err}")))?;
    Ok(if status.success() { ExitCode::Success } else { ExitCode::DeployFailed })
}
