//! `TestEnv`: a temp dir with a bare repository, a target and a work clone; hermetic commands.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{BIN, Cmd, LINK, LiveSite, Output, toml_str};

/// Author and committer date of every commit, so commit ids are the same on every run.
const FIXED_DATE: &str = "2001-02-03T04:05:06+00:00";

/// A temporary world: `site.git` (bare), `www` (the deploy target), `work` (a clone).
pub struct TestEnv {
    tmp: TempDir,
    /// The temporary directory, canonicalized.
    pub root: PathBuf,
    pub bare: PathBuf,
    pub target: PathBuf,
    pub work: PathBuf,
    home: PathBuf,
    /// Set on every command after the hermetic environment (see [`TestEnv::with_env`]).
    extra_env: Vec<(OsString, OsString)>,
    /// The uid and gid every command runs as (see [`TestEnv::owned_by`]); `None`: this process's.
    user: Option<(u32, u32)>,
}

impl TestEnv {
    /// Pushes (forced) a commit whose tree is `index.html` plus `extra`, entries written
    /// without the validation `git add` would apply.
    #[track_caller]
    pub fn push_crafted(&self, extra: &[(&str, &[u8], &str)]) -> Output {
        let index = self.hash_blob(b"crafted\n");
        let mut entries = vec![("100644", b"index.html".as_slice(), index.as_str())];
        entries.extend_from_slice(extra);
        let tree = self.hash_tree(&entries);
        let commit = self.commit_tree(&tree, "crafted");
        self.push_ref(&format!("+{commit}:refs/heads/main"))
    }

    /// Inits, pushes a first site (`index.html`, `css/style.css`) into blue, and returns the
    /// environment, that commit and what is served.
    #[track_caller]
    pub fn with_live_site() -> (TestEnv, String, LiveSite) {
        let env = TestEnv::new();
        env.init(&[]);
        env.write("index.html", "v1\n");
        env.write("css/style.css", "body {}\n");
        let commit = env.commit_all("v1");
        env.push().assert_live(&commit, "refs/heads/main", "blue");
        let live = env.live_site();
        (env, commit, live)
    }

    pub fn new() -> Self {
        let tmp =
            tempfile::Builder::new().prefix("pushdeploy-test-").tempdir().expect("create temp dir");
        let root = tmp.path().canonicalize().expect("canonicalize temp dir");
        let home = root.join("home");
        fs::create_dir(&home).expect("create HOME");
        Self {
            bare: root.join("site.git"),
            target: root.join("www"),
            work: root.join("work"),
            home,
            root,
            tmp,
            extra_env: Vec::new(),
            user: None,
        }
    }

    /// Sets `key` to `value` for every command, e.g. `PATH` with a given Hugo first.
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Gives the temp dir to `uid:gid` and runs every command as that user (with `setpriv`,
    /// so only as root): a second site on the same machine, deployed by another user.
    #[track_caller]
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Self {
        let owner = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
        for dir in [&self.root, &self.home] {
            nix::unistd::chown(dir, owner.0, owner.1)
                .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        }
        self.user = Some((uid, gid));
        self
    }

    /// Returns the uid and gid every command runs as, when [`TestEnv::owned_by`] set them.
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// Returns a command for `program` with the hermetic environment. Every command the tests
    /// run goes through here.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Cmd {
        self.command_as(self.user, program)
    }

    /// Returns [`TestEnv::command`] run as this process's user (root) even when the temp dir
    /// is another user's: `init --app`, which root runs for the git user.
    pub fn root_command(&self, program: impl AsRef<OsStr>) -> Cmd {
        self.command_as(None, program)
    }

    fn command_as(&self, user: Option<(u32, u32)>, program: impl AsRef<OsStr>) -> Cmd {
        let mut command = match user {
            Some((uid, gid)) => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .args([
                        format!("--reuid={uid}"),
                        format!("--regid={gid}"),
                        "--clear-groups".into(),
                    ])
                    .arg(program);
                setpriv
            }
            None => Command::new(program),
        };
        for (key, _) in std::env::vars_os() {
            let leaks = key.to_str().is_none_or(|key| {
                key.starts_with("GIT_")
                    || key.starts_with("PUSHDEPLOY_")
                    || matches!(key, "XDG_CONFIG_HOME" | "EMAIL" | "RUST_LOG")
            });
            if leaks {
                command.env_remove(&key);
            }
        }
        command
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_AUTHOR_DATE", FIXED_DATE)
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_COMMITTER_DATE", FIXED_DATE)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .current_dir(&self.root);
        Cmd { command, stdin: None, tmp_paths: self.tmp_paths() }
    }

    /// The temporary directory as spelled in output, longest first.
    fn tmp_paths(&self) -> Vec<String> {
        let mut paths = vec![
            self.root.to_string_lossy().into_owned(),
            self.tmp.path().to_string_lossy().into_owned(),
        ];
        paths.sort_by_key(|path| std::cmp::Reverse(path.len()));
        paths.dedup();
        paths
    }

    /// Returns a `git` command run in `dir`.
    pub fn git_in(&self, dir: &Path) -> Cmd {
        self.command("git").args(["-c", "init.defaultBranch=main"]).current_dir(dir)
    }

    /// Returns a `git` command run in the work clone.
    pub fn git(&self) -> Cmd {
        self.git_in(&self.work)
    }

    /// Returns a `pushdeploy` command run in the temp dir.
    pub fn pushdeploy(&self) -> Cmd {
        self.command(BIN)
    }

    /// Returns `pushdeploy init <bare> --target <target> EXTRA...`.
    pub fn init_cmd(&self, extra: &[&str]) -> Cmd {
        self.pushdeploy().arg("init").arg(&self.bare).arg("--target").arg(&self.target).args(extra)
    }

    /// Runs `pushdeploy init` (expecting success), then clones the bare repo into `work`.
    #[track_caller]
    pub fn init(&self, extra: &[&str]) -> Output {
        let output = self.init_cmd(extra).success();
        self.clone_work();
        output
    }

    /// Clones the bare repository into `work`.
    #[track_caller]
    pub fn clone_work(&self) {
        let _ = self.git_in(&self.root).arg("clone").arg(&self.bare).arg(&self.work).success();
    }

    /// Writes `contents` to `path` (relative to the work clone), creating parent directories.
    #[track_caller]
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        let path = self.work.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent directories");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Writes an executable file (mode 0755) in the work clone.
    #[track_caller]
    pub fn write_exec(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        self.write(&path, contents);
        let path = self.work.join(path);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }

    /// Creates the symlink `path -> target` in the work clone.
    #[track_caller]
    pub fn symlink(&self, path: impl AsRef<Path>, target: impl AsRef<Path>) {
        let path = self.work.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent directories");
        }
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
    }

    /// Removes a file or directory from the work clone.
    #[track_caller]
    pub fn remove(&self, path: impl AsRef<Path>) {
        let path = self.work.join(path);
        let result = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        result.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// Commits everything in the work clone; returns the full commit id.
    #[track_caller]
    pub fn commit_all(&self, message: &str) -> String {
        let _ = self.git().args(["add", "--all"]).success();
        let _ = self.git().args(["commit", "--quiet", "-m", message]).success();
        self.rev_parse("HEAD")
    }

    /// Resolves `rev` in the work clone to a full object id.
    #[track_caller]
    pub fn rev_parse(&self, rev: &str) -> String {
        let output = self.git().args(["rev-parse", "--verify", rev]).success();
        output.stdout.trim().to_owned()
    }

    /// Runs `git push origin main` from the work clone.
    #[track_caller]
    pub fn push(&self) -> Output {
        self.push_ref("main")
    }

    /// Runs `git push origin REFSPEC` from the work clone. Git reports success even when the
    /// post-receive hook fails, so this always expects success.
    #[track_caller]
    pub fn push_ref(&self, refspec: &str) -> Output {
        self.git().args(["push", "origin", refspec]).success()
    }

    /// Writes `contents` (raw, unvalidated) as a blob in the work clone; returns its id.
    #[track_caller]
    pub fn hash_blob(&self, contents: &[u8]) -> String {
        let output = self.git().args(["hash-object", "-w", "--stdin"]).stdin(contents).success();
        output.stdout.trim().to_owned()
    }

    /// Writes a tree object from `(mode, name, id)` entries without any validation of the
    /// names, the way an attacker would craft one; returns its id.
    #[track_caller]
    pub fn hash_tree(&self, entries: &[(&str, &[u8], &str)]) -> String {
        let mut sorted = entries.to_vec();
        // Git orders tree entries as if directory names ended in '/'.
        sorted.sort_by_key(|(mode, name, _)| {
            let mut key = name.to_vec();
            if *mode == "40000" {
                key.push(b'/');
            }
            key
        });
        let mut raw = Vec::new();
        for (mode, name, id) in sorted {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend(decode_hex(id));
        }
        let output = self
            .git()
            .args(["hash-object", "-t", "tree", "-w", "--literally", "--stdin"])
            .stdin(raw)
            .success();
        output.stdout.trim().to_owned()
    }

    /// Creates a commit of `tree` on top of the work clone's HEAD; returns its id.
    #[track_caller]
    pub fn commit_tree(&self, tree: &str, message: &str) -> String {
        let output = self.git().args(["commit-tree", tree, "-p", "HEAD", "-m", message]).success();
        output.stdout.trim().to_owned()
    }

    /// Returns the config `pushdeploy init` writes by default, as TOML, for tests to extend.
    pub fn base_config(&self) -> String {
        format!(
            "branch = \"main\"\ntarget = {}\nlink = \"{LINK}\"\n",
            toml_str(&self.target.to_string_lossy())
        )
    }

    /// Overwrites `site.git/pushdeploy.toml`.
    #[track_caller]
    pub fn write_config(&self, toml: &str) {
        fs::write(self.bare.join("pushdeploy.toml"), toml).expect("write pushdeploy.toml");
    }

    /// Returns the path of the served symlink.
    pub fn link_path(&self) -> PathBuf {
        self.target.join(LINK)
    }

    /// Returns the served symlink's target as written (`readlink`).
    #[track_caller]
    pub fn link_target(&self) -> PathBuf {
        let link = self.link_path();
        fs::read_link(&link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()))
    }

    /// Returns the directory the served symlink resolves to.
    #[track_caller]
    pub fn live_dir(&self) -> PathBuf {
        let link = self.link_path();
        link.canonicalize().unwrap_or_else(|e| panic!("resolve {}: {e}", link.display()))
    }

    /// Returns the live slot (`blue` or `green`): the first component of the link target.
    #[track_caller]
    pub fn live_slot(&self) -> String {
        let target = self.link_target();
        let slot = target.iter().next().map(|slot| slot.to_string_lossy().into_owned());
        match slot.as_deref() {
            Some(slot @ ("blue" | "green")) => slot.to_owned(),
            _ => panic!("link target {} is not a slot", target.display()),
        }
    }

    /// Returns the slot that is not live.
    #[track_caller]
    pub fn idle_slot(&self) -> &'static str {
        if self.live_slot() == "blue" { "green" } else { "blue" }
    }
}

/// Returns the bytes of a hex object id.
fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("object id is hex"))
        .collect()
}
