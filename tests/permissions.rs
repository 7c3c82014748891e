//! The modes of what is written: the configured umask, the default one, a world-writable target.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::{BIN, Entry, TestEnv, Tree, assert_trees_equal};

/// Returns `tree` with every permission bit `umask` clears cleared.
fn masked(tree: &Tree, umask: u32) -> Tree {
    tree.iter()
        .map(|(path, entry)| {
            let entry = match entry {
                Entry::File { mode, contents } => {
                    Entry::File { mode: mode & !umask, contents: contents.clone() }
                }
                Entry::Dir { mode } => Entry::Dir { mode: mode & !umask },
                link => link.clone(),
            };
            (path.clone(), entry)
        })
        .collect()
}

/// Returns the permission bits of `path`.
#[track_caller]
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode()
        & 0o7777
}

#[test]
fn umask_027_makes_files_0640_and_directories_0750() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write_config(&format!("{}umask = \"027\"\n", env.base_config()));
    // `css/style.css` is unchanged: it must not be hard-linked from the 0644 release.
    env.write("index.html", "v2\n");
    env.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    let v2 = env.commit_all("v2");

    env.push().assert_live(&v2, "refs/heads/main", "green");

    let live = env.live_dir();
    assert_trees_equal(&masked(&env.archive_tree(&v2), 0o027), &env.snapshot_tree(&live));
    assert_eq!(mode_of(&live), 0o750, "the slot itself");
    assert_eq!(mode_of(&live.join("css/style.css")), 0o640);
    assert_eq!(mode_of(&live.join("bin/run.sh")), 0o750);
    assert_eq!(mode_of(&live.join("bin")), 0o750);

    // The build runs with the umask too.
    env.write_config(&format!(
        "{}umask = \"027\"\n\n[build]\ncommand = 'mkdir gen && echo built > gen/out.txt'\n",
        env.base_config()
    ));
    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");

    env.push().assert_live(&v3, "refs/heads/main", "blue");

    let live = env.live_dir();
    assert_eq!(mode_of(&live.join("gen")), 0o750);
    assert_eq!(mode_of(&live.join("gen/out.txt")), 0o640);
    assert_eq!(mode_of(&live.join("index.html")), 0o640);
}

#[test]
fn default_umask_makes_files_0644_and_directories_and_executables_0755() {
    let (env, _, _) = TestEnv::with_live_site();
    env.write("index.html", "v2\n");
    env.write("deep/er/page.html", "page\n");
    env.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    let v2 = env.commit_all("v2");
    let _ = env.push_ref("HEAD:refs/heads/staging");

    // Whatever umask the caller has, the release follows the configuration's (022).
    let deploy = env
        .command("sh")
        .args(["-c", "umask 077 && exec \"$0\" deploy --repo \"$1\" staging", BIN])
        .arg(&env.bare)
        .success();

    deploy.assert_live(&v2, "staging", "green");
    env.assert_live_equals_archive(&v2);
    let live = env.live_dir();
    assert_eq!(mode_of(&live), 0o755, "the slot itself");
    for (path, mode) in [
        ("index.html", 0o644),
        ("css/style.css", 0o644),
        ("deep", 0o755),
        ("deep/er", 0o755),
        ("deep/er/page.html", 0o644),
        ("bin", 0o755),
        ("bin/run.sh", 0o755),
    ] {
        assert_eq!(mode_of(&live.join(path)), mode, "{path}");
    }
}

#[test]
fn world_writable_target_is_warned_about() {
    let (env, _, _) = TestEnv::with_live_site();
    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");

    let push = env.push();

    push.assert_live(&v2, "refs/heads/main", "green");
    let warning = "pushdeploy: warning: target $TMP/www is writable by every user, who could \
                   replace the site; run `chmod o-w $TMP/www`";
    assert_eq!(push.pushdeploy_lines().first().map(String::as_str), Some(warning), "{push}");

    fs::set_permissions(&env.target, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");
    let push = env.push();
    push.assert_live(&v3, "refs/heads/main", "blue");
    assert!(!push.stderr.contains("writable by every user"), "{push}");
}
