//! The versions of each checked file pushed so far, and what a body served is compared with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Every version of each checked file pushed so far, shared between the test (which adds a
/// version before pushing it) and the checker threads (which accept any version added).
///
/// Versions are numbered by deploy. [`Versions::set_live`] records that a deploy is live: a
/// request sent after that must be answered from that release or a newer one, never an older
/// one (a "stale" body).
#[derive(Clone, Default)]
pub struct Versions {
    inner: Arc<VersionsInner>,
}

/// The versions of one path: deploy number and body.
type PathVersions = Vec<(u64, Vec<u8>)>;

#[derive(Default)]
struct VersionsInner {
    bodies: RwLock<HashMap<String, PathVersions>>,
    live: AtomicU64,
}

/// What a body is, compared with the versions known.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// One complete version, from the live release or a newer one.
    Current,
    /// One complete version, but from a release older than one already live.
    Stale { version: u64, live: u64 },
    /// As long as one version and equal to the start of another: the length from one
    /// release and the bytes from the next, which a server that stats a path and then opens
    /// it again sends when the link switches in between (Apache does).
    TornAtSwitch,
    /// No complete version of the file: truncated, mixed, or never pushed.
    Unknown,
}

impl Versions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `body` as what `path` serves in deploy number `version`.
    pub fn add(&self, version: u64, path: &str, body: impl Into<Vec<u8>>) {
        let mut bodies = self.inner.bodies.write().expect("versions lock");
        bodies.entry(path.to_owned()).or_default().push((version, body.into()));
    }

    /// Records that deploy number `version` is live (its push has finished).
    pub fn set_live(&self, version: u64) {
        self.inner.live.fetch_max(version, Ordering::SeqCst);
    }

    /// Returns the newest deploy number known to be live.
    pub fn live(&self) -> u64 {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Returns the paths that have versions.
    pub fn paths(&self) -> Vec<String> {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let mut paths: Vec<String> = bodies.keys().cloned().collect();
        paths.sort();
        paths
    }

    /// Describes how `body` differs from the version of `path` it shares the longest prefix
    /// with, to tell a truncated body from a mixed one in failure messages.
    pub fn describe_mismatch(&self, path: &str, body: &[u8]) -> String {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let nearest = bodies.get(path).and_then(|versions| {
            versions
                .iter()
                .map(|(version, known)| {
                    let common = known.iter().zip(body).take_while(|(a, b)| a == b).count();
                    (common, *version, known.len())
                })
                .max()
        });
        // A server that takes the length from one release and the bytes from another (a stat
        // and an open on either side of the switch) sends a body as long as another version.
        let same_length: Vec<u64> = bodies
            .get(path)
            .into_iter()
            .flatten()
            .filter(|(_, known)| known.len() == body.len())
            .map(|(version, _)| *version)
            .collect();
        let shown: String = String::from_utf8_lossy(body).chars().take(60).collect();
        match nearest {
            Some((common, version, len)) => format!(
                "{} bytes (the length of versions {same_length:?}), no version pushed; nearest \
                 is version {version} ({len} bytes), same for the first {common} bytes; starts \
                 {shown:?}",
                body.len()
            ),
            None => format!("{} bytes, and no version of this path", body.len()),
        }
    }

    /// Checks `body` of `path` against the versions, for a request sent when `live_then` was
    /// the live deploy.
    pub fn check(&self, path: &str, body: &[u8], live_then: u64) -> BodyCheck {
        let bodies = self.inner.bodies.read().expect("versions lock");
        let newest_match = bodies.get(path).and_then(|versions| {
            versions
                .iter()
                .filter(|(_, known)| known.as_slice() == body)
                .map(|(version, _)| *version)
                .max()
        });
        let torn = || {
            let versions = bodies.get(path).map(Vec::as_slice).unwrap_or_default();
            versions.iter().any(|(_, known)| known.len() == body.len())
                && versions
                    .iter()
                    .any(|(_, known)| known.len() > body.len() && known.starts_with(body))
        };
        match newest_match {
            None if torn() => BodyCheck::TornAtSwitch,
            None => BodyCheck::Unknown,
            Some(version) if version < live_then => BodyCheck::Stale { version, live: live_then },
            Some(_) => BodyCheck::Current,
        }
    }
}
