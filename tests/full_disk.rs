//! Full disks: a release that does not fit, a build that fills the disk, running out of inodes.

use crate::support::disk::SmallDisk;
use crate::support::target::assert_no_leftovers;
use crate::support::{TestEnv, short, toml_str};

#[test]
fn release_that_does_not_fit_is_refused_and_a_build_that_fills_the_disk_fails() {
    let mut env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env, "small", "size=2m") else { return };
    env.target = disk.dir.join("www");
    env.init(&[]);
    env.write("index.html", "small\n");
    env.write("css/style.css", "body {}\n");
    let small = env.commit_all("small");
    env.push().assert_live(&small, "refs/heads/main", "blue");
    let before = env.live_site();

    // 3 MB on a 2 MiB filesystem: the preflight refuses before writing anything.
    env.write("big.bin", vec![0u8; 3_000_000]);
    env.commit_all("too big");
    let push = env.push();

    let line = push.assert_failed_at("materialize");
    let start = "pushdeploy: failed at materialize: not enough space on the target's filesystem: \
                 the release needs about 3.0 MB, and ";
    let end = format!(
        " are free in $TMP/small/www; the live site is unchanged (blue, {}); free space on the \
         filesystem of $TMP/small/www, then push again",
        short(&small)
    );
    assert!(line.starts_with(start) && line.ends_with(&end), "{line:?}\n{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after the preflight");

    // Fits, but the build fills the disk.
    env.remove("big.bin");
    env.write("index.html", "v3\n");
    env.commit_all("v3");
    let command = "head -c 4000000 /dev/zero > big";
    env.write_config(&format!("{}\n[build]\ncommand = {}\n", env.base_config(), toml_str(command)));
    let push = env.push();

    let expected = format!(
        "pushdeploy: failed at build: `{command}` exited with status 1; the live site is \
         unchanged (blue, {}); fix the build and push again (its output is above)",
        short(&small)
    );
    assert_eq!(push.final_line(), expected, "{push}");
    assert!(push.stderr.contains("No space left on device"), "{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after the full build");

    // The space came back: a release that fits goes live.
    env.write_config(&env.base_config());
    env.write("index.html", "v4\n");
    let v4 = env.commit_all("v4");
    env.push().assert_live(&v4, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v4);
}

#[test]
fn running_out_of_inodes_fails_at_materialize_as_no_space() {
    let mut env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env, "inodes", "size=4m,nr_inodes=64") else { return };
    env.target = disk.dir.join("www");
    env.init(&[]);
    env.write("index.html", "small\n");
    let small = env.commit_all("small");
    env.push().assert_live(&small, "refs/heads/main", "blue");
    let before = env.live_site();
    // Few bytes, so the preflight (which counts bytes) lets it through; too many inodes.
    for page in 0..100 {
        env.write(format!("pages/{page:03}.html"), format!("page {page}\n"));
    }
    env.commit_all("many pages");

    let push = env.push();

    let line = push.assert_failed_at("materialize");
    let start = "pushdeploy: failed at materialize: $TMP/inodes/www/green/";
    let end = format!(
        ": No space left on device (os error 28); the live site is unchanged (blue, {}); free \
         space on the filesystem of $TMP/inodes/www, then push again",
        short(&small)
    );
    assert!(line.starts_with(start) && line.ends_with(&end), "{line:?}\n{push}");
    env.assert_live_unchanged(&before);
    assert_no_leftovers(&env, "after running out of inodes");
}
