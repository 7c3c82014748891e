//! The HTTP side of `pushdeploy serve`: one `POST /hooks/<site>` per site, each delivery
//! verified before anything else is read from it, answered at once, and its deploy queued.
//!
//! hyper 1 (HTTP/1 server only) with hyper-util's tokio glue: a webhook receiver needs one
//! route and no middleware, so a framework such as axum would add a router, tower and their
//! dependencies for nothing; hyper is what axum itself runs on, and is well kept.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::delivery::{self, Event, Invalid};
use super::{fetch, signature};
use crate::config::{Previews, Provider};
use crate::report::{self, escape};

/// How long a client may take to send a request's head, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open, however busy: a slow client cannot hold a permit.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The path prefix of the sites' endpoints.
pub const PATH_PREFIX: &str = "/hooks/";

/// One site `serve` deploys, as read from its configuration when `serve` started. (No
/// `Debug`: it holds the secret.)
#[derive(Clone)]
pub struct Site {
    /// The name in its endpoint's path: `/hooks/<name>`.
    pub name: String,
    /// The bare repository.
    pub repo: PathBuf,
    /// The deploy branch.
    pub branch: String,
    pub provider: Provider,
    pub url: String,
    pub secret: Vec<u8>,
    pub fetch_timeout: Duration,
    /// The `[previews]` table: which other branches deploy, each into its preview.
    pub previews: Option<Previews>,
}

impl Site {
    /// Tells whether a push of `branch` deploys (or, deleted, removes) a preview.
    fn previews(&self, branch: &str) -> bool {
        branch != self.branch
            && self.previews.as_ref().is_some_and(|previews| previews.matches(branch))
    }
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The largest request body taken; a larger one is answered 413 unread.
    pub max_body: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Fetches and deploys run at once, across all sites (one at a time per site always).
    pub jobs: usize,
    /// The program run for each deploy: this executable.
    pub program: PathBuf,
}

/// What every connection shares.
struct State {
    sites: HashMap<String, Site>,
    settings: Settings,
    /// Per site: whether its worker runs, and the branches waiting for it.
    queues: Mutex<HashMap<String, Queue>>,
    jobs: Arc<Semaphore>,
}

#[derive(Default)]
struct Queue {
    busy: bool,
    /// Branches to fetch and deploy; deliveries for a branch already waiting coalesce into
    /// one fetch of its newest commit (newest wins, as with pushes).
    pending: BTreeSet<String>,
}

/// Serves until SIGTERM or SIGINT, then waits for the deploys in progress.
pub fn serve(settings: Settings, sites: Vec<Site>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(settings.listen).await?;
        let address = listener.local_addr()?;
        for site in &sites {
            report::line(&format!(
                "POST http://{address}{PATH_PREFIX}{} deploys {} ({} webhook, fetching from {})",
                site.name,
                report::escape_path(&site.repo),
                site.provider.name(),
                shown_url(&site.url)
            ));
        }
        report::line(&format!("listening on {address}"));
        let state = Arc::new(State {
            sites: sites.into_iter().map(|site| (site.name.clone(), site)).collect(),
            jobs: Arc::new(Semaphore::new(settings.jobs.max(1))),
            settings,
            queues: Mutex::new(HashMap::new()),
        });
        accept_until_signal(&listener, &state).await?;
        drop(listener);
        report::line("stopping: no more deliveries are accepted; waiting for deploys in progress");
        while state.busy() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
}

async fn accept_until_signal(listener: &TcpListener, state: &Arc<State>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let connections = Arc::new(Semaphore::new(state.settings.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit,
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        let Ok(permit) = permit else { return Ok(()) };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: wait rather than spin.
                    report::line(&format!("cannot accept a connection: {err}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&state), peer, request));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

type Answer = Response<Full<Bytes>>;

/// Answers `status` with one line of text.
fn answer(status: StatusCode, text: impl Into<String>) -> Answer {
    let mut text = text.into();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let Some(name) = request.uri().path().strip_prefix(PATH_PREFIX) else {
        return Ok(answer(StatusCode::NOT_FOUND, "no such endpoint; POST to /hooks/<site>"));
    };
    let Some(site) = state.sites.get(name) else {
        return Ok(answer(StatusCode::NOT_FOUND, "no such site"));
    };
    if request.method() != Method::POST {
        let mut refused = answer(StatusCode::METHOD_NOT_ALLOWED, "only POST");
        refused.headers_mut().insert("allow", hyper::header::HeaderValue::from_static("POST"));
        return Ok(refused);
    }
    let max = state.settings.max_body;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        log(site, peer, &format!("refused: a body of {} bytes, over {max}", declared.unwrap_or(0)));
        return Ok(too_large(max));
    }
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            log(site, peer, &format!("refused: a body over {max} bytes"));
            return Ok(too_large(max));
        }
        Ok(Err(_)) => return Ok(answer(StatusCode::BAD_REQUEST, "cannot read the body")),
        Err(_) => return Ok(answer(StatusCode::REQUEST_TIMEOUT, "the body took too long")),
    };
    Ok(deliver(&state, site, peer, &parts.headers, &body))
}

fn too_large(max: usize) -> Answer {
    answer(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max} bytes"))
}

/// Acts on a delivery whose body was read whole: verify, parse, then queue or ignore.
fn deliver(
    state: &Arc<State>,
    site: &Site,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let header = |name: &str| headers.get(name).map(|value| value.as_bytes());
    if let Err(refused) = signature::verify(site.provider, &site.secret, body, header) {
        log(site, peer, &format!("refused: {refused}; nothing was run"));
        return answer(StatusCode::UNAUTHORIZED, "signature missing or wrong");
    }
    let event = match delivery::parse(site.provider, body, header) {
        Ok(event) => event,
        Err(Invalid::Malformed(why)) => {
            log(site, peer, &format!("refused a signed delivery: {}", escape(&why)));
            return answer(StatusCode::BAD_REQUEST, why);
        }
        Err(Invalid::Ref(name)) => {
            log(site, peer, &format!("refused the ref {}: not a plain branch name", escape(&name)));
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the ref is not a branch name pushdeploy deploys (letters, digits, . _ - / only)",
            );
        }
    };
    let ignored = |why: String| {
        log(site, peer, &format!("ignored: {why}"));
        answer(StatusCode::OK, format!("ignored: {why}"))
    };
    match event {
        Event::Ping => answer(StatusCode::OK, "pong"),
        Event::Other(name) => ignored(format!("{} events do not deploy", escape(&name))),
        Event::NotABranch { name } => ignored(format!(
            "{} is not a branch; only pushes to the branch {:?} deploy",
            escape(&name),
            site.branch
        )),
        Event::Push { branch, after: None } if branch == site.branch => ignored(format!(
            "the deploy branch {:?} was deleted; the live site stays as it is",
            site.branch
        )),
        Event::Push { branch, after: Some(after) } if branch == site.branch => {
            log(site, peer, &format!("accepted a push of {branch} ({})", &after[..12]));
            enqueue(state, site, branch);
            answer(StatusCode::ACCEPTED, "accepted: fetching and deploying")
        }
        Event::Push { branch, after } if site.previews(&branch) => {
            let what = match after {
                Some(after) => format!("a push of {branch} ({}), a preview", &after[..12]),
                None => format!("the deletion of {branch}, a preview"),
            };
            log(site, peer, &format!("accepted {what}"));
            enqueue(state, site, branch);
            answer(StatusCode::ACCEPTED, "accepted: fetching and deploying the preview")
        }
        Event::Push { branch, .. } => {
            ignored(format!("only pushes to the branch {:?} deploy, not {:?}", site.branch, branch))
        }
    }
}

/// Returns a repository URL fit for the log: a password or token in it (`https://user:TOKEN@…`)
/// is replaced by `***`.
fn shown_url(url: &str) -> String {
    let redacted = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) if rest[..at].contains(':') || scheme.starts_with("http") => {
                    format!("{scheme}://***{}", &rest[at..])
                }
                _ => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    escape(&redacted)
}

fn log(site: &Site, peer: SocketAddr, message: &str) {
    report::line(&format!("{} (from {peer}): {message}", site.name));
}

/// Queues a fetch and deploy of `branch`, starting the site's worker when it is idle.
fn enqueue(state: &Arc<State>, site: &Site, branch: String) {
    let mut queues = state.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let queue = queues.entry(site.name.clone()).or_default();
    queue.pending.insert(branch);
    if !queue.busy {
        queue.busy = true;
        tokio::spawn(work(Arc::clone(state), site.clone()));
    }
}

impl State {
    /// Takes the branches waiting for `site`, or marks its worker idle when there are none.
    fn take_pending(&self, site: &str) -> Vec<String> {
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let queue = queues.entry(site.to_owned()).or_default();
        let pending: Vec<String> = std::mem::take(&mut queue.pending).into_iter().collect();
        queue.busy = !pending.is_empty();
        pending
    }

    /// Tells whether any site's worker is still fetching or deploying.
    fn busy(&self) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.values().any(|queue| queue.busy)
    }
}

/// Fetches and deploys what is queued for one site, in order, until nothing is.
async fn work(state: Arc<State>, site: Site) {
    loop {
        let pending = state.take_pending(&site.name);
        if pending.is_empty() {
            return;
        }
        let Ok(_permit) = state.jobs.acquire().await else { return };
        for branch in pending {
            fetch_and_deploy(&state.settings, &site, &branch).await;
        }
    }
}

async fn fetch_and_deploy(settings: &Settings, site: &Site, branch: &str) {
    let say = |message: String| report::line(&format!("{}: {message}", site.name));
    let timeout = site.fetch_timeout;
    // A preview's branch may have been deleted: only the hosted repository says so for sure
    // (a delivery can be replayed), and then the bare repository's branch goes too.
    let gone = match branch != site.branch {
        true => match fetch::remote_has_branch(&site.repo, &site.url, branch, timeout).await {
            Ok(exists) => !exists,
            Err(why) => {
                say(format!(
                    "cannot ask {} about {branch}, nothing done: {why}",
                    shown_url(&site.url)
                ));
                return;
            }
        },
        false => false,
    };
    if gone {
        if let Err(why) = fetch::delete_branch(&site.repo, branch, timeout).await {
            say(format!("cannot delete {branch} from the repository: {why}"));
            return;
        }
    } else {
        say(format!("fetching {branch} from {}", shown_url(&site.url)));
        if let Err(why) = fetch::fetch_branch(&site.repo, &site.url, branch, timeout).await {
            say(format!("fetch of {branch} failed, nothing deployed: {why}"));
            return;
        }
    }
    let mut command = tokio::process::Command::new(&settings.program);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_none_or(|key| key.starts_with("GIT_")) {
            command.env_remove(&key);
        }
    }
    command
        .arg("webhook-deploy")
        .arg("--repo")
        .arg(&site.repo)
        .arg("--branch")
        .arg(branch)
        .env("GIT_PUSHER", site.provider.name())
        // The history would add the address of whoever started serve over SSH.
        .env_remove("SSH_CLIENT")
        .stdin(std::process::Stdio::null());
    match command.status().await {
        Ok(status) if status.success() => {}
        Ok(status) => say(format!("the deploy of {branch} ended with {status}")),
        Err(err) => say(format!("cannot run the deploy of {branch}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn urls_in_the_log_hide_credentials() {
        assert_eq!(
            shown_url("https://x-access-token:ghp_abc@github.com/a/b.git"),
            "https://***@github.com/a/b.git"
        );
        assert_eq!(
            shown_url("https://ghp_abc@github.com/a/b.git"),
            "https://***@github.com/a/b.git"
        );
        assert_eq!(shown_url("ssh://git@example.com/a/b.git"), "ssh://git@example.com/a/b.git");
        assert_eq!(shown_url("git@github.com:a/b.git"), "git@github.com:a/b.git");
        assert_eq!(shown_url("/srv/hosted/b.git"), "/srv/hosted/b.git");
    }
}
