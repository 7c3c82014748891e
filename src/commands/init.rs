//! `pushdeploy init`: set up a bare repository for push-to-deploy.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use clap::Args;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode as FileMode, fchmod, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::app::unit;
use crate::commands::init_app::{self, AppArgs};
use crate::config::{self, Config, Mode, toml_string};
use crate::error::{Error, ExitCode};
use crate::git::{self, Repo};
use crate::report::{self, escape_path};
use crate::templates::Template;

/// The hook scripts, with `@PUSHDEPLOY@` standing for the binary's quoted path.
const POST_RECEIVE: &str = include_str!("../../hooks/post-receive");
const PRE_RECEIVE: &str = include_str!("../../hooks/pre-receive");
/// What marks a hook as written by pushdeploy.
const HOOK_MARKER: &str = "installed by `pushdeploy init`";
/// What a replaced file is kept as, with `--force`.
const BACKUP_SUFFIX: &str = ".pushdeploy-backup";

/// Sets up a bare repository so that pushing its deploy branch deploys to DIR.
///
/// Creates the bare repository REPO if it does not exist (an existing one keeps its history),
/// points its HEAD at the deploy branch, writes REPO/pushdeploy.toml, installs
/// REPO/hooks/post-receive, and creates the target directory. Running it again with the same
/// arguments changes nothing. It refuses to replace a configuration that differs, or a hook it
/// did not write, unless --force is given; the replaced file is kept as FILE.pushdeploy-backup.
///
/// Then, on your machine: `git remote add production ssh://SERVER/REPO` and
/// `git push production main`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The bare repository to push to (created if missing)
    #[arg(value_name = "REPO")]
    repo: PathBuf,
    /// The directory that holds the releases and the served link (created if missing).
    /// Without it, on a repository already set up, its pushdeploy.toml is kept as it is and
    /// only the hooks are rewritten for this binary (after moving the binary, say)
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
    /// The branch whose pushes deploy
    #[arg(long, value_name = "BRANCH", default_value = config::DEFAULT_BRANCH, requires = "target")]
    branch: String,
    /// The name of the symlink, inside DIR, that the web server serves
    #[arg(long, value_name = "NAME", default_value = config::DEFAULT_LINK, requires = "target")]
    link: String,
    /// Takes the build settings from a site template (see `pushdeploy new-site`)
    #[arg(
        long,
        value_enum,
        value_name = "NAME",
        conflicts_with_all = ["build", "publish"],
        requires = "target"
    )]
    template: Option<Template>,
    /// The build command, run by `sh -c` in the new release (e.g. "hugo --minify")
    #[arg(long, value_name = "CMD", requires = "target")]
    build: Option<String>,
    /// The subdirectory of the release to serve (e.g. "public" for Hugo); required with
    /// --build, which otherwise serves the sources with the site
    #[arg(long, value_name = "SUBDIR", requires = "target")]
    publish: Option<PathBuf>,
    /// With --build: serve the whole release (a build that writes the site in place)
    #[arg(long, conflicts_with = "publish", requires = "build")]
    no_publish: bool,
    /// Which hook deploys: post-receive (the default) accepts the push first; pre-receive
    /// deploys before accepting it, so a failed deploy rejects the push
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "post-receive",
        requires = "target"
    )]
    mode: Mode,
    /// The umask releases are written with and the build runs with [default: 022]
    #[arg(long, value_name = "OCTAL", requires = "target")]
    umask: Option<String>,
    /// Allow a umask that lets every user write into the releases (`world_writable = true`)
    #[arg(long, requires = "target")]
    world_writable: bool,
    /// Replace a differing configuration, a foreign hook or unit, keeping a backup
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    app: AppArgs,
}

/// A file init wants to write, and what is there now.
struct Planned {
    path: PathBuf,
    content: String,
    state: FileState,
    mode: u32,
}

enum FileState {
    Missing,
    Same,
    /// Ours, or a difference the user allowed with --force: replaced (with a backup if foreign).
    Replace {
        backup: bool,
    },
}

pub fn run(args: InitArgs) -> Result<ExitCode, Error> {
    check_publish(&args)?;
    let (target, config_text, config) = match &args.target {
        Some(target) => {
            let target = absolute_target(target)?;
            let config_text = config_text(&args, &target);
            let config = validate(&args.repo, &config_text)?;
            (target, config_text, config)
        }
        None => super::init_rerun::existing_config(&args.repo, args.app.app)?,
    };
    let exe = binary_path()?;
    let app = init_app::prepare(&args.app, &args.repo, &config)?;
    // Decide about every file before touching anything, so a refusal changes nothing.
    let planned = plan_files(&args, config_text, config.mode, &exe, app.as_ref())?;
    if config.mode == Mode::PostReceive {
        remove_stale_pre_receive(&args.repo.join("hooks").join("pre-receive"))?;
    }
    if nix::unistd::geteuid().is_root() {
        // Root sets up an app in the git user's repository (see `init_app::prepare`).
        git::trust_repository_owners();
    }
    let repo = set_up_repo(&args.repo, &config.branch)?;
    for file in &planned {
        write_planned(file, &args.repo)?;
    }
    create_target(&target)?;
    if let Some(app) = &app {
        init_app::finish(&config, app)?;
    }
    report::line(&format!(
        "ready: pushes of {:?} to {} deploy to {}",
        config.branch,
        escape_path(repo.path()),
        escape_path(&config.link_path())
    ));
    warn_missing_branch(&repo, &config);
    Ok(ExitCode::Success)
}

/// Warns when the deploy branch does not exist in a repository that has other branches: a
/// typo (`--branch mian`) would have every push ignored. A new repository only waits for its
/// first push.
fn warn_missing_branch(repo: &Repo, config: &Config) {
    let exists = repo.ref_target(&config.branch_ref()).is_ok_and(|target| target.is_some());
    if !exists && repo.has_branch_other_than(&config.branch).unwrap_or(false) {
        report::line(&format!(
            "warning: the branch {:?} does not exist in {}, which has other branches: pushes of those are ignored; check --branch (or branch = in pushdeploy.toml)",
            config.branch,
            escape_path(repo.path())
        ));
    }
}

/// Tells whether a hook's text was written by pushdeploy (so init may replace it, and doctor
/// trusts it).
pub fn is_pushdeploy_hook(text: &str) -> bool {
    text.contains(HOOK_MARKER)
}

/// Returns `--target` as an absolute path, which is what the configuration stores.
fn absolute_target(target: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(target).map_err(|err| {
        Error::user(
            format!("cannot use target {}: {err}", escape_path(target)),
            "pass an absolute path",
        )
    })
}

/// Validates exactly the text that will be written, with the same parser every command uses,
/// so init never writes a configuration the hook would then refuse.
/// Refuses a build without `--publish`: the link would serve the whole release, the site's
/// sources (`hugo.toml`, `package.json`, ...) with the built site under `/public/`.
fn check_publish(args: &InitArgs) -> Result<(), Error> {
    if args.build.is_none() || args.publish.is_some() || args.no_publish {
        return Ok(());
    }
    Err(Error::user(
        "--build without --publish would serve the whole release, the site's sources with it",
        "pass --publish DIR, the directory the build writes (public for Hugo, dist for Vite, _site for Jekyll and Eleventy), or --no-publish if the build writes the site in place",
    ))
}

fn validate(repo: &Path, config_text: &str) -> Result<Config, Error> {
    config::parse(&repo.join(config::FILE_NAME), config_text).map_err(|err| {
        // The options, not the file, are what the user wrote: leave out the file and line.
        let message = match err {
            config::Error::Invalid { message, .. } => message,
            err => err.to_string(),
        };
        Error::user(format!("invalid option: {message}"), "see `pushdeploy init --help`")
    })
}

/// Returns the path of the running binary, which the hooks exec.
fn binary_path() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|err| {
        Error::user(
            format!("cannot find the pushdeploy binary's path: {err}"),
            "run pushdeploy by its absolute path",
        )
    })
}

/// Plans the configuration and the hooks of `mode`, refusing before anything is written when
/// one of them differs and may not be replaced.
fn plan_files(
    args: &InitArgs,
    config_text: String,
    mode: Mode,
    exe: &Path,
    app: Option<&init_app::Prepared>,
) -> Result<Vec<Planned>, Error> {
    let hook =
        |template: &str| template.replace("@PUSHDEPLOY@", &shell_quote(&exe.to_string_lossy()));
    let hooks = args.repo.join("hooks");
    let config_path = args.repo.join(config::FILE_NAME);
    let mut planned = vec![
        // A configuration that says the same with other comments is kept as it is: init run
        // again after the binary moved must rewrite the hooks, not refuse.
        match fs::read(&config_path) {
            Ok(old) if super::init_rerun::same_toml(&old, &config_text) => Planned {
                path: config_path,
                content: String::from_utf8_lossy(&old).into_owned(),
                state: FileState::Same,
                mode: 0o644,
            },
            _ => plan(&config_path, config_text, 0o644, args.force, |_| false)?,
        },
        plan(
            &hooks.join("post-receive"),
            hook(POST_RECEIVE),
            0o755,
            args.force,
            is_pushdeploy_hook,
        )?,
    ];
    if mode == Mode::PreReceive {
        let pre_receive = hooks.join("pre-receive");
        planned.push(plan(&pre_receive, hook(PRE_RECEIVE), 0o755, args.force, is_pushdeploy_hook)?);
    }
    if let Some(app) = app {
        let text = app.unit_text.clone();
        planned.push(plan(&app.unit_path, text, 0o644, args.force, unit::is_ours)?);
        if let Some((path, text)) = &app.release_unit {
            planned.push(plan(path, text.clone(), 0o644, args.force, unit::is_ours)?);
        }
        for (path, text) in &app.extra_units {
            planned.push(plan(path, text.clone(), 0o644, args.force, unit::is_ours)?);
        }
    }
    Ok(planned)
}

/// Removes a pre-receive hook of ours when the mode is back to post-receive: it would still
/// deploy first, and reject pushes whose deploy fails.
fn remove_stale_pre_receive(pre_receive: &Path) -> Result<(), Error> {
    if !fs::read_to_string(pre_receive).is_ok_and(|old| is_pushdeploy_hook(&old)) {
        return Ok(());
    }
    fs::remove_file(pre_receive).map_err(|err| {
        Error::user(
            format!("cannot remove {}: {err}", escape_path(pre_receive)),
            "remove it by hand",
        )
    })?;
    report::line(&format!("removed {} (mode is post-receive)", escape_path(pre_receive)));
    Ok(())
}

/// Opens or creates the bare repository and points it at the deploy branch.
fn set_up_repo(path: &Path, branch: &str) -> Result<Repo, Error> {
    let existed = path.exists();
    let (repo, created) = Repo::open_or_init_bare(path)?;
    let how = match (created, existed) {
        (true, _) => "created",
        (false, true) => "using the existing",
        (false, false) => "opened",
    };
    report::line(&format!("{how} bare repository {}", escape_path(repo.path())));
    repo.set_head_branch(branch)?;
    // Lets pushers send `git push -o no-cache` and the like.
    repo.set_config_bool("receive.advertisePushOptions", true)?;
    Ok(repo)
}

/// Creates the target directory when it does not exist yet.
fn create_target(target: &Path) -> Result<(), Error> {
    if target.exists() {
        return Ok(());
    }
    fs::create_dir_all(target).map_err(|err| {
        Error::user(
            format!("cannot create target {}: {err}", escape_path(target)),
            "create it yourself with the right owner, then run init again",
        )
    })?;
    report::line(&format!("created target {}", escape_path(target)));
    Ok(())
}

fn config_text(args: &InitArgs, target: &Path) -> String {
    let mut text = format!(
        "# pushdeploy configuration, written by `pushdeploy init`. Reference: the README.\n\
         branch = {}\ntarget = {}\nlink = {}\n",
        toml_string(&args.branch),
        toml_string(&target.to_string_lossy()),
        toml_string(&args.link),
    );
    if let Some(umask) = &args.umask {
        text.push_str(&format!("umask = {}\n", toml_string(umask)));
    }
    if args.world_writable {
        text.push_str("world_writable = true\n");
    }
    if args.mode != Mode::default() {
        text.push_str(&format!("mode = {}\n", toml_string(args.mode.name())));
    }
    if let Some(template) = args.template {
        text.push('\n');
        text.push_str(template.config_snippet());
    } else if args.build.is_some() || args.publish.is_some() {
        text.push_str("\n[build]\n");
        if let Some(command) = &args.build {
            text.push_str(&format!("command = {}\n", toml_string(command)));
        }
        if let Some(publish) = &args.publish {
            text.push_str(&format!("publish = {}\n", toml_string(&publish.to_string_lossy())));
        }
        text.push_str("timeout = \"10m\"\n");
    }
    text.push_str(&init_app::config_text(&args.app, target));
    text
}

/// Decides what to do with one file; refuses when it differs and is not ours, without --force.
fn plan(
    path: &Path,
    content: String,
    mode: u32,
    force: bool,
    is_ours: impl Fn(&str) -> bool,
) -> Result<Planned, Error> {
    let state = match fs::read(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => FileState::Missing,
        Err(err) => {
            return Err(Error::user(
                format!("cannot read {}: {err}", escape_path(path)),
                "check its permissions",
            ));
        }
        Ok(old) if old == content.as_bytes() => FileState::Same,
        Ok(old) if is_ours(&String::from_utf8_lossy(&old)) => FileState::Replace { backup: false },
        Ok(_) if force => FileState::Replace { backup: true },
        Ok(_) => {
            return Err(Error::user(
                format!(
                    "{} exists and differs from what init would write; nothing was changed",
                    escape_path(path)
                ),
                "edit it by hand, or pass --force to replace it (the old file is kept as *.pushdeploy-backup)",
            ));
        }
    };
    Ok(Planned { path: path.to_owned(), content, state, mode })
}

/// Writes a planned file by a temporary name and a rename (so git never runs a half-written
/// hook), with its mode set on the handle whatever the umask.
fn write_planned(file: &Planned, repo: &Path) -> Result<(), Error> {
    let error = |err: io::Error| {
        Error::user(
            format!("cannot write {}: {err}", escape_path(&file.path)),
            "check the repository's permissions",
        )
    };
    let shown = escape_path(&file.path);
    if matches!(file.state, FileState::Same) {
        report::line(&format!("unchanged {shown}"));
        return Ok(());
    }
    let dir = open_parent(&file.path, repo).map_err(error)?;
    let name = file.path.file_name().unwrap_or_default();
    if let FileState::Replace { backup: true } = file.state {
        let mut backup = name.to_owned();
        backup.push(BACKUP_SUFFIX);
        renameat(&dir, name, &dir, backup.as_os_str()).map_err(io::Error::from).map_err(error)?;
        let backup = file.path.with_file_name(backup);
        report::line(&format!("kept the old file as {}", escape_path(&backup)));
    }
    let mut temp = name.to_owned();
    temp.push(".pushdeploy-new");
    write_at(&dir, &temp, file.content.as_bytes(), file.mode).map_err(error)?;
    renameat(&dir, temp.as_os_str(), &dir, name).map_err(io::Error::from).map_err(error)?;
    let verb = if matches!(file.state, FileState::Missing) { "wrote" } else { "updated" };
    report::line(&format!("{verb} {shown}"));
    Ok(())
}

/// Opens the directory a planned file goes into, creating what is missing. Below the
/// repository, which is the git user's when root runs init for an app, each directory is
/// opened without following a symlink, so nothing the git user planted there (`hooks` made a
/// link to `/etc`, say) turns root's write elsewhere.
fn open_parent(path: &Path, repo: &Path) -> io::Result<OwnedFd> {
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    let (base, below) = match parent.strip_prefix(repo) {
        Ok(below) => (repo, below),
        Err(_) => (parent, Path::new("")),
    };
    fs::create_dir_all(base)?;
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open(base, flags, FileMode::empty())?;
    for component in below.components() {
        let name = component.as_os_str();
        match mkdirat(&dir, name, FileMode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(errno.into()),
        }
        dir = openat(&dir, name, flags | OFlag::O_NOFOLLOW, FileMode::empty())?;
    }
    Ok(dir)
}

/// Creates `name` in `dir` (replacing a stale one, never following a symlink there) with
/// `content` and `mode`.
fn write_at(dir: &OwnedFd, name: &OsStr, content: &[u8], mode: u32) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(errno.into()),
    }
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, FileMode::from_bits_truncate(mode))?;
    fchmod(&fd, FileMode::from_bits_truncate(mode))?;
    fs::File::from(fd).write_all(content)
}

/// Quotes a string for sh: `'...'`, with embedded quotes as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
