//! The deploy pipeline: lock, prepare, materialize, build, verify, activate, retire, record.
//!
//! Until `activate` renames the new link over the live one, nothing a deploy does is visible:
//! it writes only into the slot that is not live. A failure before then removes that slot and
//! leaves the site exactly as it was.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::stat::{Mode, umask};
use tracing::info_span;

use crate::config::{self, Config};
use crate::error::{Error, ExitCode};
use crate::git::{CommitId, Repo};
use crate::release::build;
use crate::release::cache::Cache;
use crate::release::check;
use crate::release::grace::{self, Grace};
use crate::release::{self, write};
use crate::report::{self, escape, escape_path};
use crate::target::history::{self, HistoryEntry, ReleaseRecord};
use crate::target::index::{self, Index};
use crate::target::lock::{self, DeployLock};
use crate::target::{self, Layout, Live, Slot, link, slots};

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
    pub trigger: &'static str,
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

/// The stages of a deploy, as timed in the history; all but `Retire` come before the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Prepare,
    Materialize,
    Build,
    Verify,
    Activate,
    /// After the switch: it can only warn, never fail the deploy.
    Retire,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Materialize => "materialize",
            Stage::Build => "build",
            Stage::Verify => "verify",
            Stage::Activate => "activate",
            Stage::Retire => "retire",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stage failed, and what the pusher can do about it.
struct Failure {
    stage: Stage,
    reason: String,
    hint: String,
}

impl Failure {
    fn new(stage: Stage, reason: impl fmt::Display, hint: impl Into<String>) -> Failure {
        Failure { stage, reason: reason.to_string(), hint: hint.into() }
    }
}

/// Times the stages of one deploy.
struct Clock {
    started: Instant,
    started_at: SystemTime,
    stages: Vec<(String, f64)>,
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
        self.stages.push((stage.name().to_owned(), took.as_secs_f64()));
        (result, took)
    }
}

/// Takes the target's deploy lock, telling the pusher when it has to wait.
pub fn lock_target(config: &Config) -> Result<(Layout, DeployLock), Error> {
    let layout = Layout::new(config);
    if !layout.target.is_dir() {
        return Err(Error::user(
            format!("target {} does not exist or is not a directory", escape_path(&layout.target)),
            format!("create it, or fix `target` in {}", escape_path(&config.path)),
        ));
    }
    layout.ensure_state_dir().map_err(|err| {
        let hint = match &err {
            target::Error::StateDir { hint, .. } => hint.clone(),
            _ => format!(
                "{} must be a directory this user can write; move away whatever is there",
                escape_path(&layout.state)
            ),
        };
        Error::user(format!("cannot set up pushdeploy's state directory: {err}"), hint)
    })?;
    warn_if_world_writable(&layout.target);
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
    Ok((layout, lock))
}

/// Runs one deploy under the target's lock and tells the pusher how it ended.
pub fn deploy(config: &Config, repo: &Repo, request: &Request) -> Result<ExitCode, Error> {
    let (layout, _lock) = lock_target(config)?;
    deploy_locked(config, repo, layout, request)
}

/// Runs one deploy while the caller holds the target's lock (see [`lock_target`]): a caller
/// that decides what to deploy from the branch or the history must decide it under the lock,
/// or a deploy that went live while it waited would be undone.
pub fn deploy_locked(
    config: &Config,
    repo: &Repo,
    layout: Layout,
    request: &Request,
) -> Result<ExitCode, Error> {
    let short = request.commit.short();
    if request.skip_if_superseded {
        let tip = repo.ref_target(&config.branch_ref())?;
        if tip != Some(request.commit) {
            let why = match tip {
                Some(tip) => format!(
                    "{} has moved on to {}, which its own push deploys",
                    config.branch,
                    tip.short()
                ),
                None => format!("{} was deleted meanwhile", config.branch),
            };
            report::line(&format!("skipped {short}: {why}"));
            return Ok(ExitCode::Success);
        }
    }

    let live = layout.live()?;
    let slot = live.as_ref().map_or(Slot::Blue, |live| live.slot.other());
    let ref_name = escape(&request.ref_name);
    let dry = if request.options.dry_run { " (dry run)" } else { "" };
    report::line(&format!("deploying {short} ({ref_name}) into {slot}{dry}"));

    let mut clock = Clock::start();
    let entry =
        |clock: &Clock, result: &str, failure: Option<&Failure>, ttl: Option<f64>| HistoryEntry {
            started_at: history::timestamp(clock.started_at),
            commit: request.commit.hex(),
            ref_name: request.ref_name.clone(),
            slot,
            result: result.to_owned(),
            trigger: request.trigger.to_owned(),
            pusher: history::pusher(),
            failed_stage: failure.map(|f| f.stage.name().to_owned()),
            error: failure.map(|f| f.reason.clone()),
            stages: clock.stages.clone(),
            time_to_live: ttl,
            total: clock.started.elapsed().as_secs_f64(),
        };
    // Nothing visible changed; take back what this deploy wrote, and put a parked release back.
    let discard = || {
        let _ = forget_slot(&layout, slot);
        let _ = remove_slot_tree(&layout, slot, live.as_ref());
        let _ = restore_parked(&layout, slot);
    };
    let fail = |clock: &Clock, failure: Failure| {
        discard();
        let _ = history::append(&layout, &entry(clock, "failed", Some(&failure), None));
        report::line(&format!(
            "failed at {}: {}; the live site is unchanged ({}); {}",
            failure.stage,
            failure.reason,
            describe_live(&layout, live.as_ref()),
            failure.hint
        ));
        Ok(ExitCode::DeployFailed)
    };

    let Built { mut record, index } =
        match build_release(config, repo, request, &layout, live.as_ref(), slot, &mut clock) {
            Ok(built) => built,
            Err(failure) => return fail(&clock, failure),
        };
    if request.options.dry_run {
        discard();
        let _ = history::append(&layout, &entry(&clock, "dry-run", None, None));
        report::line(&format!(
            "dry run: {short} ({ref_name}) was written{} and verified in {}; not activated, the live site is unchanged ({})",
            if build_command(config, request).is_some() { ", built" } else { "" },
            report::seconds(clock.started.elapsed()),
            describe_live(&layout, live.as_ref())
        ));
        return Ok(ExitCode::Success);
    }
    let (activated, _) = clock.stage(Stage::Activate, || {
        history::write_record(&layout, &record).map_err(|err| err.to_string())?;
        link::sync_filesystem(&layout.target).map_err(|err| err.to_string())?;
        link::activate(&layout, Path::new(&record.link_target)).map_err(|err| err.to_string())
    });
    if let Err(reason) = activated {
        let retry = "fix the problem and push again, or run `pushdeploy deploy`";
        return fail(&clock, Failure::new(Stage::Activate, reason, retry));
    }
    let time_to_live = clock.started.elapsed();

    // Live from here on: what follows can only warn. The release kept before this one is now
    // pushed out by a good one.
    let _ = slots::remove_path(&layout.parked_dir(slot));
    record.live_since = Some(history::timestamp(SystemTime::now()));
    record.grace.start(config.retire.grace);
    if let Err(err) = history::write_record(&layout, &record) {
        report::line(&format!("warning: {err}"));
    }
    let (retired, _) = clock.stage(Stage::Retire, || match live.as_ref().filter(|old| old.slot != slot) {
        Some(old) if config.retire.keep_previous => {
            report::line(&format!(
                "kept the previous release in {} for an instant `pushdeploy rollback`",
                old.slot
            ));
            true
        }
        Some(old) => forget_slot(&layout, old.slot)
            .and_then(|()| slots::retire(&layout, old.slot).map_err(|err| err.to_string()))
            .map_err(|err| {
                report::line(&format!(
                    "warning: could not remove the old release in {}: {err}; the next deploy retries",
                    old.slot
                ))
            })
            .is_ok(),
        None => true,
    });
    // Sealed only once nothing of this deploy touches the release's files any more; an old
    // release that could not be retired may still share them, so then there is no index.
    if let Some(mut index) = index.filter(|_| retired) {
        index.commit = record.commit.clone();
        index.seal();
        if let Err(err) = index::write(&layout, slot, &index) {
            report::line(&format!("warning: cannot write the release's index: {err}"));
        }
    }
    if !record.grace.is_empty() {
        spawn_reaper(repo.path());
    }
    record_deploy_refs(config, repo, request.commit, clock.started_at);
    let total = clock.started.elapsed();
    if let Err(err) =
        history::append(&layout, &entry(&clock, "live", None, Some(time_to_live.as_secs_f64())))
    {
        report::line(&format!("warning: {err}"));
    }
    report::line(&format!(
        "live: {short} ({ref_name}) in {slot}: {} -> {} (live after {}, done in {})",
        escape_path(&layout.link),
        record.link_target,
        report::seconds(time_to_live),
        report::seconds(total),
    ));
    Ok(ExitCode::Success)
}

/// Switches back to the release kept in the other slot (`[retire] keep_previous`) when it
/// holds `commit`: one rename, no rebuild. Returns `None` when no kept release matches.
/// The caller holds the target's lock.
pub fn switch_to_kept(
    config: &Config,
    repo: &Repo,
    layout: &Layout,
    commit: CommitId,
) -> Result<Option<ExitCode>, Error> {
    let Some(live) = layout.live()? else { return Ok(None) };
    let short = commit.short();
    if history::read_record(layout, live.slot)?.is_some_and(|record| record.commit == commit.hex())
    {
        report::line(&format!("{short} is already live in {}; nothing to do", live.slot));
        return Ok(Some(ExitCode::Success));
    }
    let kept = live.slot.other();
    let Some(mut record) = history::read_record(layout, kept)? else { return Ok(None) };
    if record.commit != commit.hex() || !layout.slot_dir(kept).is_dir() {
        return Ok(None);
    }
    report::line(&format!("rolling back to {short}, kept in {kept}: no rebuild"));
    let mut clock = Clock::start();
    let (activated, _) =
        clock.stage(Stage::Activate, || link::activate(layout, Path::new(&record.link_target)));
    activated?;
    let time_to_live = clock.started.elapsed();
    record.live_since = Some(history::timestamp(SystemTime::now()));
    history::write_record(layout, &record)?;
    record_deploy_refs(config, repo, commit, clock.started_at);
    let entry = HistoryEntry {
        started_at: history::timestamp(clock.started_at),
        commit: record.commit.clone(),
        ref_name: record.ref_name.clone(),
        slot: kept,
        result: "live".to_owned(),
        trigger: "rollback".to_owned(),
        pusher: history::pusher(),
        failed_stage: None,
        error: None,
        stages: clock.stages.clone(),
        time_to_live: Some(time_to_live.as_secs_f64()),
        total: clock.started.elapsed().as_secs_f64(),
    };
    history::append(layout, &entry)?;
    report::line(&format!(
        "live: {short} ({}) in {kept}: {} -> {} (live after {}, instant rollback; the release it replaced stays in {})",
        escape(&record.ref_name),
        escape_path(&layout.link),
        record.link_target,
        report::seconds(time_to_live),
        live.slot
    ));
    Ok(Some(ExitCode::Success))
}

/// Points `refs/deploys/live` at what went live, and leaves one ref per deploy, so that
/// `git fetch production 'refs/deploys/*:refs/deploys/*'` shows what is and was live. In
/// pre-receive mode the pushed objects are still in quarantine, so the post-receive hook does
/// it once git has accepted them.
pub fn record_deploy_refs(config: &Config, repo: &Repo, commit: CommitId, when: SystemTime) {
    if config.mode == config::Mode::PreReceive && std::env::var_os("GIT_QUARANTINE_PATH").is_some()
    {
        return;
    }
    let stamp = humantime::format_rfc3339_seconds(when).to_string().replace([':', '-'], "");
    let per_deploy = format!("refs/deploys/{stamp}-{}", commit.short());
    for name in [LIVE_REF, per_deploy.as_str()] {
        if let Err(err) = repo.set_ref(name, commit, "pushdeploy: deployed") {
            report::line(&format!("warning: cannot update {name}: {err}"));
        }
    }
}

/// The ref that names the live commit.
pub const LIVE_REF: &str = "refs/deploys/live";

/// Removes a slot's tree, or moves it aside if pushdeploy did not create it. Removing it drops
/// links to inodes the live release may share (a release hard-linked from it), which moves
/// their ctime; the live index is told that this window of ctimes is ours, so it does not
/// distrust every file for it.
fn remove_slot_tree(layout: &Layout, slot: Slot, live: Option<&Live>) -> Result<(), String> {
    let start = index::coarse_now();
    slots::remove_slot(layout, slot).map_err(|err| err.to_string())?;
    let end = index::seal_time();
    if let Some(live) = live.filter(|live| live.slot != slot) {
        index::add_window(layout, live.slot, (start, end));
    }
    Ok(())
}

/// Warns when anyone may write into the target: they could replace the link or a release.
fn warn_if_world_writable(target: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(target) else { return };
    if meta.permissions().mode() & 0o002 != 0 {
        report::line(&format!(
            "warning: target {} is writable by every user, who could replace the site; run `chmod o-w {}`",
            escape_path(target),
            escape_path(target)
        ));
    }
}

/// A release that went live.
struct Built {
    record: ReleaseRecord,
    /// Its files' index, when no build ran (see `index`).
    index: Option<Index>,
}

/// Moves the release kept in `slot` (`[retire] keep_previous`) aside while a deploy builds
/// there, so that a failed deploy never pushes a good release out: only a deploy that goes
/// live replaces it. Renames only; nothing is copied.
fn park_kept(layout: &Layout, slot: Slot) -> Result<(), String> {
    // Only a release of pushdeploy's own is kept; a directory it did not create goes aside.
    slots::set_aside_foreign_slot(layout, slot).map_err(|err| err.to_string())?;
    if !layout.record_path(slot).exists() || !layout.slot_dir(slot).is_dir() {
        return Ok(());
    }
    let (tree, record, index) = layout.parked(slot);
    let error = |err: std::io::Error| format!("cannot set the kept release in {slot} aside: {err}");
    fs::create_dir_all(layout.parked_dir(slot)).map_err(error)?;
    fs::rename(layout.slot_dir(slot), &tree).map_err(error)?;
    fs::rename(layout.record_path(slot), &record).map_err(error)?;
    match fs::rename(layout.index_path(slot), &index) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(error(err)),
        _ => Ok(()),
    }
}

/// Puts a parked release back into `slot`, replacing what a failed deploy left there.
fn restore_parked(layout: &Layout, slot: Slot) -> Result<(), String> {
    let (tree, record, index) = layout.parked(slot);
    if !tree.is_dir() {
        return Ok(());
    }
    let error = |err: std::io::Error| format!("cannot put the kept release back in {slot}: {err}");
    slots::remove_slot(layout, slot).map_err(|err| err.to_string())?;
    fs::rename(&tree, layout.slot_dir(slot)).map_err(error)?;
    slots::mark_slot(layout, slot).map_err(|err| err.to_string())?;
    for (parked, home) in [(record, layout.record_path(slot)), (index, layout.index_path(slot))] {
        match fs::rename(parked, home) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(error(err)),
            _ => {}
        }
    }
    slots::remove_path(&layout.parked_dir(slot)).map_err(|err| err.to_string())
}

/// Forgets what `slot` holds (its record and index), before it is emptied. A slot directory
/// pushdeploy did not create is moved aside first, while its record can still vouch for a
/// release made before pushdeploy recorded which slots it created.
fn forget_slot(layout: &Layout, slot: Slot) -> Result<(), String> {
    slots::set_aside_foreign_slot(layout, slot).map_err(|err| err.to_string())?;
    history::remove_record(layout, slot).map_err(|err| err.to_string())?;
    index::remove(layout, slot).map_err(|err| format!("cannot remove the index of {slot}: {err}"))
}

/// Builds and verifies the release in `slot`, up to the switch.
fn build_release(
    config: &Config,
    repo: &Repo,
    request: &Request,
    layout: &Layout,
    live: Option<&Live>,
    slot: Slot,
    clock: &mut Clock,
) -> Result<Built, Failure> {
    let retry = "fix the problem and push again, or run `pushdeploy deploy`";
    let (dir, _) = clock.stage(Stage::Prepare, || {
        // A build orphaned by a killed deploy must not write into the slot being prepared.
        build::stop_orphans(&layout.build_pgid_path(), &layout.target);
        // A kept release parked by a deploy that was killed goes back first; one parked from
        // the live slot is obsolete (the deploy that parked it went live).
        if let Some(live) = live {
            slots::remove_path(&layout.parked_dir(live.slot)).map_err(|err| err.to_string())?;
        }
        restore_parked(layout, slot)?;
        if config.retire.keep_previous {
            park_kept(layout, slot)?;
        }
        forget_slot(layout, slot)?;
        remove_slot_tree(layout, slot, live)?;
        slots::prepare(layout, slot).map_err(|err| err.to_string())
    });
    let dir = dir.map_err(|reason| Failure::new(Stage::Prepare, reason, retry))?;

    let (written, took) = clock.stage(Stage::Materialize, || {
        let entries = repo.tree_entries(request.commit).map_err(|err| {
            Failure::new(Stage::Materialize, err, "check the repository with `git fsck`")
        })?;
        check::check_tree(&entries, config.symlinks).map_err(|err| {
            Failure::new(
                Stage::Materialize,
                err,
                "remove or fix that path in the repository and push again",
            )
        })?;
        // Hard links are safe only while nothing writes into files in place; a build might, so
        // a release that is built is always written afresh.
        let no_build = build_command(config, request).is_none();
        let base_index = live.filter(|_| no_build).and_then(|live| trusted_index(layout, live));
        let base = base_index
            .as_ref()
            .map(|(live, index)| write::Base { dir: layout.slot_dir(live.slot), index });
        let full = |err: release::Error| {
            let hint = if err.is_no_space() {
                format!(
                    "free space on the filesystem of {}, then push again",
                    escape_path(&layout.target)
                )
            } else {
                retry.to_owned()
            };
            Failure::new(Stage::Materialize, err, hint)
        };
        write::check_space(repo, &entries, base.as_ref(), &layout.target).map_err(full)?;
        write::materialize(repo, &entries, &dir, base.as_ref(), config.umask, no_build)
            .map_err(full)
    });
    let (written, index) = written?;
    for warning in &written.warnings {
        report::line(&format!("warning: {warning}"));
    }
    let linked = match written.linked {
        0 => String::new(),
        n => format!(" and hard-linked {}", report::things(n, "unchanged file")),
    };
    report::line(&format!(
        "wrote {}{linked} ({}) in {}",
        report::things(written.files - written.linked, "file"),
        report::bytes(written.bytes),
        report::seconds(took)
    ));

    if request.options.skip_build && config.build.command.is_some() {
        report::line("build skipped, as asked (skip-build)");
    }
    if let Some(command) = build_command(config, request) {
        let cache = Cache::new(&layout.state, &config.build.cache, config.build.publish.as_deref());
        let build_failure = |err: &dyn fmt::Display| {
            Failure::new(Stage::Build, err, "fix the build and push again (its output is above)")
        };
        report::line(&format!("building: {}", escape(command)));
        let build = build::Build {
            command,
            dir: &dir,
            env: build_env(config, request, layout, slot, &dir),
            timeout: config.build.timeout,
            pgid_file: &layout.build_pgid_path(),
        };
        let (result, took) = clock.stage(Stage::Build, || {
            if request.options.no_cache {
                report::line("build cache: not used for this deploy");
            } else {
                cache
                    .restore(&dir)
                    .map_err(|err| build_failure(&err))?
                    .iter()
                    .for_each(|line| report::line(line));
            }
            build::run(&build).map_err(|err| build_failure(&err))?;
            cache.save(&dir).map_err(|err| {
                if err.is_no_space() {
                    let hint = format!(
                        "free space on the filesystem of {}, then push again",
                        escape_path(&layout.target)
                    );
                    Failure::new(Stage::Build, err, hint)
                } else {
                    build_failure(&err)
                }
            })
        });
        result?;
        report::line(&format!("built in {}", report::seconds(took)));
    }

    let link_target = match &config.build.publish {
        Some(publish) => Path::new(slot.name()).join(publish),
        None => PathBuf::from(slot.name()),
    };
    let mut record = release_record(request, slot, &link_target);
    // In this order: the grace step writes into what the build left, and the check sees both.
    let (verified, _) = clock.stage(Stage::Verify, || {
        verify(config, &dir)?;
        // A dry run stops before the switch: there is nothing to keep reachable, and it must
        // leave no trace of a grace in the live release's files either.
        let keeping = !config.retire.grace.is_zero() && !request.options.dry_run;
        if let Some(live) = live.filter(|_| keeping) {
            record.grace =
                carry_old_files(layout, live, &dir, publish(config), config.retire.grace)
                    .map_err(|reason| Failure::new(Stage::Verify, reason, retry))?;
        }
        // Without a build and a grace step, the release is the pushed tree, which `check_tree`
        // checked entry by entry before anything was written: nothing else can be in it.
        let built = build_command(config, request).is_some();
        if built || !record.grace.files.is_empty() {
            check::served(&dir, publish(config)).map_err(|err| {
                let hint = if built { BUILD_OUTPUT_HINT } else { retry };
                Failure::new(Stage::Verify, err, hint)
            })?;
        }
        Ok(())
    });
    verified?;
    Ok(Built { record, index })
}

/// Returns the build command this deploy runs, if any.
fn build_command<'c>(config: &'c Config, request: &Request) -> Option<&'c String> {
    config.build.command.as_ref().filter(|_| !request.options.skip_build)
}

/// Returns the live release's index when it describes the live release.
fn trusted_index<'l>(layout: &Layout, live: &'l Live) -> Option<(&'l Live, Index)> {
    let record = history::read_record(layout, live.slot).ok()??;
    let index = index::read(layout, live.slot)?;
    (index.commit == record.commit).then_some((live, index))
}

/// What to do about build output that `check::served` refused.
const BUILD_OUTPUT_HINT: &str = "make the build leave only files, directories and symlinks that stay inside the release, then push again";

/// Returns the served directory, relative to the release.
fn publish(config: &Config) -> &Path {
    config.build.publish.as_deref().unwrap_or(Path::new(""))
}

/// Keeps the live release's files that the new release in `dir` lacks reachable for the grace
/// period, under its served directory `publish`.
fn carry_old_files(
    layout: &Layout,
    live: &Live,
    dir: &Path,
    publish: &Path,
    grace: Duration,
) -> Result<Grace, String> {
    let old_grace = history::read_record(layout, live.slot)
        .map_err(|err| err.to_string())?
        .map(|record| record.grace)
        .unwrap_or_default();
    let carried = grace::carry(&layout.target.join(&live.link_target), &old_grace, dir, publish)
        .map_err(|err| format!("cannot keep the old release's files for `retire.grace`: {err}"))?;
    for warning in &carried.warnings {
        report::line(&format!("warning: {warning}"));
    }
    let kept = carried.grace;
    if !kept.files.is_empty() {
        report::line(&format!(
            "kept {} of the old release reachable for {} (retire.grace)",
            report::things(kept.files.len() as u64, "file"),
            humantime::format_duration(grace)
        ));
    }
    Ok(kept)
}

/// Starts `pushdeploy reap` in the background to remove kept files when their grace ends.
/// Its output goes nowhere: git waits for every holder of the hook's stderr to close it.
fn spawn_reaper(repo: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("reap")
            .arg("--repo")
            .arg(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    });
    if let Err(err) = spawned {
        report::line(&format!(
            "warning: cannot start `pushdeploy reap` ({err}); the kept files go at the next deploy"
        ));
    }
}

/// Checks that what the link will point at is a real, non-empty directory of the release.
fn verify(config: &Config, dir: &Path) -> Result<(), Failure> {
    let (served, what) = match &config.build.publish {
        Some(publish) => (dir.join(publish), format!("publish directory {}", escape_path(publish))),
        None => (dir.to_owned(), "release".to_owned()),
    };
    let hint = match &config.build.publish {
        Some(_) => format!(
            "make the build write it, or fix `build.publish` in {}",
            escape_path(&config.path)
        ),
        None => "push a commit that has files in it".to_owned(),
    };
    // lstat, not stat, on every component: a symlink anywhere on the way could lead anywhere.
    let problem = match check::publish_dir(dir, publish(config)) {
        Ok(()) => None,
        Err(check::PublishProblem::Symlink(path)) => {
            let reason = format!(
                "refused {}: is a symlink; the {what} and the directories above it must be real directories of the release",
                escape_path(&path)
            );
            return Err(Failure::new(Stage::Verify, reason, hint));
        }
        Err(check::PublishProblem::NotADirectory) => Some("is not a directory"),
        Err(check::PublishProblem::Missing) => Some("does not exist"),
        Err(check::PublishProblem::Unreadable(path, err)) => {
            let reason = format!("cannot check the {what}: {}: {err}", escape_path(&path));
            return Err(Failure::new(Stage::Verify, reason, hint));
        }
    };
    if let Some(problem) = problem {
        return Err(Failure::new(Stage::Verify, format!("the {what} {problem}"), hint));
    }
    let empty = fs::read_dir(&served).map(|mut entries| entries.next().is_none()).unwrap_or(true);
    if empty {
        return Err(Failure::new(Stage::Verify, format!("the {what} is empty"), hint));
    }
    Ok(())
}

fn build_env(
    config: &Config,
    request: &Request,
    layout: &Layout,
    slot: Slot,
    dir: &Path,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PUSHDEPLOY_COMMIT".to_owned(), request.commit.hex()),
        ("PUSHDEPLOY_REF".to_owned(), request.ref_name.clone()),
        ("PUSHDEPLOY_BRANCH".to_owned(), config.branch.clone()),
        ("PUSHDEPLOY_SLOT".to_owned(), slot.name().to_owned()),
        ("PUSHDEPLOY_RELEASE_DIR".to_owned(), dir.to_string_lossy().into_owned()),
        ("PUSHDEPLOY_TARGET".to_owned(), layout.target.to_string_lossy().into_owned()),
    ];
    env.extend(config.build.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn release_record(request: &Request, slot: Slot, link_target: &Path) -> ReleaseRecord {
    ReleaseRecord {
        slot,
        commit: request.commit.hex(),
        ref_name: request.ref_name.clone(),
        link_target: link_target.to_string_lossy().into_owned(),
        built_at: history::timestamp(SystemTime::now()),
        live_since: None,
        grace: Grace::default(),
    }
}

/// Says what is live, for a failure line: `blue, 1a2b3c4` or `nothing deployed yet`.
fn describe_live(layout: &Layout, live: Option<&Live>) -> String {
    match live {
        None => "nothing deployed yet".to_owned(),
        Some(live) => match history::read_record(layout, live.slot) {
            Ok(Some(record)) => {
                format!("{}, {}", live.slot, record.commit.get(..7).unwrap_or(&record.commit))
            }
            _ => live.slot.to_string(),
        },
    }
}
