//! What a build publishes: whether it has an index page, and whether the sources' own files
//! are among it.

use std::fs;
use std::path::Path;

/// Files that belong to a site's sources, not to what it serves: a build's configuration, a
/// package manifest, pushdeploy's own.
const SOURCE_FILES: [&str; 16] = [
    "hugo.toml",
    "hugo.yaml",
    "hugo.json",
    "config.toml",
    "package.json",
    "package-lock.json",
    "pushdeploy.toml",
    "_config.yml",
    "mkdocs.yml",
    "pyproject.toml",
    "requirements.txt",
    "Gemfile",
    "composer.json",
    "Cargo.toml",
    "go.mod",
    ".env",
];

/// Returns the sources' files found at the top of `served`: a build that writes its site into
/// a subdirectory, served without `publish`, publishes its sources with it.
pub fn source_files_in(served: &Path) -> Vec<&'static str> {
    SOURCE_FILES
        .into_iter()
        .filter(|name| fs::symlink_metadata(served.join(name)).is_ok())
        .collect()
}

/// Tells whether `served` has an `index.html` (a file, or a symlink the checks let through).
pub fn has_index(served: &Path) -> bool {
    fs::symlink_metadata(served.join("index.html"))
        .is_ok_and(|meta| meta.is_file() || meta.file_type().is_symlink())
}
