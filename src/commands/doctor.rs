//! `pushdeploy doctor`: checks a site's setup and says what to fix.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use nix::unistd::{AccessFlags, User, access};

use super::init::is_pushdeploy_hook;
use crate::config::{self, Config, Mode};
use crate::deploy;
use crate::error::{Error, ExitCode};
use crate::git::Repo;
use crate::release::{program, write};
use crate::report::{self, escape_path};
use crate::target_dir::record;
use crate::target_dir::{self, Layout};

/// Checks a site's setup: the hook, the target, the link, what the web server can read, and
/// the free disk space. Each finding says what to do; exits 3 when something must be fixed.
///
/// Checks: the configuration loads (which refuses a target that is `/`, a home directory or
/// the repository, and a umask that lets every user write unless `world_writable = true`,
/// which is then warned about); the hook of the configured mode is installed, executable,
/// written by pushdeploy, and points at an existing binary (and no stale hook of the other
/// mode deploys first); push options are advertised; the target exists, is writable by this
/// user and not by everyone; the link is a symlink to a complete release with a record; the
/// web server's user (www-data, nginx, caddy, apache or http, whichever exist) can reach and
/// read the live release; the free space can hold another release of the live one's size.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The bare repository [default: $GIT_DIR, else the current directory]
    #[arg(long, value_name = "REPO")]
    repo: Option<PathBuf>,
}

/// The findings so far.
#[derive(Default)]
struct Findings {
    text: String,
    problems: usize,
}

impl Findings {
    fn ok(&mut self, what: impl AsRef<str>) {
        self.text.push_str(&format!("ok       {}\n", what.as_ref()));
    }

    fn warn(&mut self, what: impl AsRef<str>, fix: impl AsRef<str>) {
        self.text.push_str(&format!("warning  {}; {}\n", what.as_ref(), fix.as_ref()));
    }

    fn problem(&mut self, what: impl AsRef<str>, fix: impl AsRef<str>) {
        self.problems += 1;
        self.text.push_str(&format!("problem  {}; {}\n", what.as_ref(), fix.as_ref()));
    }
}

pub fn run(args: DoctorArgs) -> Result<ExitCode, Error> {
    let repo = super::open_repo(args.repo)?;
    let mut findings = Findings::default();
    if let Some(config) = load_config(repo.path(), &mut findings) {
        check_hooks(&repo, &config, &mut findings);
        check_branch(&repo, &config, &mut findings);
        check_build_program(&config, &mut findings);
        check_umask(&config, &mut findings);
        check_target(&repo, &config, &mut findings);
    }
    let summary = match findings.problems {
        0 => "no problems found\n".to_owned(),
        n => format!("{} to fix\n", report::things(n as u64, "problem")),
    };
    report::stdout(&(findings.text + &summary));
    Ok(if findings.problems == 0 { ExitCode::Success } else { ExitCode::ProblemsFound })
}

/// How many errors of the configuration doctor reports before it gives up on the file.
const CONFIG_ERRORS: usize = 20;

/// Loads the configuration, reporting every error in it, not only the first: each line an
/// error names is left out and the file read again, and the checks that follow read what
/// remains. A table header or a file that names no target ends it.
fn load_config(repo: &Path, findings: &mut Findings) -> Option<Config> {
    let path = repo.join(config::FILE_NAME);
    let mut text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => {
            if let Err(err) = config::load(repo) {
                findings.problem(err.to_string(), err.hint());
            }
            return None;
        }
    };
    for left_out in 0..CONFIG_ERRORS {
        let err = match config::parse(&path, &text) {
            Ok(config) if left_out == 0 => {
                findings.ok(format!("configuration {} loads", escape_path(&config.path)));
                return Some(config);
            }
            Ok(config) => {
                findings.warn(
                    format!("the checks below read {} without the lines above", escape_path(&path)),
                    "fix them, and run doctor again",
                );
                return Some(config);
            }
            // A required key is missing because a line was left out: not the file's error.
            Err(err) if left_out > 0 && err.to_string().contains("missing field") => return None,
            Err(err) => err,
        };
        findings.problem(err.to_string(), err.hint());
        let config::Error::Invalid { line, .. } = err else { return None };
        let mut lines: Vec<&str> = text.lines().collect();
        let bad = lines.get(line.wrapping_sub(1))?.trim_start();
        // Without its target the file says nothing more worth checking.
        let required =
            bad.strip_prefix("target").is_some_and(|rest| rest.trim_start().starts_with('='));
        if bad.is_empty() || bad.starts_with('[') || bad.starts_with('#') || required {
            return None;
        }
        lines[line - 1] = "";
        text = lines.join("\n");
    }
    None
}

fn check_hooks(repo: &Repo, config: &Config, findings: &mut Findings) {
    // init without --target keeps the configuration and rewrites the hooks for the binary
    // that runs it; a configuration whose comments differ never stops it.
    let rerun = format!(
        "run `pushdeploy init {}` with the pushdeploy the hook should run (it keeps pushdeploy.toml as it is and rewrites the hooks)",
        escape_path(repo.path().components().collect::<PathBuf>().as_path())
    );
    let rerun = rerun.as_str();
    let hook = repo.path().join("hooks").join(config.mode.name());
    let shown = escape_path(&hook);
    match fs::read_to_string(&hook) {
        Err(_) => findings.problem(format!("{shown} is missing, so pushes do not deploy"), rerun),
        Ok(text) if !is_pushdeploy_hook(&text) => findings.problem(
            format!("{shown} was not written by pushdeploy"),
            "run `pushdeploy init --force` to replace it (the old one is kept as a backup)",
        ),
        Ok(text) => {
            let executable =
                fs::metadata(&hook).is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0);
            if executable {
                findings.ok(format!("{shown} is installed and executable"));
            } else {
                findings.problem(
                    format!("{shown} is not executable, so git skips it"),
                    format!("run `chmod +x {shown}`"),
                );
            }
            match hook_binary(&text) {
                Some(binary) if access(&binary, AccessFlags::X_OK).is_ok() => {
                    findings.ok(format!("the hook runs {}", escape_path(&binary)));
                }
                Some(binary) => findings.problem(
                    format!(
                        "the hook runs {}, which is missing or not executable",
                        escape_path(&binary)
                    ),
                    rerun,
                ),
                None => findings.problem(format!("{shown} names no pushdeploy binary"), rerun),
            }
        }
    }
    if config.mode == Mode::PostReceive {
        let pre = repo.path().join("hooks").join("pre-receive");
        if fs::read_to_string(&pre).is_ok_and(|text| is_pushdeploy_hook(&text)) {
            findings.problem(
                format!("{} is a pushdeploy hook, but the mode is post-receive", escape_path(&pre)),
                "run `pushdeploy init` again, which removes it",
            );
        }
    }
    if repo.config_bool("receive.advertisePushOptions") == Some(true) {
        findings.ok("push options (git push -o ...) are accepted");
    } else {
        findings.warn(
            "receive.advertisePushOptions is off, so `git push -o` options are refused",
            format!(
                "run `git --git-dir {} config receive.advertisePushOptions true`",
                escape_path(repo.path())
            ),
        );
    }
}

/// Reports a deploy branch that does not exist while others do: a typo (`branch = "mian"`)
/// makes every push ignored. A repository with no branch yet is only waiting for its first push.
fn check_branch(repo: &Repo, config: &Config, findings: &mut Findings) {
    let exists = repo.ref_target(&config.branch_ref()).map(|target| target.is_some());
    match (exists, repo.has_branch_other_than(&config.branch)) {
        (Ok(true), _) => findings.ok(format!("the deploy branch {:?} exists", config.branch)),
        (Ok(false), Ok(true)) => findings.problem(
            format!(
                "the deploy branch {:?} does not exist in {}, so every push is ignored",
                config.branch,
                escape_path(&repo.path().components().collect::<PathBuf>())
            ),
            format!("check branch = in {}", escape_path(&config.path)),
        ),
        (Ok(false), Ok(false)) => {}
        (Err(err), _) | (_, Err(err)) => findings.problem(err.to_string(), "check the repository"),
    }
}

/// Reports a build command whose program is not found in the build's PATH (`[build.env]`
/// PATH if set, else this one), which would fail every build with status 127.
fn check_build_program(config: &Config, findings: &mut Findings) {
    let Some(word) = config.build.command.as_deref().and_then(program::first_program) else {
        return;
    };
    let env = config.build.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let path = program::build_path(env);
    let shown = escape_path(Path::new(&path));
    match program::find(word, &path) {
        Some(found) => findings.ok(format!("the build runs {}", escape_path(&found))),
        None => findings.problem(
            format!(
                "the build command's program `{word}` is not found in the build's PATH ({shown})"
            ),
            format!(
                "install it, or set PATH in [build.env] of {} to include its directory",
                escape_path(&config.path)
            ),
        ),
    }
}

/// Warns when the configuration lets every user write into the releases (only possible with
/// `world_writable = true`; without it the configuration does not load).
fn check_umask(config: &Config, findings: &mut Findings) {
    if config.releases_world_writable() {
        findings.warn(
            format!(
                "umask {:03o} with `world_writable = true`: every user of this machine can change the releases",
                config.umask
            ),
            "remove `world_writable` and use a umask such as \"022\" unless that is what you want",
        );
    }
}

/// Returns the binary a pushdeploy hook execs: `exec '/path/to/pushdeploy' hook ...`.
fn hook_binary(text: &str) -> Option<PathBuf> {
    let line = text.lines().find(|line| line.starts_with("exec "))?;
    let rest = line.strip_prefix("exec ")?.trim_start();
    let path = match rest.strip_prefix('\'') {
        Some(quoted) => quoted.split("' hook").next()?.replace(r"'\''", "'"),
        None => rest.split_whitespace().next()?.to_owned(),
    };
    Some(PathBuf::from(path))
}

fn check_target(repo: &Repo, config: &Config, findings: &mut Findings) {
    let layout = Layout::new(config);
    let target = escape_path(&layout.target);
    let Ok(meta) = fs::metadata(&layout.target) else {
        findings.problem(
            format!("target {target} does not exist"),
            "create it (owned by the user that pushes) or fix `target` in the configuration",
        );
        return;
    };
    let deployer = check_target_owner(repo, &layout, &meta, findings);
    if let Some((problem, fix)) = layout.world_writable_target() {
        findings.warn(problem, fix);
    }
    match layout.check_state_owned_by(deployer) {
        Ok(()) => {}
        Err(target_dir::Error::StateDir { path, problem, hint }) => {
            findings.problem(format!("{} {problem}", escape_path(&path)), hint);
        }
        Err(err) => findings.problem(err.to_string(), "check the state directory's permissions"),
    }
    let live = match layout.live() {
        Ok(Some(live)) => live,
        Ok(None) => {
            findings
                .warn("nothing is deployed yet", format!("push the branch {:?}", config.branch));
            return;
        }
        Err(err) => {
            findings.problem(err.to_string(), "then deploy again with `pushdeploy deploy`");
            return;
        }
    };
    let served = layout.target.join(&live.link_target);
    let complete = fs::read_dir(&served).is_ok_and(|mut entries| entries.next().is_some());
    let record = record::read(&layout, live.slot).ok().flatten();
    match (complete, record) {
        (true, Some(record)) => findings.ok(format!(
            "{} -> {} is a complete release of {}",
            escape_path(&layout.link),
            escape_path(&live.link_target),
            record.commit.short()
        )),
        (true, None) => findings.warn(
            format!("{} has no record in .pushdeploy/releases", escape_path(&served)),
            "deploy again with `pushdeploy deploy` so status and rollback know it",
        ),
        (false, _) => findings.problem(
            format!(
                "{} points at {}, which is missing or empty",
                escape_path(&layout.link),
                escape_path(&served)
            ),
            "deploy again with `pushdeploy deploy`",
        ),
    }
    if complete {
        if let Some((problem, fix)) = deploy::sources_served(config, &served) {
            findings.warn(problem, fix);
        }
        check_web_users(&served, findings);
        check_space(&layout.target, &served, findings);
    }
}

/// Checks that each web server user that exists here can reach and read the live release.
fn check_web_users(served: &Path, findings: &mut Findings) {
    let users: Vec<User> = ["www-data", "nginx", "caddy", "apache", "http"]
        .into_iter()
        .filter_map(|name| User::from_name(name).ok().flatten())
        .collect();
    if users.is_empty() {
        findings.warn(
            "found no web server user (www-data, nginx, caddy, apache, http)",
            "make sure yours can read the release",
        );
        return;
    }
    let index = served.join("index.html");
    for user in users {
        let blocked = served
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find(|dir| !permits(&user, dir, 0o1))
            .map(Path::to_owned)
            .or_else(|| (!permits(&user, served, 0o4)).then(|| served.to_owned()))
            .or_else(|| (index.exists() && !permits(&user, &index, 0o4)).then(|| index.clone()));
        match blocked {
            None => findings.ok(format!("{} can read the live release", user.name)),
            Some(path) => findings.problem(
                format!("{} cannot read {}", user.name, escape_path(&path)),
                format!(
                    "run `chmod o+rx {}` (or give the web server's group access)",
                    escape_path(&path)
                ),
            ),
        }
    }
}

/// Tells whether `user` has the permission `bit` (4 read, 1 execute) on `path`.
fn permits(user: &User, path: &Path, bit: u32) -> bool {
    let Ok(meta) = fs::metadata(path) else { return false };
    let mode = meta.mode();
    if user.uid.is_root() {
        return true;
    }
    let shift = if meta.uid() == user.uid.as_raw() {
        6
    } else if meta.gid() == user.gid.as_raw() {
        3
    } else {
        0
    };
    mode >> shift & bit != 0
}

/// Warns when the free space could not hold another release the size of the live one.
fn check_space(target: &Path, served: &Path, findings: &mut Findings) {
    let size: u64 = walkdir::WalkDir::new(served)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum();
    let Ok(free) = write::free_space(target) else { return };
    let line =
        format!("{} free for a release of about {}", report::bytes(free), report::bytes(size));
    if free < size.saturating_mul(2) {
        findings.warn(line, "a deploy writes the new release beside the live one: free some space");
    } else {
        findings.ok(line);
    }
}

/// Checks that the hook's user can write in the target: the repository's owner, who pushes,
/// also when root runs doctor. Returns that user's uid.
fn check_target_owner(
    repo: &Repo,
    layout: &Layout,
    meta: &fs::Metadata,
    findings: &mut Findings,
) -> u32 {
    let target = escape_path(&layout.target);
    let deployer = fs::metadata(repo.path()).map_or(nix::unistd::geteuid().as_raw(), |m| m.uid());
    let me = nix::unistd::geteuid().as_raw();
    if deployer != me {
        if meta.uid() == deployer {
            findings.ok(format!(
                "target {target} is owned by {}, who owns the repository and runs the hook",
                user_name(deployer)
            ));
        } else {
            findings.problem(
                format!(
                    "target {target} is owned by {}, but the hook runs as {} (the repository's owner)",
                    user_name(meta.uid()),
                    user_name(deployer)
                ),
                format!("run `chown -R {}: {target}` as root", user_name(deployer)),
            );
        }
    } else if access(&layout.target, AccessFlags::W_OK).is_ok() {
        findings.ok(format!("target {target} is writable by this user"));
    } else {
        findings.problem(
            format!("target {target} is not writable by this user"),
            format!("run `chown -R {} {target}` as root", current_user()),
        );
    }
    deployer
}

/// Returns the name of user `uid`, or the number when it has none.
fn user_name(uid: u32) -> String {
    User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}

fn current_user() -> String {
    User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "$USER".into(), |user| user.name)
}
