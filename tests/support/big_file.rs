//! A 200 MB file pushed on a branch of its own, and the memory a deploy of it uses.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use super::{BIN, TestEnv};

/// Writes `len` pseudo-random bytes (xorshift64*, fixed seed) to `path`: incompressible, fast
/// to make, the same on every run.
#[track_caller]
pub fn write_pseudo_random(path: &Path, len: usize) {
    let mut file = fs::File::create(path).expect("create the random file");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).expect("write the random file");
        left -= n;
    }
}

/// Git options that store rather than compress: incompressible bytes stay quick to handle.
pub const STORE: [&str; 6] =
    ["-c", "core.compression=0", "-c", "core.looseCompression=0", "-c", "pack.compression=0"];

/// The most memory a deploy of a 200 MB file may use.
pub const MEMORY_LIMIT: u64 = 100 << 20;

/// Returns an environment whose branch `big` (which does not deploy, so that the deploy can be
/// measured on its own) adds a 200 MB file of pseudo-random bytes to the live site; and the
/// branch's commit.
pub fn env_with_200_mb_branch() -> (TestEnv, String) {
    let (env, _, _) = TestEnv::with_live_site();
    write_pseudo_random(&env.work.join("big.bin"), 200_000_000);
    let _ = env.git().args(STORE).args(["add", "big.bin"]).success();
    let _ = env.git().args(["commit", "--quiet", "-m", "big"]).success();
    let commit = env.rev_parse("HEAD");
    let _ =
        env.git().args(STORE).args(["push", "--quiet", "origin", "HEAD:refs/heads/big"]).success();
    (env, commit)
}

/// What one deploy used.
pub struct Measured {
    /// The deploy's stderr, with the temp dir spelled `$TMP`.
    pub stderr: String,
    /// Peak resident set size of the deploy and its children, as `/usr/bin/time` reports it:
    /// this counts the pages of files it maps, which the kernel can drop at any time.
    pub peak_rss: u64,
    /// Peak anonymous memory (heap, stacks) of the deploy and its children, sampled.
    pub peak_anon: u64,
}

impl Measured {
    /// Asserts the deploy of the branch `big` put `commit` live in green, `big.bin` as its blob.
    #[track_caller]
    pub fn assert_big_live(&self, env: &TestEnv, commit: &str) {
        let live = format!("pushdeploy: live: {} (big) in green", super::short(commit));
        assert!(
            self.stderr.lines().last().is_some_and(|line| line.starts_with(&live)),
            "{}",
            self.stderr
        );
        assert_live_file_is_blob(env, "big.bin", "big");
    }
}

/// Runs `pushdeploy deploy --repo BARE REV` under `/usr/bin/time -v`, sampling the anonymous
/// memory of its process tree meanwhile; asserts it succeeded.
#[track_caller]
pub fn deploy_measured(env: &TestEnv, rev: &str) -> Measured {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "GNU time is missing: apt-get install time (.ci/run does)"
    );
    let report = env.root.join("time-report.txt");
    let stderr = env.root.join("deploy-stderr.txt");
    let script = "exec /usr/bin/time -v -o \"$0\" \"$1\" deploy --repo \"$2\" \"$3\" 2>\"$4\"";
    let mut time = env
        .command("sh")
        .args(["-c", script])
        .arg(&report)
        .arg(BIN)
        .arg(&env.bare)
        .arg(rev)
        .arg(&stderr)
        .spawn();
    let mut peak_anon = 0;
    let status = loop {
        if let Some(status) = time.try_wait().expect("poll the deploy") {
            break status;
        }
        let anon: u64 = descendants(time.id()).iter().map(|pid| anon_bytes(*pid)).sum();
        peak_anon = peak_anon.max(anon);
        thread::sleep(Duration::from_millis(2));
    };
    let report = fs::read_to_string(&report).expect("read the report of time");
    let stderr = fs::read_to_string(&stderr)
        .expect("read the deploy's stderr")
        .replace(&env.root.to_string_lossy()[..], "$TMP");
    assert!(
        status.success(),
        "the deploy failed ({status}; peak anonymous memory {}):\n{stderr}\n{report}",
        mib(peak_anon)
    );
    let peak_rss = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the report of time:\n{report}"))
        * 1024;
    Measured { stderr, peak_rss, peak_anon }
}

/// Returns the processes below `pid`, from `/proc/PID/task/*/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else { continue };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|pid| pid.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Returns a process's anonymous resident memory (`RssAnon`), 0 once it is gone.
fn anon_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kb| kb.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Returns a size in MiB, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Asserts the live release's `path` holds the blob `path` has in `rev`, with mode 0644.
#[track_caller]
pub fn assert_live_file_is_blob(env: &TestEnv, path: &str, rev: &str) {
    let live = env.live_dir().join(path);
    let hashed = env.git_in(&env.bare).args(["hash-object"]).arg(&live).success();
    let blob = env.git_in(&env.bare).args(["rev-parse", &format!("{rev}:{path}")]).success();
    assert_eq!(hashed.stdout.trim(), blob.stdout.trim(), "{path} differs from its blob");
    let mode = fs::metadata(&live).expect("stat the live file").mode() & 0o7777;
    assert_eq!(mode, 0o644, "{path} has mode {mode:o}");
}
