//! Containment: build. Processes a build leaves behind, whatever they did to their session, and
//! the build cache (FIFOs, symlinked components, copies cut short by SIGKILL).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{BIN, Output, TestEnv, short, toml_str};

/// Returns the config with a `[build]` table of `command` and the `extra` lines.
fn build_config(env: &TestEnv, command: &str, extra: &str) -> String {
    format!("{}\n[build]\ncommand = {}\n{extra}", env.base_config(), toml_str(command))
}

/// Returns `(pid, command line)` of every live process whose working directory is under `dir`
/// (a deleted one included: its link reads `DIR/green (deleted)`).
fn processes_working_under(dir: &Path) -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<i32>().ok()?, entry.path())))
        .filter(|(_, proc)| fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
        .map(|(pid, proc)| {
            let cmdline = fs::read(proc.join("cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

/// Kills (by pid) the processes a failed check found, so a failing test leaves none behind.
fn kill_strays(strays: &[(i32, String)]) {
    for (pid, _) in strays {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// Asserts no process works under the target; kills any found before failing.
#[track_caller]
fn assert_no_build_process_left(env: &TestEnv, context: &str) {
    let strays = processes_working_under(&env.target);
    kill_strays(&strays);
    assert!(strays.is_empty(), "{context}: processes of the build are still running: {strays:?}");
}

/// Waits (bounded) until `done` holds; kills `child` and fails when it does not.
#[track_caller]
fn wait_for(child: &mut Child, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not happen within {timeout:?} (or the deploy ended first)");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn build_child_that_calls_setsid_no_longer_writes_into_the_live_release_later() {
    // What broke: a build child in its own session (setsid, and a double fork) escaped the
    // kill of the build's process group, outlived the deploy and appended "late" to the live
    // `index.html` two seconds after it went live.
    let (env, _, _) = TestEnv::with_live_site();
    let command = "(setsid sh -c 'sleep 2; echo late >> index.html' </dev/null >/dev/null 2>&1 &); \
                   setsid sh -c '(sleep 2; echo late >> css/style.css) </dev/null >/dev/null 2>&1 & exit'";
    env.write_config(&build_config(&env, command, ""));
    env.write("index.html", "v2\n");
    let v2 = env.commit_all("v2");

    env.push().assert_live(&v2, "refs/heads/main", "green");

    let strays = processes_working_under(&env.target);
    let before = env.live_site();
    thread::sleep(Duration::from_secs(3));
    kill_strays(&strays);
    env.assert_live_unchanged(&before);
    assert_eq!(fs::read_to_string(env.live_dir().join("index.html")).ok().as_deref(), Some("v2\n"));
    assert!(strays.is_empty(), "processes of the build outlived the deploy: {strays:?}");
}

#[test]
fn build_child_that_calls_setsid_survived_the_build_timeout() {
    // What broke: at the build timeout only the build's process group was killed; `setsid
    // sleep 30` ran on in the half-made release after the deploy had failed.
    let (env, v1, before) = TestEnv::with_live_site();
    let command = "setsid sleep 30 & sleep 30";
    env.write_config(&build_config(&env, command, "timeout = \"1s\"\n"));
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    assert_eq!(
        push.final_line(),
        format!(
            "pushdeploy: failed at build: `{command}` did not finish within 1s; it and its \
             child processes were killed; the live site is unchanged (blue, {}); fix the build \
             and push again (its output is above)",
            short(&v1)
        ),
        "{push}"
    );
    assert_no_build_process_left(&env, "after the timeout");
    env.assert_live_unchanged(&before);
}

#[test]
fn build_child_that_calls_setsid_survived_the_next_deploy_after_pushdeploy_was_killed() {
    // What broke: the next deploy stops a build orphaned by a SIGKILLed pushdeploy through its
    // recorded process group only; a child of that build in its own session ran on.
    let (env, _, _) = TestEnv::with_live_site();
    let command = "setsid sh -c 'while :; do echo x >> stray.txt; sleep 0.05; done' \
                   </dev/null >/dev/null 2>&1 & exec sleep 30";
    env.write_config(&build_config(&env, command, ""));
    env.write("index.html", "v2\n");
    env.commit_all("v2");
    let mut deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).spawn();
    let stray = env.target.join("green/stray.txt");
    wait_for(&mut deploy, "the build's first write", Duration::from_secs(20), || stray.exists());
    let _ = deploy.kill();
    let _ = deploy.wait();

    env.write_config(&env.base_config());
    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");
    let push = env.push();

    push.assert_live(&v3, "refs/heads/main", "green");
    assert_no_build_process_left(&env, "after the next deploy");
    env.assert_live_equals_archive(&v3);
}

/// Runs `pushdeploy deploy` bounded by `timeout -s KILL`, so a deploy that hangs ends.
fn deploy_bounded(env: &TestEnv, seconds: u32) -> Output {
    env.command("timeout")
        .args(["-s", "KILL", &seconds.to_string(), BIN, "deploy", "--repo"])
        .arg(&env.bare)
        .output()
}

#[test]
fn fifo_in_a_served_cache_path_no_longer_hangs_the_deploy() {
    // What broke: saving a cache path inside the served directory copies it, and copying
    // opened the FIFO the build left there: the deploy hung forever after the build, holding
    // the lock.
    let (env, v1, before) = TestEnv::with_live_site();
    let command = "mkdir -p cache && echo kept > cache/kept.txt && mkfifo cache/pipe";
    env.write_config(&build_config(&env, command, "cache = [\"cache\"]\n"));
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let deploy = deploy_bounded(&env, 30);

    assert_ne!(
        deploy.status.signal(),
        Some(9),
        "the deploy hung and was killed after 30 s\n{deploy}"
    );
    assert_eq!(
        deploy.final_line(),
        format!(
            "pushdeploy: failed at build: build cache: refused cache/pipe: a FIFO (named pipe); the cache \
             keeps only regular files, directories and symlinks: make the build remove it; the \
             live site is unchanged (blue, {}); fix the build and push again (its output is \
             above)",
            short(&v1)
        ),
        "{deploy}"
    );
    env.assert_live_unchanged(&before);
    let store = env.target.join(".pushdeploy/cache");
    let fifos: Vec<PathBuf> = walkdir::WalkDir::new(&store)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_fifo())
        .map(|entry| entry.path().to_owned())
        .collect();
    assert!(fifos.is_empty(), "a FIFO went into the cache: {fifos:?}");
}

#[test]
fn symlinked_component_of_a_cache_path_no_longer_moves_an_outside_directory_into_the_cache() {
    // What broke: with `cache = ["a/b"]`, a build that made `a` a symlink to an outside
    // directory had that directory's `b/` moved into the cache (and gone from outside).
    let (env, v1, before) = TestEnv::with_live_site();
    let outside = env.root.join("outside");
    fs::create_dir_all(outside.join("b")).expect("create the outside directory");
    fs::write(outside.join("b/keep.txt"), "keep\n").expect("write the outside file");
    let command = format!(
        "mkdir -p public && echo built > public/index.html && ln -s {} a",
        outside.display()
    );
    let extra = "publish = \"public\"\ncache = [\"a/b\"]\n";
    env.write_config(&build_config(&env, &command, extra));
    env.write("index.html", "v2\n");
    env.commit_all("v2");

    let push = env.push();

    assert_eq!(
        fs::read_to_string(outside.join("b/keep.txt")).ok().as_deref(),
        Some("keep\n"),
        "the outside directory was moved\n{push}"
    );
    assert_eq!(
        push.final_line(),
        format!(
            "pushdeploy: failed at build: build cache: refused a/b: a is a symlink; a cached \
             path may not lead through one: make the build write a real directory there; the \
             live site is unchanged (blue, {}); fix the build and push again (its output is \
             above)",
            short(&v1)
        ),
        "{push}"
    );
    env.assert_live_unchanged(&before);
    assert!(!env.target.join(".pushdeploy/cache/a").exists(), "something went into the cache");
}

#[test]
fn cache_copy_cut_short_by_sigkill_is_no_longer_reused_and_served() {
    // What broke: a SIGKILL while a served cache path was being copied left a truncated file
    // in the cache; the next build reused it, and the truncated file went live.
    const SIZE: u64 = 512 * 1024 * 1024;
    let (env, _, _) = TestEnv::with_live_site();
    let command =
        format!("mkdir -p big && {{ [ -f big/blob ] || head -c {SIZE} /dev/zero > big/blob; }}");
    env.write_config(&build_config(&env, &command, "cache = [\"big\"]\n"));
    env.write("index.html", "v2\n");
    env.commit_all("v2");
    let state = env.target.join(".pushdeploy");
    // The copy is under way once a `blob` shorter than the built one shows up anywhere in the
    // state directory (the cache store, or wherever the copy is written first).
    let partial = || {
        walkdir::WalkDir::new(&state).into_iter().flatten().any(|entry| {
            entry.file_name() == "blob"
                && entry.metadata().is_ok_and(|meta| meta.is_file() && meta.len() < SIZE)
        })
    };
    let mut deploy = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).spawn();
    wait_for(&mut deploy, "the copy into the cache", Duration::from_secs(60), partial);
    let _ = deploy.kill();
    let _ = deploy.wait();

    env.write("index.html", "v3\n");
    let v3 = env.commit_all("v3");
    let push = env.push();

    push.assert_live(&v3, "refs/heads/main", "green");
    let served = fs::metadata(env.live_dir().join("big/blob")).expect("stat the served blob");
    assert_eq!(served.len(), SIZE, "a truncated cache entry was served\n{push}");
    let leftovers: Vec<PathBuf> = walkdir::WalkDir::new(&state)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_name() == "blob")
        .filter(|entry| entry.metadata().is_ok_and(|meta| meta.len() != SIZE))
        .map(|entry| entry.path().to_owned())
        .collect();
    assert!(leftovers.is_empty(), "partial copies left in the state directory: {leftovers:?}");
}
