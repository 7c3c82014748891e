//! HAProxy: not built yet.

use std::path::Path;
use std::time::Duration;

use crate::config::App;
use crate::error::Error;
use crate::target_dir::Slot;

pub fn point(
    _app: &App,
    _socket: &Path,
    _backend: &str,
    _state_file: &Path,
    _to: Slot,
    _from: Option<Slot>,
) -> Result<(), String> {
    Err("the HAProxy proxy switch is not built yet".to_owned())
}

pub fn drain(
    _socket: &Path,
    _backend: &str,
    _state_file: &Path,
    _from: Slot,
    _timeout: Duration,
) -> Result<(), String> {
    Ok(())
}

pub fn current(_socket: &Path, _backend: &str) -> Result<Option<Slot>, String> {
    Ok(None)
}

/// Writes the first server states (not built yet).
pub fn install(
    _target: &Path,
    _app: &App,
    _socket: &Path,
    _backend: &str,
    _state_file: &Path,
) -> Result<Vec<String>, Error> {
    Ok(vec!["haproxy: not built yet".to_owned()])
}
