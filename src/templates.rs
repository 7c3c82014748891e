//! The site templates compiled into the binary, so `new-site` and `init --template` work on a
//! server that has only the binary.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use include_dir::{Dir, DirEntry, include_dir};

static STATIC: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/site-templates/static");
static HUGO: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/site-templates/hugo");

/// The file in each template that holds its `pushdeploy.toml` settings.
const SNIPPET: &str = "pushdeploy.toml.snippet";

/// A site template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Plain HTML, no build
    Static,
    /// A Hugo site: `hugo --minify`, published from `public/`
    Hugo,
}

impl Template {
    fn dir(self) -> &'static Dir<'static> {
        match self {
            Template::Static => &STATIC,
            Template::Hugo => &HUGO,
        }
    }

    /// Returns the template's settings for `pushdeploy.toml`, as TOML text.
    pub fn config_snippet(self) -> &'static str {
        self.dir().get_file(SNIPPET).and_then(|file| file.contents_utf8()).unwrap_or_default()
    }

    /// Writes the template's files into `dest`, which must be empty or missing.
    pub fn write_to(self, dest: &Path) -> io::Result<u64> {
        fs::create_dir_all(dest)?;
        write_dir(self.dir(), dest)
    }
}

/// Writes `dir`'s entries under `root`; entry paths are relative to the template's top.
fn write_dir(dir: &Dir<'_>, root: &Path) -> io::Result<u64> {
    let mut files = 0;
    for entry in dir.entries() {
        let path = root.join(entry.path());
        match entry {
            DirEntry::Dir(sub) => {
                fs::create_dir(&path)?;
                files += write_dir(sub, root)?;
            }
            DirEntry::File(file) if file.path().file_name() == Some(SNIPPET.as_ref()) => {}
            DirEntry::File(file) => {
                fs::write(&path, file.contents())?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
                files += 1;
            }
        }
    }
    Ok(files)
}
