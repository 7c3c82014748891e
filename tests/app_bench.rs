//! The app benchmark of BENCHMARKS.md (issue 13), not a test: `bench/app.sh` runs it with a
//! release build (`--ignored`). For an app whose health answers as soon as it boots (the test
//! app under Debian's gunicorn), it times from the end of the build (the release in place) to
//! the first answer from the new commit through the proxy, side by side in one run and
//! interleaved round by round:
//! - `pushdeploy deploy` behind nginx and behind Caddy (phase 1 included: a conservative
//!   figure; the release here is three files);
//! - seed 003's bash flow behind nginx and seed 001's flow behind Caddy (bench/apps/*.sh),
//!   on a site of their own with the same units, app and proxy configuration;
//! - the floor: the app alone, `systemctl start` and a health poll every 2 ms.
//!
//! pushdeploy's overhead is its time to live less the floor: everything but waiting on the
//! app (systemd's and the proxy's own work included); a second figure takes off, run by run,
//! the wait its own health gate reports instead of the floor. Peak RSS is the pushdeploy
//! process's own (`VmHWM`, sampled), not its children's.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::os::unix::ffi::OsStrExt as _;

use crate::support::app::AppSite;
use crate::support::caddy::CaddySite;
use crate::support::load::Connection;
use crate::support::nginx::NginxSite;
use crate::support::{BIN, Cmd, Output};

/// How many rounds: `PUSHDEPLOY_BENCH_ROUNDS`, default 5.
fn rounds() -> usize {
    std::env::var("PUSHDEPLOY_BENCH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(5)
}

/// One run of a contender.
#[derive(Clone, Copy)]
struct Sample {
    /// From the start of the command to the first answer from the new commit.
    live: Duration,
    /// From the start of the command to its exit (drain and stop of the old instance included).
    done: Duration,
    /// Peak RSS in KiB (pushdeploy only).
    rss_kib: Option<u64>,
    /// How long pushdeploy's health gate waited for the app, as it says (pushdeploy only).
    gate: Option<Duration>,
}

/// A site whose deploys a bash flow does after pushdeploy's first one: the script, how it
/// names the proxy's file and configuration, and the slot live now.
struct Scripted<'a> {
    site: &'a AppSite,
    front: SocketAddr,
    script: PathBuf,
    proxy_args: [String; 2],
    live: &'static str,
}

#[test]
#[ignore = "a benchmark, not a test: bench/app.sh runs it with a release build"]
fn app_switch_benchmark() {
    let nginx = NginxSite::new("pdbn1-").expect("nginx, gunicorn and systemd");
    let nginx_bash = NginxSite::new("pdbn2-").expect("nginx, gunicorn and systemd");
    let caddy = CaddySite::new("pdbc1-").expect("caddy, gunicorn and systemd");
    let caddy_bash = CaddySite::new("pdbc2-").expect("caddy, gunicorn and systemd");
    for site in [&nginx.site, &nginx_bash.site, &caddy.site, &caddy_bash.site] {
        let commit = site.commit("ok", "first");
        site.push().assert_live(&commit, "refs/heads/main", "blue");
    }
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/apps");
    let mut nginx_flow = Scripted {
        site: &nginx_bash.site,
        front: nginx_bash.front,
        script: apps.join("seed003-nginx.sh"),
        proxy_args: [&nginx_bash.link, &nginx_bash.config].map(|p| p.display().to_string()),
        live: "blue",
    };
    let snippet = caddy_bash.site.env.target.join(".pushdeploy/proxy/upstream.caddy");
    let mut caddy_flow = Scripted {
        site: &caddy_bash.site,
        front: caddy_bash.front,
        script: apps.join("seed001-caddy.sh"),
        proxy_args: [&snippet, &caddy_bash.caddyfile].map(|p| p.display().to_string()),
        live: "blue",
    };
    let names = ["pushdeploy, nginx", "seed 003 bash flow, nginx", "pushdeploy, Caddy"];
    let names = [names[0], names[1], names[2], "seed 001 flow, Caddy", "the app alone (floor)"];
    let mut samples: [Vec<Sample>; 5] = Default::default();
    for round in 1..=rounds() {
        samples[0].push(pushdeploy_round(&nginx.site, nginx.front, round));
        let (flow, floor) = nginx_flow.round(round);
        samples[1].push(flow);
        samples[4].push(floor);
        samples[2].push(pushdeploy_round(&caddy.site, caddy.front, round));
        let (flow, floor) = caddy_flow.round(round);
        samples[3].push(flow);
        samples[4].push(floor);
        eprintln!("round {round} done");
    }
    print_table(&names, &samples);
}

/// Deploys a new commit with `pushdeploy deploy` (the commit reaches the repository first on a
/// branch that does not deploy, so the time is pushdeploy's alone).
fn pushdeploy_round(site: &AppSite, front: SocketAddr, round: usize) -> Sample {
    let commit = site.commit("ok", &format!("pushdeploy {round}"));
    let push = site.systemd.run_in(&site.env, &site.env.work, "git");
    let _ = push.args(["push", "-q", "origin", "HEAD:refs/heads/bench"]).success();
    let start = Instant::now();
    let watcher = watch(front, commit.clone(), start);
    let deploy = site.systemd.run(&site.env, BIN).args(["deploy", "--repo"]).arg(&site.env.bare);
    let (output, rss_kib) = sampling_rss(deploy.arg(&commit), &site.env.bare);
    let done = start.elapsed();
    let live = watcher.join().expect("the watcher").unwrap_or_else(|| panic!("{output}"));
    let gate = output.pushdeploy_lines().iter().find_map(|line| {
        let seconds = line.split_once(" answered HTTP 200 after ")?.1.strip_suffix(" s")?;
        Some(Duration::from_secs_f64(seconds.parse().ok()?))
    });
    let gate = gate.unwrap_or_else(|| panic!("no health gate line\n{output}"));
    Sample { live, done, rss_kib, gate: Some(gate) }
}

impl Scripted<'_> {
    /// Puts a new commit's release into the idle slot (untimed: the build's part), measures
    /// the floor there, then times the script; returns the script's sample and the floor's.
    fn round(&mut self, round: usize) -> (Sample, Sample) {
        let (site, new) = (self.site, if self.live == "blue" { "green" } else { "blue" });
        let commit = site.commit("ok", &format!("script {round}"));
        let slot = site.env.target.join(new);
        if slot.exists() {
            fs::remove_dir_all(&slot).expect("remove the idle slot");
        }
        fs::create_dir(&slot).expect("create the idle slot");
        let archive = site.env.git_in(&site.env.work).args(["archive", &commit]).success();
        let _ =
            site.env.command("tar").arg("-xC").arg(&slot).stdin(archive.stdout_bytes()).success();
        let env_file = site.env_file(&format!("{new}.env"));
        let text = fs::read_to_string(&env_file).expect("the slot's env file");
        let text: String = text
            .lines()
            .map(|line| match line.starts_with("PUSHDEPLOY_COMMIT=") {
                true => format!("PUSHDEPLOY_COMMIT={commit}\n"),
                false => format!("{line}\n"),
            })
            .collect();
        fs::write(&env_file, text).expect("write the slot's env file");
        let port = if new == "blue" { site.blue } else { site.green };
        let floor = floor(site, new, port);

        let start = Instant::now();
        let watcher = watch(self.front, commit.clone(), start);
        let script = site.systemd.run_as_root(&site.env, "sh").arg(&self.script);
        let script = script.args([new, self.live]).arg(port.to_string()).args(&self.proxy_args);
        let output = script.success();
        let done = start.elapsed();
        let live = watcher.join().expect("the watcher").unwrap_or_else(|| panic!("{output}"));
        self.live = new;
        (Sample { live, done, rss_kib: None, gate: None }, floor)
    }
}

/// Runs `command` (a `pushdeploy` on `repo`), sampling the peak RSS (`VmHWM`) of that
/// pushdeploy process alone every 5 ms: `/usr/bin/time` would report its largest child instead
/// (`caddy adapt` is a Go program of some 30 MiB).
fn sampling_rss(command: Cmd, repo: &Path) -> (Output, Option<u64>) {
    let repo = repo.as_os_str().as_bytes();
    let ours = |cmdline: &[u8]| {
        let mut args = cmdline.split(|b| *b == 0);
        args.next() == Some(BIN.as_bytes()) && args.any(|arg| arg == repo)
    };
    thread::scope(|scope| {
        let running = scope.spawn(|| command.success());
        let mut peak = None;
        while !running.is_finished() {
            for entry in fs::read_dir("/proc").expect("list /proc").flatten() {
                let dir = entry.path();
                if !fs::read(dir.join("cmdline")).is_ok_and(|cmdline| ours(&cmdline)) {
                    continue;
                }
                let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
                let hwm = status.lines().find_map(|line| line.strip_prefix("VmHWM:"));
                let kib = hwm.and_then(|kib| kib.trim().trim_end_matches(" kB").parse().ok());
                peak = peak.max(kib);
            }
            thread::sleep(Duration::from_millis(5));
        }
        (running.join().expect("the deploy"), peak)
    })
}

/// Starts `slot`'s instance and polls its health every 2 ms: the time the app itself takes.
fn floor(site: &AppSite, slot: &str, port: u16) -> Sample {
    let unit = site.unit(slot);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let started = site.systemd.systemctl(&["start", &unit]);
    assert!(started.status.success(), "{started}");
    loop {
        let answer = Connection::new(addr, Duration::from_secs(2)).get("/health");
        if answer.is_ok_and(|answer| answer.status == 200) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", site.systemd.journal(&unit));
        thread::sleep(Duration::from_millis(2));
    }
    let live = start.elapsed();
    let stopped = site.systemd.systemctl(&["stop", &unit]);
    assert!(stopped.status.success(), "{stopped}");
    Sample { live, done: live, rss_kib: None, gate: None }
}

/// Polls `front` every 5 ms on a new connection; returns when an answer comes from `commit`
/// (the time since `start`), `None` after 30 s.
fn watch(front: SocketAddr, commit: String, start: Instant) -> JoinHandle<Option<Duration>> {
    thread::spawn(move || {
        while start.elapsed() < Duration::from_secs(30) {
            let answer = Connection::new(front, Duration::from_secs(2)).get("/");
            if answer.is_ok_and(|answer| answer.header("x-pushdeploy-commit") == Some(&commit)) {
                return Some(start.elapsed());
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// Prints the medians (min–max) per contender and pushdeploy's overhead over the floor.
fn print_table(names: &[&str; 5], samples: &[Vec<Sample>; 5]) {
    let median = |mut values: Vec<Duration>| {
        values.sort();
        (values[values.len() / 2], values[0], values[values.len() - 1])
    };
    let seconds = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let floor = median(samples[4].iter().map(|s| s.live).collect()).0;
    println!("\n| contender | to live, median (min–max) | command done, median | peak RSS |");
    println!("| --- | --- | --- | --- |");
    for (name, runs) in names.iter().zip(samples) {
        let (live, low, high) = median(runs.iter().map(|s| s.live).collect());
        let (done, _, _) = median(runs.iter().map(|s| s.done).collect());
        let rss = runs.iter().filter_map(|s| s.rss_kib).max();
        let rss = rss.map_or("".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
        println!(
            "| {name} | {} s ({}–{}) | {} s | {rss} |",
            seconds(live),
            seconds(low),
            seconds(high),
            seconds(done)
        );
    }
    for (name, runs) in [(names[0], &samples[0]), (names[2], &samples[2])] {
        let live = median(runs.iter().map(|s| s.live).collect()).0;
        let less_gate = runs.iter().map(|s| s.live.saturating_sub(s.gate.unwrap_or_default()));
        println!(
            "{name}: overhead over the floor {} s; to live less its own gate's wait, median {} s",
            seconds(live.saturating_sub(floor)),
            seconds(median(less_gate.collect()).0)
        );
    }
    println!("rounds: {}, floor samples: {}", samples[0].len(), samples[4].len());
}
