//! The references of HTML pages (`href`, `src`, `srcset`) and the files of a release they name.

use std::fs;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// Returns the values of `href`, `src` and `srcset` attributes in `html`, quoted or not
/// (Hugo's minifier drops the quotes), with each `srcset` candidate on its own.
pub fn referenced_urls(html: &str) -> Vec<&str> {
    let mut urls = Vec::new();
    for attribute in ["href=", "src=", "srcset="] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            // `data-src=` and the like are not references.
            let is_attribute = rest[..at].ends_with(|c: char| c.is_ascii_whitespace());
            let (value, after) = attribute_value(&rest[at + attribute.len()..]);
            rest = after;
            if !is_attribute {
                continue;
            }
            if attribute == "srcset=" {
                urls.extend(
                    value.split(',').filter_map(|candidate| candidate.split_whitespace().next()),
                );
            } else {
                urls.push(value);
            }
        }
    }
    urls
}

/// Splits an attribute value off the start of `text`: quoted, or unquoted up to whitespace or
/// the end of the tag. Returns the value and the rest.
pub fn attribute_value(text: &str) -> (&str, &str) {
    if let Some(quote) = text.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let inner = &text[1..];
        let end = inner.find(quote).unwrap_or(inner.len());
        (&inner[..end], &inner[end..])
    } else {
        let end = text.find(|c: char| c.is_ascii_whitespace() || c == '>').unwrap_or(text.len());
        (&text[..end], &text[end..])
    }
}

/// Returns the file inside `root` that `url`, referenced by the page `page`, names; `None` for
/// URLs that leave the site (`https:`, `mailto:`, `//host`) and fragments.
pub fn local_file(root: &Path, page: &Path, url: &str) -> Option<PathBuf> {
    let url = url.split(['#', '?']).next().unwrap_or_default();
    let has_scheme = url.split('/').next().is_some_and(|first| first.contains(':'));
    if url.is_empty() || url.starts_with("//") || has_scheme {
        return None;
    }
    let mut path = match url.strip_prefix('/') {
        Some(absolute) => root.join(absolute),
        None => page.parent().unwrap_or(root).join(url),
    };
    if url.ends_with('/') || path.is_dir() {
        path.push("index.html");
    }
    Some(path)
}

/// Asserts every local `href`, `src` and `srcset` of every HTML page under `root` names a file
/// that exists under `root`: no page of the release links to something the deploy left out.
#[track_caller]
pub fn assert_local_references_exist(root: &Path) {
    let mut missing = Vec::new();
    let mut pages = 0;
    for item in WalkDir::new(root).sort_by_file_name() {
        let item = item.unwrap_or_else(|e| panic!("walk {}: {e}", root.display()));
        if item.path().extension().is_none_or(|ext| ext != "html") {
            continue;
        }
        pages += 1;
        let html = fs::read_to_string(item.path())
            .unwrap_or_else(|e| panic!("read {}: {e}", item.path().display()));
        for url in referenced_urls(&html) {
            let Some(file) = local_file(root, item.path(), url) else { continue };
            if !file.is_file() {
                let page = item.path().strip_prefix(root).expect("walked path is under root");
                missing.push(format!("{}: {url}", page.display()));
            }
        }
    }
    assert!(pages > 1, "only {pages} HTML pages in {}", root.display());
    assert!(missing.is_empty(), "references to missing files:\n  {}", missing.join("\n  "));
}

/// Returns the stylesheets and scripts a page references, as files under `root`.
#[track_caller]
pub fn page_assets(root: &Path, page: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let page = root.join(page);
    let html = fs::read_to_string(&page).unwrap_or_else(|e| panic!("read {}: {e}", page.display()));
    let files: Vec<PathBuf> =
        referenced_urls(&html).into_iter().filter_map(|url| local_file(root, &page, url)).collect();
    let with_extension = |wanted: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|file| file.extension().is_some_and(|ext| ext == wanted))
            .cloned()
            .collect()
    };
    (with_extension("css"), with_extension("js"))
}
