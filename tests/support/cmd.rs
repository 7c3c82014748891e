//! Commands the tests run (`Cmd`) and what they printed (`Output`), temp paths written `$TMP`.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::{Read, Write as _};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::short;

/// A bound on every command, so a deploy that hangs on its lock fails the test instead of
/// hanging the whole suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A command under construction. Run it with [`Cmd::success`] or [`Cmd::failure`], which
/// assert the exit status.
#[must_use = "a command runs only through .success() or .failure()"]
pub struct Cmd {
    pub(super) command: Command,
    pub(super) stdin: Option<Vec<u8>>,
    pub(super) tmp_paths: Vec<String>,
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

impl Cmd {
    /// Starts the command in a process group of its own (the group's id is its pid), stdin on
    /// `/dev/null`, stdout and stderr piped, and returns at once: for a test that reads its
    /// output while it runs (`logs -f`). The caller must stop the group and wait for it.
    #[track_caller]
    pub fn spawn_piped(mut self) -> Child {
        use std::os::unix::process::CommandExt as _;
        let command = self.describe();
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
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
