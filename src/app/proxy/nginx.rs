//! nginx: not built yet.

use std::path::Path;
use std::time::Duration;

use crate::config::App;
use crate::error::Error;
use crate::target_dir::Slot;

/// The worker processes of the configuration before the reload.
#[derive(Debug)]
pub struct Pointed;

pub fn point(_app: &App, _upstream: &Path, _config: &Path, _to: Slot) -> Result<Pointed, String> {
    Err("the nginx proxy switch is not built yet".to_owned())
}

pub fn drain(_pointed: Pointed, _timeout: Duration) -> Result<(), String> {
    Ok(())
}

pub fn current(_upstream: &Path) -> Result<Option<Slot>, String> {
    Ok(None)
}

/// Writes the two upstream files and the link (not built yet).
pub fn install(_app: &App, _upstream: &Path, _config: &Path) -> Result<Vec<String>, Error> {
    Ok(vec!["nginx: not built yet".to_owned()])
}
