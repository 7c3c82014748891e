//! The target's layout: the two slots, where everything lives under the target directory,
//! what the link serves now, and pushdeploy's state directory.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::report::escape_path;

/// The build tools whose caches every build gets in `TARGET/.pushdeploy/tool-cache/<tool>`,
/// with the variable that points the tool there: kept across deploys and slots, owned by the
/// deploying user, never in the git user's home or a directory every user shares.
pub const TOOL_CACHES: [(&str, &str); 3] =
    [("hugo", "HUGO_CACHEDIR"), ("npm", "npm_config_cache"), ("pip", "PIP_CACHE_DIR")];

/// One of the two directories a release can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::Blue, Slot::Green];

    /// Returns the slot's directory name.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Returns the other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    fn from_name(name: &OsStr) -> Option<Slot> {
        Slot::ALL.into_iter().find(|slot| OsStr::new(slot.name()) == name)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name()) // pad, so `{:<5}` lines columns up
    }
}

/// What can go wrong with the target's layout: the link, the slots, the state directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", escape_path(path))]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} is a {kind}, not a symlink; move it away (pushdeploy replaces it with a link to the live release)",
        escape_path(path)
    )]
    NotALink { path: PathBuf, kind: &'static str },
    #[error(
        "{} points at {}, not at a pushdeploy slot; remove it or configure another `link`",
        escape_path(path),
        escape_path(target)
    )]
    ForeignLink { path: PathBuf, target: PathBuf },
    /// Something in pushdeploy's state directory that pushdeploy did not make, or not as it
    /// makes it; `hint` says what to do.
    #[error("{} {problem}", escape_path(path))]
    StateDir { path: PathBuf, problem: String, hint: String },
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_owned(), source }
    }
}

/// Where everything lives under the target directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub target: PathBuf,
    pub link: PathBuf,
    /// `TARGET/.pushdeploy`: lock, history, release records. Never under the link.
    pub state: PathBuf,
    link_name: String,
}

/// What the link serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub slot: Slot,
    /// The link's own (relative) target, e.g. `green/public`.
    pub link_target: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        Layout::at(&config.target, &config.link)
    }

    /// Returns the layout of the target `target` whose link is named `link`.
    pub fn at(target: &Path, link: &str) -> Layout {
        Layout {
            target: target.to_owned(),
            link: target.join(link),
            state: target.join(".pushdeploy"),
            link_name: link.to_owned(),
        }
    }

    /// Says so when every user may write into the target, who could replace the link or a
    /// release: what is wrong, and the command that fixes it.
    pub fn world_writable_target(&self) -> Option<(String, String)> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&self.target).ok()?;
        (meta.permissions().mode() & 0o002 != 0).then(|| {
            let target = escape_path(&self.target);
            (
                format!("target {target} is writable by every user, who could replace the site"),
                format!("run `chmod o-w {target}`"),
            )
        })
    }

    /// Returns a slot's directory.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.target.join(slot.name())
    }

    /// Returns the deploy lock's file.
    pub fn lock_path(&self) -> PathBuf {
        self.state.join("lock")
    }

    /// Returns the file that holds a running build's process group id.
    pub fn build_pgid_path(&self) -> PathBuf {
        self.state.join("build.pgid")
    }

    /// Returns where the caches of build tools live (`TOOL_CACHES`), apart from the
    /// `[build] cache` paths kept in `cache/`, so that no cached path can collide with them.
    pub fn tool_caches(&self) -> PathBuf {
        self.state.join("tool-cache")
    }

    /// Returns the git directory a build with `[build] git_history` sees as the release's.
    pub fn build_git_dir(&self) -> PathBuf {
        self.state.join("build.git")
    }

    /// Returns where a retired tree waits to be removed.
    pub fn trash(&self) -> PathBuf {
        self.state.join("trash")
    }

    /// Returns the lock held by whoever empties the trash (a detached `pushdeploy reap`, or
    /// the next deploy finishing what it left).
    pub fn trash_lock_path(&self) -> PathBuf {
        self.state.join("trash.lock")
    }

    /// The temporary link that is renamed over the live one.
    pub fn new_link(&self) -> PathBuf {
        self.target.join(format!(".{}.pushdeploy-new", self.link_name))
    }

    /// Reads the link: `None` before the first deploy.
    pub fn live(&self) -> Result<Option<Live>, Error> {
        let meta = match fs::symlink_metadata(&self.link) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io { path: self.link.clone(), source });
            }
        };
        if !meta.file_type().is_symlink() {
            let kind = if meta.is_dir() { "directory" } else { "file" };
            return Err(Error::NotALink { path: self.link.clone(), kind });
        }
        let link_target = fs::read_link(&self.link).map_err(Error::io(&self.link))?;
        let slot = match link_target.components().next() {
            Some(Component::Normal(first)) => Slot::from_name(first),
            _ => None,
        };
        match slot {
            Some(slot) => Ok(Some(Live { slot, link_target })),
            None => Err(Error::ForeignLink { path: self.link.clone(), target: link_target }),
        }
    }

    /// Creates the target's state directory and the directories in it when missing, and
    /// checks that they, and whatever else pushdeploy keeps there, are what pushdeploy makes.
    ///
    /// Each is made with one `mkdir` and then checked with `lstat`: a planted symlink (say
    /// `.pushdeploy -> /home/alice`) is refused, never followed, since a deploy removes trees,
    /// truncates its lock and writes its records in there.
    pub fn ensure_state_dir(&self) -> Result<(), Error> {
        make_state_dir(&self.state)?;
        make_state_dir(&self.records_dir())?;
        make_state_dir(&self.slots_dir())?;
        self.check_state()
    }

    /// Checks, creating nothing, that the state directory and what pushdeploy keeps in it are
    /// real directories and files owned by this user, not symlinks; a missing one is fine.
    pub fn check_state(&self) -> Result<(), Error> {
        self.check_state_owned_by(nix::unistd::geteuid().as_raw())
    }

    /// Checks the state directory as [`Layout::check_state`] does, for the user `uid` who
    /// deploys (`doctor` run by root looks at it as the git user's).
    pub fn check_state_owned_by(&self, uid: u32) -> Result<(), Error> {
        let dirs = [
            self.state.clone(),
            self.records_dir(),
            self.slots_dir(),
            self.trash(),
            self.state.join("parked"),
            self.state.join("kept"),
            self.state.join("cache"),
            self.state.join("cache.partial"),
            self.tool_caches(),
            self.build_git_dir(),
            self.submodules_dir(),
            self.logs_dir(),
        ];
        let tools = TOOL_CACHES.map(|(tool, _)| self.tool_caches().join(tool));
        for dir in dirs.iter().chain(&tools) {
            check_state_entry(dir, true, uid)?;
        }
        let files = [
            self.lock_path(),
            self.trash_lock_path(),
            self.build_pgid_path(),
            self.state.join("history.jsonl"),
        ];
        for file in files {
            check_state_entry(&file, false, uid)?;
        }
        Ok(())
    }

    /// Returns where the output of each run is kept (see `logs`).
    pub fn logs_dir(&self) -> PathBuf {
        self.state.join("logs")
    }

    /// Returns where the caches of submodules' repositories are kept (bare repositories).
    pub fn submodules_dir(&self) -> PathBuf {
        self.state.join("submodules")
    }

    /// Returns where pushdeploy records which slot directories it created.
    pub fn slots_dir(&self) -> PathBuf {
        self.state.join("slots")
    }

    /// Returns the record that `slot`'s directory is pushdeploy's: `pending` while it is being
    /// made, then its `dev:inode`.
    pub fn slot_marker(&self, slot: Slot) -> PathBuf {
        self.slots_dir().join(slot.name())
    }

    /// Returns where the record and index of each slot's release are kept.
    pub fn records_dir(&self) -> PathBuf {
        self.state.join("releases")
    }

    /// Returns the record of what `slot` holds (see `history`).
    pub fn record_path(&self, slot: Slot) -> PathBuf {
        self.records_dir().join(format!("{}.json", slot.name()))
    }

    /// Returns the index of `slot`'s files (see `index`).
    pub fn index_path(&self, slot: Slot) -> PathBuf {
        self.records_dir().join(format!("{}.index", slot.name()))
    }

    /// Returns where a recycled release waits between `.pushdeploy/kept/` and its slot.
    pub fn recycled_dir(&self) -> PathBuf {
        self.state.join("recycled")
    }

    /// Returns where the release kept in `slot` waits while a deploy builds there.
    pub fn parked_dir(&self, slot: Slot) -> PathBuf {
        self.state.join("parked").join(slot.name())
    }

    /// Returns the parked release of `slot`, with its record and index: `(tree, record, index)`.
    pub fn parked(&self, slot: Slot) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.parked_dir(slot);
        (dir.join("release"), dir.join("record.json"), dir.join("index"))
    }
}

/// Creates a directory of pushdeploy's state when missing; an existing one is checked later.
pub fn make_state_dir(path: &Path) -> Result<(), Error> {
    match DirBuilder::new().create(path) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            Err(Error::Io { path: path.to_owned(), source: err })
        }
        _ => check_state_entry(path, true, nix::unistd::geteuid().as_raw()),
    }
}

/// Checks with `lstat` that `path`, when it exists, is a directory (or a regular file) owned
/// by this user, not a symlink.
fn check_state_entry(path: &Path, dir: bool, me: u32) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
    };
    let kind = meta.file_type();
    let what = if dir { "a directory" } else { "a file" };
    let planted = |problem: String| Error::StateDir {
        path: path.to_owned(),
        problem,
        hint: format!(
            "move {} away, and pushdeploy makes a real {} there at the next deploy (or put back the one that was there)",
            escape_path(path),
            if dir { "directory" } else { "file" }
        ),
    };
    if kind.is_symlink() {
        return Err(planted(format!("is a symlink, not {what}; pushdeploy does not follow it")));
    }
    if dir && !kind.is_dir() {
        return Err(planted("is a file, not a directory".into()));
    }
    if !dir && !kind.is_file() {
        return Err(planted("is not a regular file".into()));
    }
    if meta.uid() != me {
        return Err(Error::StateDir {
            path: path.to_owned(),
            problem: format!("is owned by uid {}, not by this user (uid {me})", meta.uid()),
            hint: format!(
                "run pushdeploy as the user that owns {}, or `chown -R` it to this user",
                escape_path(path)
            ),
        });
    }
    Ok(())
}
