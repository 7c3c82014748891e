//! `pushdeploy hook post-receive|pre-receive`: what the installed hooks run.

use std::io::{BufRead, IsTerminal};

use clap::Args;

use crate::config::{Config, Mode};
use crate::deploy::{self, Options, Request, rollback};
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::previews;
use crate::report::{self, escape};
use crate::target_dir::history::{self, HistoryEntry, Outcome, Trigger};
use crate::target_dir::{Layout, logs, record};

/// Runs as a git hook: reads git's `<old> <new> <ref>` lines on stdin and deploys the push of
/// the deploy branch. Installed by `pushdeploy init`; to deploy by hand, use `pushdeploy deploy`.
///
/// In the default mode the post-receive hook deploys, after git has accepted the push. With
/// `mode = "pre-receive"` the pre-receive hook deploys, so a failed deploy rejects the push
/// and the branch does not move; the post-receive hook then only records the deploy refs.
///
/// A push of a branch that `[previews] branches` matches deploys it into its preview
/// (TARGET/previews/SLUG), from the post-receive hook; deleting the branch removes it.
///
/// Push options (`git push -o OPTION`): no-cache, skip-build, dry-run, rollback.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The hook git is running
    #[arg(value_enum)]
    hook: Mode,
}

/// One line of a hook's stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefUpdate {
    old: CommitId,
    new: CommitId,
    name: String,
}

pub fn run(args: HookArgs) -> Result<ExitCode, Error> {
    let started = std::time::SystemTime::now();
    let updates = read_updates()?;
    let pushed = updates.iter().find(|update| !update.new.is_zero()).cloned();
    if let Some(update) = &pushed {
        super::recorded::note_push(&update.name, update.new);
    }
    let super::Site { repo, config, layout } = super::open_site(None)?;
    let (previewed, updates): (Vec<RefUpdate>, Vec<RefUpdate>) =
        updates.into_iter().partition(|update| {
            update
                .name
                .strip_prefix("refs/heads/")
                .is_some_and(|branch| previews::previewed(&config, branch).is_some())
        });
    let production = match args.hook == config.mode {
        true => {
            let noted = Noted { layout: &layout, pushed: pushed.as_ref(), started };
            deploy_production(&args, &config, &repo, updates, noted)
        }
        false => follow_up(&config, &repo, &layout, args.hook),
    };
    // Previews deploy once git has accepted the push, whichever hook deploys production.
    if args.hook == Mode::PostReceive && !previewed.is_empty() {
        let previews = deploy_previews(&config, &repo, previewed);
        return match (production, previews) {
            (Ok(ExitCode::Success), previews) => previews,
            (production, _) => production,
        };
    }
    production
}

/// Deploys the branch previews of a push: each pushed branch into its preview, each deleted
/// one's preview removed. Every one is tried; the first failure decides the exit code.
fn deploy_previews(
    config: &Config,
    repo: &Repo,
    updates: Vec<RefUpdate>,
) -> Result<ExitCode, Error> {
    let push = PushOptions::from_env()?;
    let mut result = Ok(ExitCode::Success);
    for update in updates {
        let Some(branch) = update.name.strip_prefix("refs/heads/") else { continue };
        let outcome = match update.new.is_zero() {
            true => previews::remove(config, branch),
            false => {
                previews::deploy(config, repo, branch, update.new, push.options, Trigger::Push)
            }
        };
        match outcome {
            Ok(ExitCode::Success) => {}
            Err(err) => {
                report::line(&format!("preview of {}: {err}", escape(branch)));
                if matches!(result, Ok(ExitCode::Success)) {
                    result = Ok(ExitCode::DeployFailed);
                }
            }
            Ok(code) => {
                if matches!(result, Ok(ExitCode::Success)) {
                    result = Ok(code);
                }
            }
        }
    }
    result
}

/// What a push that deploys nothing records in the history (see [`record_ignored`]).
struct Noted<'a> {
    layout: &'a Layout,
    pushed: Option<&'a RefUpdate>,
    started: std::time::SystemTime,
}

/// Deploys the push of the deploy branch, from the hook that `mode` names.
fn deploy_production(
    args: &HookArgs,
    config: &Config,
    repo: &Repo,
    updates: Vec<RefUpdate>,
    noted: Noted<'_>,
) -> Result<ExitCode, Error> {
    let mut deploy = None;
    let mut ignored = Vec::new();
    let mut other_branches = Vec::new();
    for update in updates {
        tracing::debug!(old = %update.old.hex(), new = %update.new.hex(), name = %update.name, "ref update");
        match classify(config, &update) {
            Ok(()) => deploy = Some(update),
            Err(why) => {
                if let Some(branch) = update.name.strip_prefix("refs/heads/")
                    && !update.new.is_zero()
                    && matches!(why, Ignored::OtherRef { .. })
                {
                    other_branches.push(branch.to_owned());
                }
                ignored.push((update.name, why));
            }
        }
    }
    report_ignored(&ignored);
    let Some(update) = deploy else {
        if let Some(hint) = wrong_branch_hint(config, repo, &other_branches) {
            report::line(&format!("hint: {hint}"));
        }
        record_ignored(noted.layout, &ignored, noted.pushed, noted.started);
        return Ok(ExitCode::Success);
    };
    let push = PushOptions::from_env()?;
    if push.rollback {
        report::line("rollback asked for with `-o rollback`: the pushed commit is not deployed");
        return rollback::rollback(config, repo, None, push.options);
    }
    if args.hook == Mode::PreReceive {
        // git moves the branch only if it still points where the pusher saw it; a deploy of a
        // push that git will then refuse must not go live.
        let current = repo.ref_target(&update.name)?;
        if current.unwrap_or(update.old) != update.old {
            report::line(&format!(
                "refused {}: it moved during this push; fetch and push again",
                escape(&update.name)
            ));
            return Ok(ExitCode::DeployFailed);
        }
    }
    let request = Request {
        commit: update.new,
        ref_name: update.name,
        // After post-receive, a newer push may have moved the branch while this one waited.
        skip_if_superseded: args.hook == Mode::PostReceive,
        options: push.options,
        trigger: Trigger::Push,
    };
    deploy::deploy(config, repo, &request)
}

/// Up to this many ignored refs get a line each; more get one summary line, so a push of
/// thousands of tags does not bury the line that matters.
const IGNORED_LINES: usize = 10;
/// How many refs the summary line names.
const IGNORED_NAMED: usize = 3;

/// Tells the pusher which refs of the push do not deploy, and why.
fn report_ignored(ignored: &[(String, Ignored)]) {
    if ignored.len() <= IGNORED_LINES {
        for (name, why) in ignored {
            report::line(&format!("ignored {}: {why}", escape(name)));
        }
        return;
    }
    let named: Vec<String> =
        ignored.iter().take(IGNORED_NAMED).map(|(name, _)| escape(name)).collect();
    let mut reasons: Vec<String> = ignored.iter().map(|(_, why)| why.to_string()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    report::line(&format!(
        "ignored {} ({} and {} more): {}",
        report::things(ignored.len() as u64, "ref"),
        named.join(", "),
        report::count((ignored.len() - IGNORED_NAMED) as u64),
        reasons.join("; ")
    ));
}

/// Records a push that deployed nothing as one `ignored` history entry: its first ref, and
/// why each was ignored. A target whose state directory cannot be made records nothing (its
/// next deploy says what is wrong with it).
fn record_ignored(
    layout: &Layout,
    ignored: &[(String, Ignored)],
    pushed: Option<&RefUpdate>,
    started: std::time::SystemTime,
) {
    let Some((first, _)) = ignored.first() else { return };
    if !layout.target.is_dir() || layout.ensure_state_dir().is_err() {
        return;
    }
    let mut reasons: Vec<String> = ignored.iter().map(|(_, why)| why.to_string()).collect();
    reasons.dedup();
    let mut error = reasons.join("; ");
    if ignored.len() > 1 {
        error = format!("{}: {error}", report::things(ignored.len() as u64, "ref"));
    }
    let entry = HistoryEntry {
        id: None,
        started_at: history::timestamp(started),
        commit: pushed.map(|update| update.new),
        ref_name: pushed.map_or_else(|| first.clone(), |update| update.name.clone()),
        slot: None,
        result: Outcome::Ignored,
        trigger: Trigger::Push,
        pusher: history::pusher(),
        failed_stage: None,
        error: Some(error),
        stages: Vec::new(),
        time_to_live: None,
        total: started.elapsed().map_or(0.0, |took| took.as_secs_f64()),
    };
    if let Err(err) = logs::record(layout, entry) {
        report::line(&format!("warning: {err}"));
    }
}

/// Says what to do when a push that deploys nothing updated other branches: a deploy branch
/// that does not exist (a typo in the config, or never pushed) is named; else, for a push of
/// exactly one other branch, the command that deploys it.
fn wrong_branch_hint(config: &Config, repo: &Repo, pushed: &[String]) -> Option<String> {
    let [first, rest @ ..] = pushed else { return None };
    let branch = escape(&config.branch);
    let pushed_one = escape(first);
    let push_as = format!("git push <remote> {pushed_one}:{branch}");
    // A failed read is no reason to fail a push that deploys nothing: say what is certain.
    if repo.ref_target(&config.branch_ref()).is_ok_and(|target| target.is_none()) {
        // libgit2 spells a bare repository's path with a trailing slash.
        let repo_path: std::path::PathBuf = repo.path().components().collect();
        let or_push = match rest.is_empty() {
            true => format!(", or push {pushed_one} as {branch}: {push_as}"),
            false => String::new(),
        };
        return Some(format!(
            "the deploy branch {:?} does not exist in {}: check branch = in pushdeploy.toml{or_push}",
            config.branch,
            report::escape_path(&repo_path)
        ));
    }
    rest.is_empty().then(|| {
        format!(
            "to deploy it, push it as {branch}: {push_as}, or set branch = \"{pushed_one}\" in {}",
            report::escape_path(&config.path)
        )
    })
}

fn read_updates() -> Result<Vec<RefUpdate>, Error> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::user(
            "`pushdeploy hook` reads the ref updates git writes to a hook's stdin",
            "to deploy by hand, run `pushdeploy deploy`",
        ));
    }
    let mut updates = Vec::new();
    for line in stdin.lock().split(b'\n') {
        let line = line.map_err(|err| {
            Error::user("cannot read the hook's stdin", "run the hook from git").cause(err)
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
    Ok(updates)
}

/// Runs a hook that is not the one configured to deploy.
fn follow_up(config: &Config, repo: &Repo, layout: &Layout, hook: Mode) -> Result<ExitCode, Error> {
    match hook {
        // pre-receive mode: the deploy happened before git accepted the objects; now that they
        // are out of quarantine, the deploy refs can point at them.
        Mode::PostReceive => {
            if let Some(live) = layout.live()?
                && let Some(record) = record::read(layout, live.slot)?
                && repo.ref_target(deploy::LIVE_REF)? != Some(record.commit)
            {
                let now = std::time::SystemTime::now();
                deploy::record_deploy_refs(config, repo, record.commit, now);
            }
        }
        Mode::PreReceive => report::line(&format!(
            "the pre-receive hook is installed, but {} says `mode = \"post-receive\"`: the post-receive hook deploys",
            config.path.display()
        )),
    }
    Ok(ExitCode::Success)
}

/// What the pusher asked for with `git push -o OPTION`.
#[derive(Debug, Default, PartialEq, Eq)]
struct PushOptions {
    options: Options,
    rollback: bool,
}

impl PushOptions {
    /// Reads `GIT_PUSH_OPTION_COUNT` and `GIT_PUSH_OPTION_<n>`, as git sets them for hooks.
    fn from_env() -> Result<PushOptions, Error> {
        let count = std::env::var("GIT_PUSH_OPTION_COUNT")
            .ok()
            .and_then(|count| count.parse::<usize>().ok())
            .unwrap_or(0);
        let options = (0..count).filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok());
        PushOptions::parse(options)
    }

    /// Parses the options, refusing one pushdeploy does not know: a typo of `dry-run` must not
    /// deploy live, nor `no-cache` build with the cache.
    fn parse(options: impl IntoIterator<Item = String>) -> Result<PushOptions, Error> {
        let mut parsed = PushOptions::default();
        for option in options {
            match option.as_str() {
                "no-cache" => parsed.options.no_cache = true,
                "skip-build" => parsed.options.skip_build = true,
                "dry-run" => parsed.options.dry_run = true,
                "rollback" => parsed.rollback = true,
                other => return Err(unknown_option(other)),
            }
        }
        Ok(parsed)
    }
}

/// The push options pushdeploy knows.
const KNOWN_OPTIONS: [&str; 4] = ["no-cache", "skip-build", "dry-run", "rollback"];

/// Refuses an unknown push option, suggesting the known one it is closest to.
fn unknown_option(option: &str) -> Error {
    let closest = KNOWN_OPTIONS
        .into_iter()
        .map(|known| (strsim::damerau_levenshtein(option, known), known))
        .min()
        .filter(|(distance, _)| *distance <= 2)
        .map(|(_, known)| format!(" (did you mean {known}?)"))
        .unwrap_or_default();
    Error::user(
        format!(
            "unknown push option {:?}{closest}: nothing was deployed; pushdeploy knows no-cache, skip-build, dry-run and rollback",
            escape(option)
        ),
        "push again with a known option, or run `pushdeploy deploy` on the server",
    )
}

fn parse_update(line: &str) -> Option<RefUpdate> {
    let mut parts = line.splitn(3, ' ');
    let old = CommitId::from_hex(parts.next()?)?;
    let new = CommitId::from_hex(parts.next()?)?;
    let name = parts.next()?.trim_end_matches('\r').to_owned();
    Some(RefUpdate { old, new, name })
}

/// Why a ref update of a push does not deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ignored {
    /// Another branch, or anything else that is not a tag.
    OtherRef {
        branch: String,
    },
    Tag {
        branch: String,
    },
    /// The deploy branch itself, deleted.
    BranchDeleted {
        branch: String,
    },
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::OtherRef { branch } => {
                write!(f, "only pushes to the branch {branch:?} deploy")
            }
            Ignored::Tag { branch } => {
                write!(f, "tags do not deploy; only pushes to the branch {branch:?} deploy")
            }
            Ignored::BranchDeleted { branch } => write!(
                f,
                "the deploy branch {branch:?} was deleted; the live site stays as it is until {branch:?} is pushed again"
            ),
        }
    }
}

/// Accepts the update that deploys, or says why it is ignored.
fn classify(config: &Config, update: &RefUpdate) -> Result<(), Ignored> {
    let branch = config.branch.clone();
    if update.name != config.branch_ref() {
        return Err(match update.name.starts_with("refs/tags/") {
            true => Ignored::Tag { branch },
            false => Ignored::OtherRef { branch },
        });
    }
    if update.new.is_zero() {
        return Err(Ignored::BranchDeleted { branch });
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
        let parse = |options: &[&str]| PushOptions::parse(options.iter().map(|o| o.to_string()));
        let all = parse(&["no-cache", "skip-build", "dry-run", "rollback"]).unwrap();
        assert_eq!(
            all,
            PushOptions {
                options: Options { no_cache: true, skip_build: true, dry_run: true },
                rollback: true
            }
        );
        let typo = parse(&["dryrun"]).unwrap_err().to_string();
        assert!(
            typo.starts_with("unknown push option \"dryrun\" (did you mean dry-run?)"),
            "{typo}"
        );
        let other = parse(&["frobnicate"]).unwrap_err().to_string();
        assert!(other.starts_with("unknown push option \"frobnicate\": nothing"), "{other}");
    }
}
