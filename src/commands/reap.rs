//! `pushdeploy reap`: removes the release a deploy retired, then files kept for skew protection
//! once their grace has passed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, ExitCode};
use crate::release::grace;
use crate::target_dir::lock;
use crate::target_dir::{self, record, slots};

/// Removes the release the last deploy retired, and the old release's files kept by
/// `[retire] grace` once their time is up, then exits.
///
/// A deploy starts this in the background, so that the push is over once the link switched;
/// it is safe to run by hand or from cron (after a reboot, say). It waits for the deploy lock
/// each time it changes the live release.
#[derive(Debug, Args)]
pub struct ReapArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
}

pub fn run(args: ReapArgs) -> Result<ExitCode, Error> {
    let super::Site { layout, .. } = super::open_site(args.repo)?;
    // The target may be gone (a test's temp dir, a removed site): nothing to do.
    if !layout.state.is_dir() {
        return Ok(ExitCode::Success);
    }
    slots::empty_trash_for_all(&layout)?;
    // Without files kept for the grace there is nothing more to do: the deploy lock is not
    // taken, so no push has to wait for this process.
    let live = layout.live()?;
    let grace = match &live {
        Some(live) => record::read(&layout, live.slot)?.map(|record| record.grace),
        None => None,
    };
    if grace.is_none_or(|grace| grace.is_empty()) {
        return Ok(ExitCode::Success);
    }
    loop {
        let wait = {
            // The target may be gone (a test's temp dir, a removed site): nothing to do.
            if !layout.state.is_dir() {
                return Ok(ExitCode::Success);
            }
            let _lock = lock::acquire(&layout.lock_path(), |_| {})?;
            let Some(live) = layout.live()? else {
                return Ok(ExitCode::Success);
            };
            let Some(mut record) = record::read(&layout, live.slot)? else {
                return Ok(ExitCode::Success);
            };
            let served = layout.target.join(&live.link_target);
            let left = grace::remove_expired(&served, &record.grace)
                .map_err(|err| target_dir::Error::Io { path: err.path, source: err.source })?;
            if left != record.grace {
                record.grace = left;
                record::write(&layout, &record)?;
            }
            match record.grace.next_deadline() {
                None => return Ok(ExitCode::Success),
                Some(deadline) => deadline.saturating_sub(record::now_ms()),
            }
        };
        std::thread::sleep(Duration::from_millis(wait.max(10)));
    }
}
