//! A second system user on the machine, for tests of what one user's deploys leave for
//! another's; made with `useradd` (so only as root) and deleted on drop.

use std::process::{Command, Stdio};

use super::TestEnv;

/// A system user with no login shell and no home of its own; deleted on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates the user `<prefix><pid>`, replacing one a killed earlier run left behind.
    #[track_caller]
    pub fn create(env: &TestEnv, prefix: &str) -> TestUser {
        let name = format!("{prefix}{}", std::process::id());
        if nix::unistd::User::from_name(&name).ok().flatten().is_some() {
            let _ = env.command("userdel").arg(&name).success();
        }
        let _ = env
            .command("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"])
            .arg(&name)
            .success();
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("useradd created no user {name}"));
        TestUser { name, uid: user.uid.as_raw(), gid: user.gid.as_raw() }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let status = Command::new("userdel").arg(&self.name).stderr(Stdio::null()).status();
        if !status.is_ok_and(|status| status.success()) {
            eprintln!("warning: could not delete the test user {0}; run `userdel {0}`", self.name);
        }
    }
}
