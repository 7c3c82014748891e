//! A small tmpfs for the tests that fill the disk or make the target read-only.

use std::fs;
use std::path::PathBuf;

use super::TestEnv;

/// A small tmpfs mounted for one test and unmounted when dropped, also when the test panics.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs with `options` at `TMP/name`. Without the right to mount, says so and
    /// returns `None`, unless `CI` is set (CI runs as root): then it fails.
    #[track_caller]
    pub fn mount(env: &TestEnv, name: &str, options: &str) -> Option<SmallDisk> {
        let dir = env.root.join(name);
        fs::create_dir(&dir).expect("create the mount point");
        let mount =
            env.command("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&dir).output();
        if mount.status.success() {
            return Some(SmallDisk { dir });
        }
        super::skip(&format!("cannot mount a tmpfs (this test needs root):\n{mount}"));
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
