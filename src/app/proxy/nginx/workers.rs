//! The nginx master and its workers, as `/proc` shows them. The master's pid comes from the
//! pid file its configuration names; its children are found by their parent pid, each known
//! by its pid and start time (so that a pid reused after a worker exited is not taken for
//! it), and told apart by the title nginx gives it.
//!
//! A reload (SIGHUP to the master) parses the configuration, starts new workers, waits 100 ms
//! and sends the old ones SIGQUIT. In one step of its event loop (ngx_worker_process_cycle)
//! an old worker then renames itself `nginx: worker process is shutting down`, closes its
//! listening sockets and its idle keep-alive connections; it exits when its last request in
//! flight is answered. So a renamed worker takes no new request, and an exited one has none
//! left. Nothing here needs root: the pid file and `/proc` are readable by the git user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::report::{escape, escape_path};

/// The title of a worker that accepts requests.
const WORKER: &str = "nginx: worker process";
/// How a master's title starts (the rest is its command line).
const MASTER: &str = "nginx: master process";
/// How often the workers are looked at.
const POLL: Duration = Duration::from_millis(20);

/// A process, known by its pid and its start time (in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    start: u64,
}

/// One child of the master, as it was when looked at.
#[derive(Debug, Clone)]
pub struct Child {
    process: Process,
    title: String,
}

/// The running nginx master of a configuration.
#[derive(Debug)]
pub struct Master {
    process: Process,
    pid_file: PathBuf,
}

impl Master {
    /// Returns the master whose pid the configuration's pid file holds; fails when nginx does
    /// not run (no pid file, a pid that is not an nginx master).
    pub fn of(config: &Path) -> Result<Master, String> {
        let pid_file = pid_file(config)?;
        let shown = escape_path(&pid_file);
        let text = fs::read_to_string(&pid_file).map_err(|err| {
            format!("cannot read nginx's pid file {shown}: {err}; is nginx running?")
        })?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("nginx's pid file {shown} holds no pid: {:?}", escape(&text)))?;
        let not_master = |what: String| {
            format!("nginx's pid file {shown} names pid {pid}, {what}; is nginx running?")
        };
        let (_, start) = stat(pid).ok_or_else(|| not_master("which is not running".into()))?;
        let title = title(pid);
        if !title.starts_with(MASTER) {
            return Err(not_master(format!(
                "which is not an nginx master but {:?}",
                escape(&title)
            )));
        }
        Ok(Master { process: Process { pid, start }, pid_file })
    }

    /// Returns the master's children (workers, cache manager and loader); fails when the
    /// master itself has exited.
    pub fn children(&self) -> Result<Vec<Child>, String> {
        if !alive(self.process) {
            return Err(format!(
                "the nginx master (pid {}, from {}) has exited",
                self.process.pid,
                escape_path(&self.pid_file)
            ));
        }
        let entries = fs::read_dir("/proc").map_err(|err| format!("cannot list /proc: {err}"))?;
        let pids = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok());
        let children = pids
            .filter_map(|pid| {
                let (parent, start) = stat(pid)?;
                (parent == self.process.pid)
                    .then(|| Child { process: Process { pid, start }, title: title(pid) })
            })
            .collect();
        Ok(children)
    }

    /// Waits, at most `timeout`, until a worker that was not in `before` runs and every
    /// worker of `before` stopped accepting (renamed or gone): from then on, new connections
    /// and keep-alive requests reach only workers of the new configuration.
    pub fn wait_switched(&self, before: &[Child], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.children()?;
            let is_new = |child: &&Child| before.iter().all(|old| old.process != child.process);
            let started = now.iter().filter(is_new).any(|child| child.title == WORKER);
            let accepting = before
                .iter()
                .filter(|old| now.iter().any(|c| c.process == old.process && c.title == WORKER))
                .count();
            if started && accepting == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seconds = humantime::format_duration(timeout);
                return Err(if started {
                    format!(
                        "{accepting} old nginx worker(s) still accepted requests {seconds} after the reload"
                    )
                } else {
                    format!(
                        "nginx started no new worker within {seconds} of the reload: its error log says why"
                    )
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Waits, at most `timeout`, until every child of `before` has exited.
    pub fn wait_exited(&self, before: &[Child], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<i32> = before
                .iter()
                .filter(|child| alive(child.process))
                .map(|child| child.process.pid)
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} old nginx worker(s) (pid {left:?}) still running after {}",
                    left.len(),
                    humantime::format_duration(timeout)
                ));
            }
            thread::sleep(POLL);
        }
    }
}

/// Returns a process's parent pid and start time; `None` when it has exited (a zombie has).
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, the rest cannot.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // Field 4 is the parent, field 22 the start time; `fields` starts at field 3.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Tells whether `process` still runs (the same pid with the same start time).
fn alive(process: Process) -> bool {
    stat(process.pid).is_some_and(|(_, start)| start == process.start)
}

/// Returns a process's title: nginx writes it over its command line, padded with NULs.
fn title(pid: i32) -> String {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// Returns the pid file the configuration names (`pid` in its main context), or nginx's
/// compiled-in one (`nginx -V`: `--pid-path`); a relative one is in nginx's prefix.
fn pid_file(config: &Path) -> Result<PathBuf, String> {
    let text = fs::read_to_string(config)
        .map_err(|err| format!("cannot read {}: {err}", escape_path(config)))?;
    let path = match main_directive(&text, "pid") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(compiled("--pid-path").unwrap_or_else(|| "logs/nginx.pid".into())),
    };
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(PathBuf::from(compiled("--prefix").unwrap_or_else(|| "/usr/local/nginx".into())).join(path))
}

/// Returns the value of `--OPTION=` among the configure arguments `nginx -V` prints.
fn compiled(option: &str) -> Option<String> {
    let output = Command::new(super::NGINX).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&output.stderr);
    let prefix = format!("{option}=");
    text.split_whitespace().find_map(|word| Some(word.strip_prefix(&prefix)?.to_owned()))
}

/// Returns the argument of the directive `name` in the main context of a configuration
/// (outside every block), read as nginx's tokenizer reads it: `#` comments, quoted words,
/// `;` and braces. A `pid` set in an included file or by `-g` is not seen.
fn main_directive(text: &str, name: &str) -> Option<String> {
    let (mut depth, mut words, mut word) = (0usize, Vec::<String>::new(), None::<String>);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_none() => {
                chars.by_ref().find(|c| *c == '\n');
            }
            '"' | '\'' if word.is_none() => {
                let mut quoted = String::new();
                while let Some(q) = chars.next() {
                    match q {
                        _ if q == c => break,
                        '\\' => quoted.extend(chars.next()),
                        q => quoted.push(q),
                    }
                }
                words.push(quoted);
            }
            ';' | '{' | '}' => {
                words.extend(word.take());
                if c == ';' && depth == 0 && words.len() == 2 && words[0] == name {
                    return words.pop();
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                words.clear();
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{main_directive, stat};

    #[test]
    fn the_pid_directive_is_found_only_in_the_main_context() {
        let config = "user www-data; # pid /not/this.pid;\nevents { pid /nor/this; }\n\
                      http { server { pid x; } }\npid \"/run/nginx test.pid\";\n";
        assert_eq!(main_directive(config, "pid").as_deref(), Some("/run/nginx test.pid"));
        assert_eq!(main_directive("pid /run/a.pid;", "pid").as_deref(), Some("/run/a.pid"));
        assert_eq!(main_directive("http { pid /x; }", "pid"), None);
        assert_eq!(main_directive("worker_pid /x;", "pid"), None);
    }

    #[test]
    fn this_process_has_a_parent_and_a_start_time() {
        let (parent, start) = stat(std::process::id() as i32).expect("own stat");
        assert_eq!(parent as u32, std::os::unix::process::parent_id());
        assert!(start > 0);
    }
}
