//! `pushdeploy serve`: the webhook receiver for sites whose repository is hosted elsewhere.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::{self, MIN_SECRET_LEN, Secret};
use crate::error::{Error, ExitCode, Kind};
use crate::report::{self, escape_path};
use crate::webhook::server::{self, Settings, Site};

/// Receives push webhooks from GitHub, Gitea or GitLab and deploys each push, as a push to the
/// bare repository would.
///
/// Each site is a bare repository whose pushdeploy.toml has a [webhook] table (provider, url,
/// secret_file). Its endpoint is POST /hooks/NAME, NAME being the repository's directory name
/// without `.git`. A delivery whose signature (GitHub, Gitea) or token (GitLab) is missing or
/// wrong is answered 401 and nothing runs; a push of the deploy branch is answered 202 at once,
/// then the branch is fetched from `url` into the bare repository and deployed under the
/// site's lock (newest wins); `pushdeploy log` shows it with the trigger `webhook`.
///
/// A push or deletion of a branch that `[previews] branches` matches deploys or removes its
/// preview; a deletion is believed once the hosted repository no longer has the branch.
///
/// The secrets are read when serve starts: restart it after changing one.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; keep it on loopback behind the web server's TLS
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// A bare repository to serve (repeatable)
    #[arg(long = "repo", value_name = "REPO")]
    repos: Vec<PathBuf>,
    /// A directory of bare repositories: each one with a [webhook] table is served
    #[arg(long, value_name = "DIR")]
    sites: Option<PathBuf>,
    /// The largest request body accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Connections handled at once
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_connections: usize,
    /// Fetches and deploys run at once across all sites (each site deploys one at a time)
    #[arg(long, value_name = "N", default_value_t = 2)]
    jobs: usize,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, Error> {
    let mut sites = Vec::new();
    for repo in &args.repos {
        match load_site(repo)? {
            Some(site) => sites.push(site),
            None => {
                return Err(Error::user(
                    format!(
                        "{} has no [webhook] table",
                        escape_path(&repo.join(config::FILE_NAME))
                    ),
                    "add [webhook] with provider, url and secret_file (see the README), or leave out this --repo",
                ));
            }
        }
    }
    if let Some(dir) = &args.sites {
        sites.extend(load_sites_dir(dir)?);
    }
    if sites.is_empty() {
        return Err(Error::user(
            "no site to serve",
            "pass --repo REPO (repeatable) or --sites DIR, with repositories whose pushdeploy.toml has a [webhook] table",
        ));
    }
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = sites.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(Error::user(
            format!(
                "two repositories would both be served at {}{}: {} and {}",
                server::PATH_PREFIX,
                pair[0].name,
                escape_path(&pair[0].repo),
                escape_path(&pair[1].repo)
            ),
            "rename one of them, or serve each with its own `pushdeploy serve`",
        ));
    }
    let program = std::env::current_exe().map_err(|err| {
        Error::new(Kind::Internal, "cannot find pushdeploy's own executable").cause(err)
    })?;
    let settings = Settings {
        listen: args.listen,
        max_body: args.max_body,
        max_connections: args.max_connections,
        jobs: args.jobs,
        program,
    };
    server::serve(settings, sites).map_err(|err| {
        Error::user(
            format!("cannot serve on {}", args.listen),
            "pick another --listen address, or stop what uses this one",
        )
        .cause(err)
    })?;
    Ok(ExitCode::Success)
}

/// Serves every repository in `dir` whose configuration has a `[webhook]` table. One whose
/// configuration is broken is skipped with a line, so it cannot stop the others' deploys.
fn load_sites_dir(dir: &Path) -> Result<Vec<Site>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|err| {
        Error::user(
            format!("cannot read {}", escape_path(dir)),
            "pass a directory of bare repositories",
        )
        .cause(err)
    })?;
    let mut sites = Vec::new();
    for entry in entries.flatten() {
        let repo = entry.path();
        if !repo.join(config::FILE_NAME).is_file() {
            continue;
        }
        match load_site(&repo) {
            Ok(Some(site)) => sites.push(site),
            Ok(None) => {}
            Err(err) => report::line(&format!("skipped {}: {err}", escape_path(&repo))),
        }
    }
    Ok(sites)
}

/// Reads one site's configuration and secret; `None` when it has no `[webhook]` table.
fn load_site(repo: &Path) -> Result<Option<Site>, Error> {
    let site = super::open_site(Some(repo.to_owned()))?;
    let Some(webhook) = site.config.webhook else { return Ok(None) };
    let path = site.repo.path().components().collect::<PathBuf>();
    let name = site_name(&path).ok_or_else(|| {
        Error::user(
            format!("{} has no name that can be a URL path", escape_path(&path)),
            "name the repository with letters, digits, `.`, `_` and `-`, e.g. example.com.git",
        )
    })?;
    let secret = match webhook.secret {
        Secret::Inline(secret) => {
            let config = &site.config.path;
            if std::fs::metadata(config).is_ok_and(|meta| meta.permissions().mode() & 0o004 != 0) {
                report::line(&format!(
                    "warning: {} holds the webhook secret and every user can read it; use `secret_file`, or `chmod o-r` it",
                    escape_path(config)
                ));
            }
            secret.into_bytes()
        }
        Secret::File(file) => read_secret_file(&file)?,
    };
    Ok(Some(Site {
        name,
        repo: path,
        branch: site.config.branch.clone(),
        provider: webhook.provider,
        url: webhook.url,
        secret,
        fetch_timeout: webhook.fetch_timeout,
        previews: site.config.previews,
    }))
}

/// Returns the endpoint name of a repository: its directory name without `.git`.
fn site_name(repo: &Path) -> Option<String> {
    let file_name = repo.file_name()?.to_str()?;
    let name = file_name.strip_suffix(".git").unwrap_or(file_name);
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    plain.then(|| name.to_owned())
}

/// Reads a secret file, which every user must not be able to read: with the secret, anyone
/// could deploy any commit of the hosted repository at will.
fn read_secret_file(file: &Path) -> Result<Vec<u8>, Error> {
    let unreadable = |err: std::io::Error| {
        Error::user(
            format!("cannot read the webhook secret {}", escape_path(file)),
            "create it readable by the user serve runs as, e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`",
        )
        .cause(err)
    };
    let meta = std::fs::metadata(file).map_err(unreadable)?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(Error::user(
            format!("the webhook secret {} is readable by every user", escape_path(file)),
            format!("chmod o-r {}", escape_path(file)),
        ));
    }
    let text = std::fs::read(file).map_err(unreadable)?;
    let secret = text.trim_ascii_end().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::user(
            format!(
                "the webhook secret in {} is shorter than {MIN_SECRET_LEN} characters",
                escape_path(file)
            ),
            "use a random one: `openssl rand -hex 32 > FILE`, and give the same to the provider",
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_come_from_the_directory() {
        assert_eq!(
            site_name(Path::new("/srv/git/example.com.git")).as_deref(),
            Some("example.com")
        );
        assert_eq!(site_name(Path::new("/srv/git/blog")).as_deref(), Some("blog"));
        assert_eq!(site_name(Path::new("/srv/git/a b.git")), None);
        assert_eq!(site_name(Path::new("/srv/git/.git")), None);
    }
}
