//! The test harness, in the spirit of jj's `TestEnvironment`: each test owns a temporary
//! directory holding a bare repository, a deploy target and a work clone, and runs the real
//! `git` and the real `pushdeploy` binary in a hermetic environment.

pub mod big_file;
pub mod canned_server;
pub mod disk;
pub mod history;
pub mod install;
pub mod load;
pub mod servers;
pub mod site;
pub mod target;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use walkdir::WalkDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pushdeploy");

/// The name of the symlink `pushdeploy init` creates when `--link` is not given.
pub const LINK: &str = "public_html";

/// A bound on every command, so a deploy that hangs on its lock fails the test instead of
/// hanging the whole suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Author and committer date of every commit, so commit ids are the same on every run.
const FIXED_DATE: &str = "2001-02-03T04:05:06+00:00";

/// A tree on disk, keyed by path relative to its root.
pub type Tree = BTreeMap<PathBuf, Entry>;

/// One entry of a [`Tree`]: what a deploy must reproduce exactly.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, contents: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::File { mode, contents } => {
                let text = String::from_utf8_lossy(contents);
                let shown: String = text.chars().take(60).collect();
                write!(f, "file {mode:04o}, {} bytes {shown:?}", contents.len())
            }
            Entry::Dir { mode } => write!(f, "dir {mode:04o}"),
            Entry::Symlink { target } => write!(f, "symlink -> {}", target.display()),
        }
    }
}

/// What is served: where the link points and the tree behind it.
#[derive(Debug)]
pub struct LiveSite {
    pub link_target: PathBuf,
    pub tree: Tree,
}

/// A temporary world: `site.git` (bare), `www` (the deploy target), `work` (a clone).
pub struct TestEnv {
    tmp: TempDir,
    /// The temporary directory, canonicalized.
    pub root: PathBuf,
    pub bare: PathBuf,
    pub target: PathBuf,
    pub work: PathBuf,
    home: PathBuf,
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
        }
    }

    /// Returns a command for `program` with the hermetic environment. Every command the tests
    /// run goes through here.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Cmd {
        let mut command = Command::new(program);
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

    /// Returns every entry under `dir` (relative paths resolve against the temp dir), without
    /// following symlinks. The one tree walk of the harness.
    #[track_caller]
    pub fn snapshot_tree(&self, dir: impl AsRef<Path>) -> Tree {
        let dir = self.root.join(dir);
        let mut tree = Tree::new();
        for item in WalkDir::new(&dir).min_depth(1).follow_links(false).sort_by_file_name() {
            let item = item.unwrap_or_else(|e| panic!("walk {}: {e}", dir.display()));
            let path = item.path();
            let meta = item.metadata().unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let mode = meta.mode() & 0o7777;
            let entry = if meta.file_type().is_symlink() {
                let target = fs::read_link(path)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
                Entry::Symlink { target }
            } else if meta.is_dir() {
                Entry::Dir { mode }
            } else if meta.is_file() {
                let contents =
                    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                Entry::File { mode, contents }
            } else {
                panic!("{} is neither file, dir nor symlink", path.display());
            };
            let relative = path.strip_prefix(&dir).expect("walked path is under its root");
            tree.insert(relative.to_owned(), entry);
        }
        tree
    }

    /// Returns the tree `git archive COMMIT` produces, extracted with `tar -x -p`.
    #[track_caller]
    pub fn archive_tree(&self, commit: &str) -> Tree {
        let archive =
            self.git_in(&self.bare).args(["-c", "tar.umask=0022", "archive", commit]).success();
        let dir = tempfile::Builder::new()
            .prefix("archive-")
            .tempdir_in(&self.root)
            .expect("create archive dir");
        let _ = self
            .command("tar")
            .args(["-x", "-p", "-C"])
            .arg(dir.path())
            .stdin(archive.stdout_bytes())
            .success();
        self.snapshot_tree(dir.path())
    }

    /// Asserts the live release is exactly what `git archive COMMIT` produces: same paths,
    /// file types, permission bits, bytes and symlink targets.
    #[track_caller]
    pub fn assert_live_equals_archive(&self, commit: &str) {
        let live = self.snapshot_tree(self.live_dir());
        assert_trees_equal(&self.archive_tree(commit), &live);
    }

    /// Records what is served now, to compare after a deploy that must not change it.
    #[track_caller]
    pub fn live_site(&self) -> LiveSite {
        LiveSite { link_target: self.link_target(), tree: self.snapshot_tree(self.live_dir()) }
    }

    /// Asserts the link and the live release are exactly as recorded, and no other slot is
    /// left behind.
    #[track_caller]
    pub fn assert_live_unchanged(&self, before: &LiveSite) {
        assert_eq!(self.link_target(), before.link_target, "the link moved");
        assert_trees_equal(&before.tree, &self.snapshot_tree(self.live_dir()));
        self.assert_no_idle_slot();
    }

    /// Asserts the slot that is not live does not exist (no half-made or retired release).
    #[track_caller]
    pub fn assert_no_idle_slot(&self) {
        let idle = self.target.join(self.idle_slot());
        assert!(
            fs::symlink_metadata(&idle).is_err(),
            "{} exists: {:?}",
            idle.display(),
            self.snapshot_tree(&idle).keys().collect::<Vec<_>>()
        );
    }
}

/// Asserts two trees are identical, listing every difference.
#[track_caller]
pub fn assert_trees_equal(expected: &Tree, actual: &Tree) {
    let mut report = String::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => writeln!(report, "  missing    {path:?}: {want:?}"),
            Some(got) if got != want => {
                writeln!(report, "  different  {path:?}: expected {want:?}, found {got:?}")
            }
            Some(_) => Ok(()),
        }
        .expect("write to String");
    }
    for (path, got) in actual {
        if !expected.contains_key(path) {
            writeln!(report, "  unexpected {path:?}: {got:?}").expect("write to String");
        }
    }
    assert!(report.is_empty(), "trees differ:\n{report}");
}

/// Returns the 7-character abbreviation the tool prints for a commit.
pub fn short(commit: &str) -> &str {
    &commit[..7]
}

/// Quotes `s` as a TOML string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Returns the bytes of a hex object id.
fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("object id is hex"))
        .collect()
}

/// A command under construction. Run it with [`Cmd::success`] or [`Cmd::failure`], which
/// assert the exit status.
#[must_use = "a command runs only through .success() or .failure()"]
pub struct Cmd {
    command: Command,
    stdin: Option<Vec<u8>>,
    tmp_paths: Vec<String>,
}

impl Cmd {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Feeds `bytes` to the command's stdin (otherwise stdin is `/dev/null`).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs the command and asserts it exits 0.
    #[must_use]
    #[track_caller]
    pub fn success(self) -> Output {
        let output = self.run();
        assert!(output.status.success(), "expected success\n{output}");
        output
    }

    /// Runs the command and asserts it exits non-zero (and was not killed by a signal).
    #[must_use]
    #[track_caller]
    pub fn failure(self) -> Output {
        let output = self.run();
        assert!(
            matches!(output.status.code(), Some(code) if code != 0),
            "expected failure\n{output}"
        );
        output
    }

    /// Returns the command as a shell would read it, for failure messages.
    fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(dir) = self.command.get_current_dir() {
            write!(text, "cd {dir:?} && ").expect("write to String");
        }
        write!(text, "{:?}", self.command.get_program()).expect("write to String");
        for arg in self.command.get_args() {
            write!(text, " {arg:?}").expect("write to String");
        }
        if let Some(stdin) = &self.stdin {
            write!(text, " <<< {:?}", String::from_utf8_lossy(stdin)).expect("write to String");
        }
        text
    }

    #[track_caller]
    fn run(mut self) -> Output {
        let command = self.describe();
        let stdin = match self.stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };
        self.command.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(&mut self.command)
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), self.stdin.take()) {
            // A command may exit without reading all of it; that is its business.
            thread::spawn(move || pipe.write_all(&bytes));
        }
        let stdout = read_to_end_in_background(child.stdout.take());
        let stderr = read_to_end_in_background(child.stderr.take());
        let status = wait_with_timeout(&mut child, &command);
        let stdout = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            raw_stdout: stdout,
            command,
            tmp_paths: self.tmp_paths,
        }
    }
}

fn read_to_end_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output; what was read is still reported.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

#[track_caller]
fn wait_with_timeout(child: &mut Child, command: &str) -> ExitStatus {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                panic!("timed out after {COMMAND_TIMEOUT:?}: {command}");
            }
            Err(e) => panic!("wait for {command}: {e}"),
        }
    }
}

/// What a finished command printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    raw_stdout: Vec<u8>,
    command: String,
    tmp_paths: Vec<String>,
}

impl Output {
    /// Returns the exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Returns stdout exactly as written.
    pub fn stdout_bytes(&self) -> &[u8] {
        &self.raw_stdout
    }

    /// Returns stderr with the temp dir replaced by `$TMP`, git's `remote: ` prefixes stripped
    /// and trailing whitespace (git pads sideband lines) removed from each line.
    pub fn normalized_stderr(&self) -> String {
        let mut text = self.stderr.clone();
        for path in &self.tmp_paths {
            text = text.replace(path.as_str(), "$TMP");
        }
        let mut normalized = String::new();
        for line in text.lines() {
            let line = line.strip_prefix("remote: ").unwrap_or(line);
            normalized.push_str(line.trim_end());
            normalized.push('\n');
        }
        normalized
    }

    /// Returns the normalized stderr lines that pushdeploy itself wrote.
    pub fn pushdeploy_lines(&self) -> Vec<String> {
        self.normalized_stderr()
            .lines()
            .filter(|line| line.starts_with("pushdeploy: "))
            .map(str::to_owned)
            .collect()
    }

    /// Returns pushdeploy's last line: the outcome of a deploy.
    #[track_caller]
    pub fn final_line(&self) -> String {
        match self.pushdeploy_lines().pop() {
            Some(line) => line,
            None => panic!("no pushdeploy line\n{self}"),
        }
    }

    /// Asserts the deploy ended with `pushdeploy: live: <short> (<label>) in <slot>`.
    #[track_caller]
    pub fn assert_live(&self, commit: &str, label: &str, slot: &str) {
        let expected = format!("pushdeploy: live: {} ({label}) in {slot}", short(commit));
        let line = self.final_line();
        let rest = line.strip_prefix(&expected);
        assert!(
            rest.is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric())),
            "expected a final line starting with {expected:?}, found {line:?}\n{self}"
        );
    }

    /// Asserts the deploy ended with `pushdeploy: failed at <stage>: ...`; returns that line.
    #[track_caller]
    pub fn assert_failed_at(&self, stage: &str) -> String {
        let line = self.final_line();
        assert!(
            line.starts_with(&format!("pushdeploy: failed at {stage}: ")),
            "expected a final line `pushdeploy: failed at {stage}: ...`, found {line:?}\n{self}"
        );
        line
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status:  {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl Cmd {
    /// Runs the command whatever its exit status, for a caller that decides from
    /// [`Output::status`] (a push that may be rejected and retried, say).
    #[must_use]
    #[track_caller]
    pub fn output(self) -> Output {
        self.run()
    }

    /// Starts the command with stdin, stdout and stderr on `/dev/null` and returns at once,
    /// for a test that signals or races the process itself. The caller must wait for it.
    #[track_caller]
    pub fn spawn(mut self) -> Child {
        let command = self.describe();
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"))
    }
}

/// Spawns a command, retrying for a moment while its executable is busy (ETXTBSY): a binary a
/// test just copied can still be open for writing in a child that another test thread forked
/// before the copy was closed, until that child execs.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<std::process::Child> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match command.spawn() {
            Err(err)
                if err.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}
