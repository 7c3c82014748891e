//! What a deploy left in the target and beside it: directory listings, refusals, leftovers.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::{LINK, TestEnv, short};

/// Returns the final line of a deploy refused in materialize because of `what`, while
/// `commit` stays live in `slot`.
pub fn refusal(what: &str, slot: &str, commit: &str) -> String {
    format!(
        "pushdeploy: failed at materialize: {what}; the live site is unchanged ({slot}, {}); \
         remove or fix that path in the repository and push again",
        short(commit)
    )
}

/// Returns the names in a directory, sorted.
#[track_caller]
pub fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Returns a set of names, for comparing with [`names`].
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// Asserts a deploy left nothing behind: only the live slot, no temporary link, no trash, no
/// recorded build, and no process working in the target.
#[track_caller]
pub fn assert_no_leftovers(env: &TestEnv, context: &str) {
    let slot = env.live_slot();
    assert_eq!(names(&env.target), set(&[".pushdeploy", &slot, LINK]), "{context}");
    // The old release is removed by a detached `pushdeploy reap` once the push is over.
    let trash = env.target.join(".pushdeploy/trash");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while trash.exists() && !names(&trash).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if trash.exists() {
        assert_eq!(names(&trash), BTreeSet::new(), "{context}: trash left");
    }
    let pgid = env.target.join(".pushdeploy/build.pgid");
    assert!(!pgid.exists(), "{context}: {} left", pgid.display());
    let stray = processes_working_under(&env.target);
    assert!(stray.is_empty(), "{context}: processes still work in the target: {stray:?}");
}

/// Returns `pid: command line` of every live process whose working directory is under `dir`.
fn processes_working_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|entry| {
            fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .map(|entry| {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline)
            )
        })
        .collect()
}
