//! The one integration-test binary: one module per feature, all sharing `support`.

mod support;

mod app_bench;
mod app_caddy;
mod app_crashes;
mod app_deploy;
mod app_env;
mod app_haproxy;
mod app_init;
mod app_logs;
mod app_nginx;
mod app_permissions;
mod app_release;
mod app_strategies;
mod bad_input;
mod cli_extras;
mod concurrency;
mod containment;
mod crashes;
mod deploy;
mod deploy_logs;
mod deploy_refs;
mod doctor;
mod full_disk;
mod gitattributes;
mod hook;
mod hostile_trees;
mod hugo;
mod incremental;
mod incremental_diff;
mod init;
mod install;
mod kept_releases;
mod large_files;
mod load_checker;
mod log;
mod names;
mod notify;
mod operators;
mod permissions;
mod pre_receive;
mod previews;
mod publish_safety;
mod push_options;
mod recipes;
mod regression;
mod rollback;
mod server_configs;
mod setup_hints;
mod ssh;
mod ssh_operators;
mod status;
mod submodules;
mod systemd;
mod templates;
mod webhook;
mod zero_downtime;

use std::fs;
use std::path::Path;

/// A test file that is not declared as a module here compiles into nothing and never runs.
#[test]
fn every_test_file_is_a_module() {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let source = fs::read_to_string(tests_dir.join("integration.rs")).expect("read integration.rs");
    let declared: Vec<&str> =
        source.lines().filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';')).collect();
    let mut forgotten = Vec::new();
    for entry in fs::read_dir(&tests_dir).expect("read tests/") {
        let path = entry.expect("read tests/ entry").path();
        let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let is_module = path.extension().is_some_and(|ext| ext == "rs") || path.is_dir();
        if is_module && stem != "integration" && !declared.contains(&stem) {
            forgotten.push(stem.to_owned());
        }
    }
    assert!(
        forgotten.is_empty(),
        "tests/ files not declared with `mod` in tests/integration.rs: {forgotten:?}"
    );
}
