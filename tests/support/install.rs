//! Running `install.sh` from tests: its release build, and its command line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{Cmd, TestEnv};

/// A bound on the release build `install.sh` runs: a cold `cargo build --release` can take
/// longer than the harness's per-command limit, so the test runs it first with this one.
const RELEASE_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Runs `cargo build --release` as `install.sh` does, so that the script's build is a quick
/// no-op under the harness's per-command limit.
#[track_caller]
pub fn build_release(env: &TestEnv) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let log = env.root.join("cargo-build-release.log");
    let log_file = fs::File::create(&log).expect("create the cargo log");
    let mut child = Command::new("cargo")
        .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start cargo build --release");
    let deadline = Instant::now() + RELEASE_BUILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo build --release took over {RELEASE_BUILD_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(100));
    };
    let output = fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "cargo build --release failed ({status}):\n{output}");
}

/// Returns `./install.sh --prefix PREFIX`, with the `CARGO_HOME` and `RUSTUP_HOME` the test
/// runs with: `HOME` is in the temp dir, where cargo would find neither.
pub fn install_sh(env: &TestEnv, prefix: &Path) -> Cmd {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let mut command = env.command(script).arg("--prefix").arg(prefix);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for (name, default) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
        let dir = std::env::var_os(name)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|home| home.join(default)));
        if let Some(dir) = dir.filter(|dir| dir.is_dir()) {
            command = command.env(name, dir);
        }
    }
    command
}
