//! The test harness, in the spirit of jj's `TestEnvironment`: each test owns a temporary
//! directory holding a bare repository, a deploy target and a work clone, and runs the real
//! `git` and the real `pushdeploy` binary in a hermetic environment.

mod cmd;
mod env;
mod tree;

pub mod app;
pub mod app_load;
pub mod big_file;
pub mod caddy;
pub mod canned_server;
pub mod disk;
pub mod haproxy;
pub mod history;
pub mod html;
pub mod hugo;
pub mod install;
pub mod load;
pub mod nginx;
pub mod servers;
pub mod site;
pub mod systemd;
pub mod target;
pub mod templates;
pub mod user;
pub mod webhook;
pub mod webhook_receiver;

pub use cmd::{Cmd, Output};
pub use env::TestEnv;
pub use tree::{Entry, LiveSite, Tree, assert_trees_equal};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pushdeploy");

/// The name of the symlink `pushdeploy init` creates when `--link` is not given.
pub const LINK: &str = "public_html";

/// Returns the 7-character abbreviation the tool prints for a commit.
pub fn short(commit: &str) -> &str {
    &commit[..7]
}

/// Quotes `s` as a TOML string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Skips a test that needs something this machine lacks (`missing` says what). Under `CI`,
/// which installs everything, it fails instead: a skip there would hide a broken setup.
/// Elsewhere the notice goes to stderr directly, not through `eprintln!`, which the test
/// harness captures and shows only for failures: a skip must never look like a silent pass.
#[track_caller]
pub fn skip(missing: &str) {
    use std::io::Write as _;
    assert!(std::env::var_os("CI").is_none(), "{missing}, and CI is set");
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "notice: skipping {test}: {missing}");
}
