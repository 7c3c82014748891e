//! The site templates in the source tree, and whether the programs their tests run are installed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The title of the Hugo template's site (`hugo.toml`).
pub const HUGO_TITLE: &str = "pushdeploy Hugo demo";

/// The heading of the static template's home page.
pub const STATIC_TITLE: &str = "pushdeploy static demo";

/// Returns the directory of a template in the source tree.
pub fn template_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("site-templates").join(name)
}

/// Returns whether `program` is an executable in `PATH`.
pub fn in_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}
