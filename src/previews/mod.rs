//! Previews: a branch matching `[previews] branches` deploys into `TARGET/previews/<slug>/`,
//! a target of its own (slots, link, lock, history, build cache), with production's settings.
//!
//! Which previews exist is recorded in `TARGET/.pushdeploy/previews/<slug>.json` (the branch,
//! when it was made), changed only under `TARGET/.pushdeploy/previews.lock`; a preview
//! directory is removed only when such a record names it. Production's link, lock, history
//! and deploy refs are never touched.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Previews};
use crate::deploy::{self, Options, Request};
use crate::error::{Error, ExitCode, Kind};
use crate::git::{self, CommitId, Repo};
use crate::report::{self, escape, escape_path};
use crate::target_dir::history::Trigger;
use crate::target_dir::layout::make_state_dir;
use crate::target_dir::{Layout, lock, record};

/// The directory of the previews inside production's target.
pub const DIR: &str = "previews";
/// The longest slug made from a branch name (a DNS label holds 63 bytes; a hash may follow).
const SLUG_MAX: usize = 48;

/// What the record of one preview says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    branch: String,
    /// Seconds since the epoch when it was made: the oldest goes first beyond `max`.
    created: u64,
}

/// Returns the `[previews]` table when `branch` (short name) gets a preview: not the deploy
/// branch, matched by a pattern, and a plain name (letters, digits, `._-/`).
pub fn previewed<'a>(config: &'a Config, branch: &str) -> Option<&'a Previews> {
    let previews = config.previews.as_ref()?;
    let plain =
        branch.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    (branch != config.branch && plain && previews.matches(branch)).then_some(previews)
}

/// Returns the slug of a branch: lowercase letters, digits and `-` (`feature/Login` →
/// `feature-login`), at most [`SLUG_MAX`] bytes.
pub fn slug(branch: &str) -> String {
    let mut slug = String::new();
    for c in branch.chars() {
        match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => slug.push(c),
            _ if !slug.ends_with('-') && !slug.is_empty() => slug.push('-'),
            _ => {}
        }
    }
    slug.truncate(SLUG_MAX);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "preview".to_owned() } else { slug.to_owned() }
}

/// Where production's target keeps its previews, and their records.
struct Registry {
    /// `TARGET/previews`.
    dir: PathBuf,
    /// `TARGET/.pushdeploy/previews`.
    records: PathBuf,
    lock: PathBuf,
}

impl Registry {
    fn new(layout: &Layout) -> Registry {
        Registry {
            dir: layout.target.join(DIR),
            records: layout.state.join("previews"),
            lock: layout.state.join("previews.lock"),
        }
    }

    fn record_path(&self, slug: &str) -> PathBuf {
        self.records.join(format!("{slug}.json"))
    }

    /// Returns every recorded preview: `(slug, entry)`, oldest first.
    fn entries(&self) -> Result<Vec<(String, Entry)>, Error> {
        let read_dir = match fs::read_dir(&self.records) {
            Ok(read_dir) => read_dir,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&self.records, err)),
        };
        let mut entries = Vec::new();
        for item in read_dir {
            let path = item.map_err(|err| io_error(&self.records, err))?.path();
            let Some(slug) =
                path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let text = fs::read_to_string(&path).map_err(|err| io_error(&path, err))?;
            if let Ok(entry) = serde_json::from_str::<Entry>(&text) {
                entries.push((slug.to_owned(), entry));
            }
        }
        entries.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
        Ok(entries)
    }

    /// Writes a preview's record by a temporary name (created new, through no symlink) and a
    /// rename.
    fn write(&self, slug: &str, entry: &Entry) -> Result<(), Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.record_path(slug);
        let temp = self.records.join(format!(".{slug}.json.new"));
        let text = serde_json::to_vec(entry).map_err(|err| io_error(&path, err.into()))?;
        match fs::remove_file(&temp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_error(&temp, err)),
            _ => {}
        }
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temp)
            .and_then(|mut file| file.write_all(&text).and_then(|()| file.sync_all()))
            .and_then(|()| fs::rename(&temp, &path));
        written.map_err(|err| io_error(&path, err))
    }

    /// Removes the preview `slug`: waits for a deploy of it to end (its own lock), moves its
    /// directory out of the way in one rename, deletes it, then its record.
    fn remove(&self, slug: &str) -> Result<(), Error> {
        let preview = self.dir.join(slug);
        if fs::symlink_metadata(&preview).is_ok_and(|meta| meta.is_dir()) {
            let state = preview.join(".pushdeploy");
            let _lock = match fs::symlink_metadata(&state).is_ok_and(|meta| meta.is_dir()) {
                true => Some(acquire(&state.join("lock"), |_| {
                    report::line(&format!(
                        "waiting for the deploy of the preview {slug} to finish"
                    ));
                })?),
                false => None,
            };
            let doomed = self.dir.join(format!(".removed-{slug}-{}", std::process::id()));
            fs::rename(&preview, &doomed).map_err(|err| io_error(&preview, err))?;
            // remove_dir_all does not follow symlinks: a link in a release is removed, never
            // what it points at.
            fs::remove_dir_all(&doomed).map_err(|err| io_error(&doomed, err))?;
        }
        let record = self.record_path(slug);
        match fs::remove_file(&record) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error(&record, err)),
            _ => Ok(()),
        }
    }
}

/// Takes the lock at `path`, refusing a symlink there: taking a lock truncates the file.
fn acquire(path: &Path, on_wait: impl FnOnce(Option<u32>)) -> Result<lock::DeployLock, Error> {
    if fs::symlink_metadata(path).is_ok_and(|meta| !meta.is_file()) {
        return Err(Error::user(
            format!("{} is not a regular file; pushdeploy does not follow it", escape_path(path)),
            format!("move {} away; pushdeploy makes its lock file there", escape_path(path)),
        ));
    }
    Ok(lock::acquire(path, on_wait)?)
}

fn io_error(path: &Path, err: io::Error) -> Error {
    Error::new(Kind::Io, format!("cannot update the previews at {}", escape_path(path))).cause(err)
}

/// Returns the configuration a preview deploys with: production's, with the preview's target
/// and branch, no skew protection (a preview's visitors need none) and nothing kept for an
/// instant rollback; the build sees `PUSHDEPLOY_PREVIEW` (the slug) and, when set,
/// `PUSHDEPLOY_PREVIEW_URL`.
fn preview_config(config: &Config, previews: &Previews, branch: &str, slug: &str) -> Config {
    let mut preview = config.clone();
    preview.target = config.target.join(DIR).join(slug);
    preview.branch = branch.to_owned();
    preview.retire = Default::default();
    preview.webhook = None;
    preview.previews = None;
    preview.preview_of = Some(slug.to_owned());
    let env = &mut preview.build.env;
    env.entry("PUSHDEPLOY_PREVIEW".into()).or_insert_with(|| slug.to_owned());
    if let Some(url) = previews.url_of(slug) {
        env.entry("PUSHDEPLOY_PREVIEW_URL".into()).or_insert(url);
    }
    preview
}

/// Deploys `commit` of `branch` into its preview, making the preview (and removing the oldest
/// beyond `max`) first. Prints the preview's address once it is live, when `url` is set.
pub fn deploy(
    config: &Config,
    repo: &Repo,
    branch: &str,
    commit: CommitId,
    options: Options,
    trigger: Trigger,
) -> Result<ExitCode, Error> {
    let Some(previews) = previewed(config, branch) else {
        return Err(Error::user(
            format!("{} does not get a preview", escape(branch)),
            "add a pattern that matches it to `[previews] branches`",
        ));
    };
    let layout = Layout::new(config);
    let slug = make(config, previews, &layout, branch)?;
    let preview = preview_config(config, previews, branch, &slug);
    report::line(&format!("preview of {}: {}", escape(branch), escape_path(&preview.target)));
    let request = Request {
        commit,
        ref_name: format!("refs/heads/{branch}"),
        skip_if_superseded: true,
        options,
        trigger,
    };
    let code = deploy::deploy(&preview, repo, &request)?;
    let preview_layout = Layout::new(&preview);
    if let (Some(url), Some(live)) = (previews.url_of(&slug), preview_layout.live()?)
        && record::read(&preview_layout, live.slot)?.is_some_and(|record| record.commit == commit)
        && !options.dry_run
    {
        report::line(&format!("preview: {url}"));
    }
    Ok(code)
}

/// Returns the slug of `branch`'s preview, making its directory and record when it has none.
fn make(
    config: &Config,
    previews: &Previews,
    layout: &Layout,
    branch: &str,
) -> Result<String, Error> {
    let registry = Registry::new(layout);
    layout.ensure_state_dir().map_err(|err| {
        Error::user(
            "cannot set up pushdeploy's state directory",
            format!("check {}", escape_path(&layout.state)),
        )
        .cause(err)
    })?;
    make_state_dir(&registry.records)?;
    let _lock = acquire(&registry.lock, |_| {})?;
    let mut entries = registry.entries()?;
    if let Some((slug, _)) = entries.iter().find(|(_, entry)| entry.branch == branch) {
        make_state_dir(&registry.dir)?;
        make_state_dir(&registry.dir.join(slug))?;
        return Ok(slug.clone());
    }
    let mut slug = self::slug(branch);
    if entries.iter().any(|(taken, _)| *taken == slug) || slug == "preview" && branch != "preview" {
        // Two branches with one slug (`feature/a` and `feature-a`): the later one gets a
        // hash of its name, the same at every push.
        slug = format!("{slug}-{}", &git::fingerprint(branch.as_bytes())[..6]);
    }
    while entries.len() >= previews.max {
        let (oldest, entry) = entries.remove(0);
        report::line(&format!(
            "removing the preview of {} ({oldest}), the oldest: `[previews] max = {}` in {}",
            escape(&entry.branch),
            previews.max,
            escape_path(&config.path)
        ));
        registry.remove(&oldest)?;
    }
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    registry.write(&slug, &Entry { branch: branch.to_owned(), created })?;
    make_state_dir(&registry.dir)?;
    make_state_dir(&registry.dir.join(&slug))?;
    Ok(slug)
}

/// Removes the preview of a deleted branch; says so, or that there was none.
pub fn remove(config: &Config, branch: &str) -> Result<ExitCode, Error> {
    let layout = Layout::new(config);
    let registry = Registry::new(&layout);
    if !registry.records.is_dir() {
        report::line(&format!("{} was deleted; it had no preview", escape(branch)));
        return Ok(ExitCode::Success);
    }
    let _lock = acquire(&registry.lock, |_| {})?;
    let entries = registry.entries()?;
    let Some((slug, _)) = entries.iter().find(|(_, entry)| entry.branch == branch) else {
        report::line(&format!("{} was deleted; it had no preview", escape(branch)));
        return Ok(ExitCode::Success);
    };
    registry.remove(slug)?;
    report::line(&format!("{} was deleted: removed its preview {slug}", escape(branch)));
    Ok(ExitCode::Success)
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(slug("feature/Login"), "feature-login");
        assert_eq!(slug("fix/a..b__c"), "fix-a-b-c");
        assert_eq!(slug("-x-"), "x");
        assert_eq!(slug("___"), "preview");
        assert!(slug(&"a".repeat(100)).len() <= 48);
    }
}
