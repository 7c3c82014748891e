//! `pushdeploy hook post-receive`: what the installed hook runs.

use std::io::{BufRead, IsTerminal};

use clap::{Args, ValueEnum};

use crate::config::{self, Config};
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::pipeline::{self, Request};
use crate::report::{self, escape};

/// Runs as a git hook: reads git's `<old> <new> <ref>` lines on stdin and deploys the push of
/// the deploy branch. Installed by `pushdeploy init`; to deploy by hand, use `pushdeploy deploy`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The hook git is running
    #[arg(value_enum)]
    hook: HookName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HookName {
    PostReceive,
}

/// One line of a hook's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefUpdate {
    old: CommitId,
    new: CommitId,
    name: String,
}

pub fn run(args: HookArgs) -> Result<ExitCode, Error> {
    let HookName::PostReceive = args.hook;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::user(
            "`pushdeploy hook post-receive` reads the ref updates git writes to a hook's stdin",
            "to deploy by hand, run `pushdeploy deploy`",
        ));
    }
    let mut updates = Vec::new();
    for line in stdin.lock().split(b'\n') {
        let line = line.map_err(|err| {
            Error::user(
                format!("cannot read the hook's stdin: {err}"),
                "run the hook from git",
            )
        })?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        updates.push(parse_update(&line).ok_or_else(|| {
            Error::user(
                format!("not a ref update line: {:?}", escape(&line)),
                "the hook expects `<old-id> <new-id> <ref>` lines, as git writes them",
            )
        })?);
    }

    let repo = Repo::open(&super::repo_path(None))?;
    let config = config::load(repo.path())?;
    let mut deploy = None;
    for update in updates {
        tracing::debug!(old = %update.old.hex(), new = %update.new.hex(), name = %update.name, "ref update");
        match classify(&config, &update) {
            Ok(()) => deploy = Some(update),
            Err(why) => report::line(&format!("ignored {}: {why}", escape(&update.name))),
        }
    }
    match deploy {
        None => Ok(ExitCode::Success),
        Some(update) => {
            let options = PushOptions::from_env();
            let request = Request {
                commit: update.new,
                ref_name: update.name,
                skip_if_superseded: true,
                no_cache: options.no_cache,
            };
            pipeline::deploy(&config, &repo, &request)
        }
    }
}

/// What the pusher asked for with `git push -o OPTION`.
#[derive(Debug, Default, PartialEq, Eq)]
struct PushOptions {
    no_cache: bool,
}

impl PushOptions {
    /// Reads `GIT_PUSH_OPTION_COUNT` and `GIT_PUSH_OPTION_<n>`, as git sets them for hooks.
    fn from_env() -> PushOptions {
        let count = std::env::var("GIT_PUSH_OPTION_COUNT")
            .ok()
            .and_then(|count| count.parse::<usize>().ok())
            .unwrap_or(0);
        let options = (0..count).filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok());
        PushOptions::parse(options)
    }

    fn parse(options: impl IntoIterator<Item = String>) -> PushOptions {
        let mut parsed = PushOptions::default();
        for option in options {
            match option.as_str() {
                "no-cache" => parsed.no_cache = true,
                other => report::line(&format!(
                    "ignored push option {:?}: pushdeploy knows `no-cache`",
                    escape(other)
                )),
            }
        }
        parsed
    }
}

fn parse_update(line: &str) -> Option<RefUpdate> {
    let mut parts = line.splitn(3, ' ');
    let old = CommitId::from_hex(parts.next()?)?;
    let new = CommitId::from_hex(parts.next()?)?;
    let name = parts.next()?.trim_end_matches('\r').to_owned();
    Some(RefUpdate { old, new, name })
}

/// Accepts the update that deploys, or says why it is ignored.
fn classify(config: &Config, update: &RefUpdate) -> Result<(), String> {
    let branch = &config.branch;
    if update.name != config.branch_ref() {
        let kind = if update.name.starts_with("refs/tags/") {
            "tags do not deploy; "
        } else {
            ""
        };
        return Err(format!("{kind}only pushes to the branch {branch:?} deploy"));
    }
    if update.new.is_zero() {
        return Err(format!(
            "the deploy branch {branch:?} was deleted; the live site stays as it is until {branch:?} is pushed again"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_lines() {
        let zero = "0".repeat(40);
        let id = "a".repeat(40);
        let update = parse_update(&format!("{zero} {id} refs/heads/main")).unwrap();
        assert!(update.old.is_zero());
        assert_eq!(update.new.hex(), id);
        assert_eq!(update.name, "refs/heads/main");
        assert_eq!(parse_update("nonsense"), None);
        assert_eq!(parse_update(&format!("{zero} {id}")), None);
    }

    #[test]
    fn reads_push_options() {
        assert_eq!(
            PushOptions::parse(["no-cache".to_owned()]),
            PushOptions { no_cache: true }
        );
        assert_eq!(
            PushOptions::parse(["other".to_owned()]),
            PushOptions::default()
        );
    }
}
