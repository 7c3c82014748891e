//! A real `pushdeploy serve` on a free loopback port, a second bare repository that plays the
//! hosted one (GitHub, Gitea), and deliveries signed with a real HMAC.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::Sha256;

use super::history::history;
use super::{BIN, TestEnv, toml_str};

/// The shared secret of every test site.
pub const SECRET: &str = "test-secret-0123456789abcdef";
/// How long a delivery may take to be fetched and deployed.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes `hosted.git` beside the site's bare repository, adds it to the work clone as the
/// remote `hosted`, writes the secret file and a config whose `[webhook]` fetches from it.
/// Returns the hosted repository's path.
#[track_caller]
pub fn host(env: &TestEnv, provider: &str, extra_config: &str) -> PathBuf {
    let hosted = env.root.join("hosted.git");
    let _ = env.git_in(&env.root).args(["init", "--quiet", "--bare"]).arg(&hosted).success();
    let _ = env.git().args(["remote", "add", "hosted"]).arg(&hosted).success();
    let secret_file = env.root.join("webhook.secret");
    fs::write(&secret_file, format!("{SECRET}\n")).expect("write the secret");
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    env.write_config(&format!(
        "{}{extra_config}\n[webhook]\nprovider = \"{provider}\"\nurl = {}\nsecret_file = {}\nfetch_timeout = \"30s\"\n",
        env.base_config(),
        toml_str(&hosted.to_string_lossy()),
        toml_str(&secret_file.to_string_lossy()),
    ));
    hosted
}

/// Pushes `refspec` from the work clone to the hosted repository (no hook runs there).
#[track_caller]
pub fn push_hosted(env: &TestEnv, refspec: &str) {
    let _ = env.git().args(["push", "--quiet", "--force", "hosted", refspec]).success();
}

/// Returns the HMAC-SHA256 of `body` as GitHub's `X-Hub-Signature-256` spells it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Returns a push event's JSON as the providers send it (trimmed to what matters).
pub fn push_payload(ref_name: &str, after: &str) -> String {
    serde_json::json!({
        "ref": ref_name,
        "before": "0".repeat(40),
        "after": after,
        "repository": { "full_name": "team/site" },
        "pusher": { "name": "alice" },
    })
    .to_string()
}

/// Returns the headers of a GitHub push delivery of `body`, signed with `secret`.
pub fn github_headers(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("X-GitHub-Event".into(), "push".into()),
        ("X-GitHub-Delivery".into(), "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        ("X-Hub-Signature-256".into(), sign(secret, body)),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// Returns the headers of a Gitea push delivery of `body`: its own event and signature
/// headers, the signature as plain hex.
pub fn gitea_headers(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let signature = sign(secret, body);
    vec![
        ("X-Gitea-Event".into(), "push".into()),
        ("X-Gitea-Delivery".into(), "b2b3f5c6-0000-4000-8000-000000000001".into()),
        ("X-Gitea-Signature".into(), signature["sha256=".len()..].to_owned()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// A running `pushdeploy serve`; dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Receiver {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Receiver {
    /// Starts `pushdeploy serve --repo REPO` for each of `repos` on a free loopback port, with
    /// `extra` arguments, and waits until it accepts connections.
    #[track_caller]
    pub fn start(env: &TestEnv, repos: &[&Path], extra: &[&str]) -> Receiver {
        let log = env.root.join("serve.log");
        for _attempt in 0..3 {
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut cmd = env.command(BIN).arg("serve").arg("--listen").arg(addr.to_string());
            for repo in repos {
                cmd = cmd.arg("--repo").arg(repo);
            }
            cmd = cmd.args(extra);
            let file = fs::File::create(&log).expect("create serve.log");
            let mut command = cmd.command;
            command
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("clone log file"))
                .stderr(file);
            let child = command.spawn().unwrap_or_else(|e| panic!("cannot start serve: {e}"));
            let mut receiver = Receiver { child, addr, log: log.clone() };
            if receiver.wait_ready() {
                return receiver;
            }
            // Another process took the port: try another. (Drop stops it.)
        }
        panic!("pushdeploy serve did not start:\n{}", fs::read_to_string(&log).unwrap_or_default());
    }

    /// Waits until the port accepts connections; `false` if serve exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Returns what serve printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` with `headers` to `/hooks/<site>`; returns the status and the body.
    #[track_caller]
    pub fn post(&self, site: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
        post(self.addr, site, headers, body).unwrap_or_else(|err| panic!("{err}\n{}", self.log()))
    }
}

/// POSTs `body` with `headers` to `http://ADDR/hooks/<site>`; returns the status and the body.
pub fn post(
    addr: SocketAddr,
    site: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut request = agent.post(format!("http://{addr}/hooks/{site}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send(body) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            Ok((status, text))
        }
        Err(err) => Err(format!("POST to serve failed: {err}")),
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- pushdeploy serve's log ---\n{}", self.log());
        }
    }
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("local address").port()
}

/// Waits until the history has `count` entries; returns them, newest first.
#[track_caller]
pub fn wait_for_history(env: &TestEnv, receiver: &Receiver, count: usize) -> Vec<Value> {
    wait_for_history_logged(env, count, || receiver.log())
}

/// Waits as [`wait_for_history`] does, with `log` telling what serve printed on failure.
#[track_caller]
pub fn wait_for_history_logged(
    env: &TestEnv,
    count: usize,
    log: impl Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    loop {
        let entries = history(env);
        if entries.len() >= count {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "the history has {} entries, not {count}, after {DEPLOY_TIMEOUT:?}; serve's log:\n{}",
            entries.len(),
            log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}
