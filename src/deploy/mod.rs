//! A deploy, in two phases with plain data between them.
//!
//! **Prepare** ([`prepare`]: prepare, materialize, build, verify) touches only the slot that is
//! not live and returns a [`Prepared`] release. **Switch** ([`switch`]: activate, retire,
//! record) makes it live. Until `activate` renames the new link over the live one nothing a
//! deploy does is visible, so a failure before then goes through one discard path
//! ([`finish::failed`]) and leaves the site exactly as it was. A rollback to a kept release is
//! a release that is already prepared ([`rollback`]).

mod app;
mod build_env;
mod converge;
mod finish;
mod prepare;
pub mod rollback;
mod switch;

use std::time::{Duration, Instant, SystemTime};

use nix::sys::stat::{Mode, umask};
use tracing::info_span;

use crate::config::Config;
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::report::{self, escape, escape_path};
use crate::target_dir::history::{self, Stage, Trigger};
use crate::target_dir::lock::{self, DeployLock};
use crate::target_dir::{self, Layout, Live, Slot};

pub use prepare::{Prepared, sources_served};
pub use switch::{LIVE_REF, record_deploy_refs, start_reapers};

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Request {
    pub commit: CommitId,
    /// The ref that was pushed, or the revision named to `deploy`.
    pub ref_name: String,
    /// Skip the deploy if, once the lock is ours, the deploy branch no longer points at
    /// `commit`: a newer push is queued and will deploy its own commit.
    pub skip_if_superseded: bool,
    pub options: Options,
    /// What started the deploy, for the history.
    pub trigger: Trigger,
}

/// How to deploy: `deploy` flags and `git push -o` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Build without the build cache (its result still becomes the new cache).
    pub no_cache: bool,
    /// Do not run the configured build.
    pub skip_build: bool,
    /// Materialize and build, then stop before the switch.
    pub dry_run: bool,
}

/// What the pusher is told to do after most failures.
const RETRY: &str = "fix the problem and push again, or run `pushdeploy deploy`";

/// Why a stage failed, and what the pusher can do about it.
struct Failure {
    stage: Stage,
    reason: String,
    hint: String,
    /// The new release was live for a moment (an app's proxy was pointed at it) and was
    /// taken back: the history says `rolled-back`.
    rolled_back: bool,
}

impl Failure {
    fn new(stage: Stage, reason: impl std::fmt::Display, hint: impl Into<String>) -> Failure {
        Failure { stage, reason: reason.to_string(), hint: hint.into(), rolled_back: false }
    }
}

/// Times the stages of one deploy.
struct Clock {
    started: Instant,
    started_at: SystemTime,
    stages: Vec<(Stage, f64)>,
}

impl Clock {
    fn start() -> Clock {
        Clock { started: Instant::now(), started_at: SystemTime::now(), stages: Vec::new() }
    }

    /// Runs one stage inside its tracing span and records how long it took.
    fn stage<T>(&mut self, stage: Stage, work: impl FnOnce() -> T) -> (T, Duration) {
        let _span = info_span!("stage", name = stage.name()).entered();
        let start = Instant::now();
        let result = work();
        let took = start.elapsed();
        self.stages.push((stage, took.as_secs_f64()));
        (result, took)
    }
}

/// One deploy in progress: what every stage reads, and the clock that times them.
struct Run<'a> {
    config: &'a Config,
    repo: &'a Repo,
    layout: &'a Layout,
    request: &'a Request,
    /// What the link served when the deploy started; `None` before the first deploy.
    live: Option<Live>,
    /// The slot the release is prepared in: the one that is not live.
    slot: Slot,
    clock: Clock,
}

impl<'a> Run<'a> {
    /// Returns the build command this deploy runs, if any.
    fn build_command(&self) -> Option<&'a str> {
        let Run { config, request, .. } = *self;
        config.build.command.as_deref().filter(|_| !request.options.skip_build)
    }
}

/// Takes the target's deploy lock, telling the pusher when it has to wait; checks the target
/// and its state directory first, and sets the configured umask for what follows. An app's
/// instances and proxy are then put right if a killed deploy left them wrong.
pub fn lock_target(config: &Config) -> Result<(Layout, DeployLock), Error> {
    let layout = Layout::new(config);
    if !layout.target.is_dir() {
        return Err(Error::user(
            format!("target {} does not exist or is not a directory", escape_path(&layout.target)),
            format!("create it, or fix `target` in {}", escape_path(&config.path)),
        ));
    }
    layout.ensure_state_dir().map_err(|err| {
        if let Some(error) = target_not_writable(&layout) {
            return error;
        }
        let hint = match &err {
            target_dir::Error::StateDir { hint, .. } => hint.clone(),
            _ => format!(
                "{} must be a directory this user can write; move away whatever is there",
                escape_path(&layout.state)
            ),
        };
        Error::user("cannot set up pushdeploy's state directory", hint).cause(err)
    })?;
    if let Some((problem, fix)) = layout.world_writable_target() {
        report::line(&format!("warning: {problem}; {fix}"));
    }
    if config.releases_world_writable() {
        report::line(&format!(
            "warning: umask {:03o} with `world_writable = true` in {}: every user of this machine can change the releases",
            config.umask,
            escape_path(&config.path)
        ));
    }
    let lock = lock::acquire(&layout.lock_path(), |holder| {
        let holder = holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
        report::line(&format!("waiting for the deploy in progress{holder} to finish"));
    })?;
    umask(Mode::from_bits_truncate(config.umask as nix::libc::mode_t));
    converge::converge(config, &layout)?;
    Ok((layout, lock))
}

/// Says who owns the target when this user cannot create the state directory in it (nothing
/// is there to move away): a target made by root for the git user, say.
fn target_not_writable(layout: &Layout) -> Option<Error> {
    use nix::unistd::{AccessFlags, Uid, User, access, geteuid};
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(&layout.state).is_ok()
        || access(&layout.target, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
    {
        return None;
    }
    let owner = std::fs::metadata(&layout.target).ok()?.uid();
    let name = |uid: u32| {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name)
    };
    let me = geteuid().as_raw();
    let target = escape_path(&layout.target);
    Some(Error::user(
        format!(
            "target {target} is owned by {} (uid {owner}) and this user ({}, uid {me}) cannot write in it, so pushdeploy cannot create {}",
            name(owner),
            name(me),
            escape_path(&layout.state)
        ),
        format!("give it to the user that deploys: as root, `chown {}: {target}`", name(me)),
    ))
}

/// Runs one deploy under the target's lock and tells the pusher how it ended.
pub fn deploy(config: &Config, repo: &Repo, request: &Request) -> Result<ExitCode, Error> {
    let (layout, _lock) = lock_target(config)?;
    deploy_locked(config, repo, &layout, request)
}

/// Runs one deploy while the caller holds the target's lock (see [`lock_target`]): a caller
/// that decides what to deploy from the branch or the history must decide it under the lock,
/// or a deploy that went live while it waited would be undone.
pub fn deploy_locked(
    config: &Config,
    repo: &Repo,
    layout: &Layout,
    request: &Request,
) -> Result<ExitCode, Error> {
    if superseded(config, repo, layout, request)? {
        return Ok(ExitCode::Success);
    }
    let live = layout.live()?;
    let slot = live.as_ref().map_or(Slot::Blue, |live| live.slot.other());
    let dry = if request.options.dry_run { " (dry run)" } else { "" };
    report::line(&format!(
        "deploying {} ({}) into {slot}{dry}",
        request.commit.short(),
        escape(&request.ref_name)
    ));
    let mut run = Run { config, repo, layout, request, live, slot, clock: Clock::start() };
    let prepared = match prepare::prepare(&mut run) {
        Ok(prepared) => prepared,
        Err(failure) => return Ok(finish::failed(&run, failure, true)),
    };
    if request.options.dry_run {
        return Ok(finish::dry_run(&run));
    }
    match switch::switch(&mut run, prepared) {
        Ok(switched) => Ok(finish::live(&run, &switched)),
        Err(failure) => Ok(finish::failed(&run, failure, true)),
    }
}

/// Tells, under the lock, whether a push is superseded: its branch has moved on since, and
/// the newer push deploys its own commit. Says so in one line.
fn superseded(
    config: &Config,
    repo: &Repo,
    layout: &Layout,
    request: &Request,
) -> Result<bool, Error> {
    if !request.skip_if_superseded {
        return Ok(false);
    }
    let tip = repo.ref_target(&config.branch_ref())?;
    if tip == Some(request.commit) {
        return Ok(false);
    }
    let why = match tip {
        Some(tip) => {
            format!("{} has moved on to {}, which its own push deploys", config.branch, tip.short())
        }
        None => format!("{} was deleted meanwhile", config.branch),
    };
    report::line(&format!("skipped {}: {why}", request.commit.short()));
    // In the history too, as a push that deployed nothing: its pusher may look for it there.
    let entry = history::HistoryEntry {
        id: None,
        started_at: history::timestamp(std::time::SystemTime::now()),
        commit: Some(request.commit),
        ref_name: request.ref_name.clone(),
        slot: None,
        result: history::Outcome::Ignored,
        trigger: request.trigger,
        pusher: history::pusher(),
        failed_stage: None,
        error: Some(format!("skipped: {why}")),
        stages: Vec::new(),
        time_to_live: None,
        total: 0.0,
    };
    if let Err(err) = target_dir::logs::record(layout, entry) {
        report::line(&format!("warning: {err}"));
    }
    Ok(true)
}
