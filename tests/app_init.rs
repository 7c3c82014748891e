//! `pushdeploy init --app`: the systemd template unit (checked by the real `systemd-analyze
//! verify`), its environment files and `shared/`, idempotence, refusing a foreign unit, and the
//! `[app]` errors with their lines. systemd itself is not booted here.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::user::TestUser;
use crate::support::{TestEnv, toml_str};

const COMMAND: &str = "gunicorn -b 127.0.0.1:$PORT \"app:make(100%)\"";

/// An environment with an app user of its own, and a unit directory and a sudoers directory
/// in the temp dir (init writes the drop-in only for a git user who is not root, and never
/// into the machine's /etc/sudoers.d from a test).
struct AppEnv {
    env: TestEnv,
    app_user: TestUser,
    unit_dir: PathBuf,
    sudoers_dir: PathBuf,
    /// `--env-dir`: root's, in the test's directory (never the machine's /etc/pushdeploy).
    env_dir: PathBuf,
}

impl AppEnv {
    /// Makes the environment; `user_prefix` names the app user, one per test (tests run in
    /// parallel, and a user of the same name would be replaced under another test).
    fn new(user_prefix: &str) -> AppEnv {
        let env = TestEnv::new();
        let app_user = TestUser::create(&env, user_prefix);
        let unit_dir = env.root.join("units");
        let sudoers_dir = env.root.join("sudoers.d");
        fs::create_dir(&sudoers_dir).expect("create the sudoers directory");
        fs::set_permissions(&sudoers_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let env_dir = env.root.join("etc/pushdeploy/www");
        AppEnv { env, app_user, unit_dir, sudoers_dir, env_dir }
    }

    /// Returns `init --app` with the essentials and `extra`.
    fn init_app(&self, extra: &[&str]) -> crate::support::Cmd {
        self.init_app_on("8001,8002", extra)
    }

    /// Returns `init --app --ports PORTS` with the other essentials and `extra`.
    fn init_app_on(&self, ports: &str, extra: &[&str]) -> crate::support::Cmd {
        self.env
            .init_cmd(&["--app", "--app-command", COMMAND, "--ports", ports])
            .arg("--app-user")
            .arg(&self.app_user.name)
            .arg("--unit-dir")
            .arg(&self.unit_dir)
            .arg("--sudoers-dir")
            .arg(&self.sudoers_dir)
            .arg("--env-dir")
            .arg(&self.env_dir)
            .args(extra)
    }

    fn unit_path(&self) -> PathBuf {
        self.unit_dir.join("pushdeploy-www@.service")
    }

    fn app_state(&self) -> PathBuf {
        self.env.target.join(".pushdeploy/app")
    }
}

#[track_caller]
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs the real `systemd-analyze verify` on `unit` and asserts it passes without a word.
#[track_caller]
fn assert_systemd_verifies(unit: &Path) {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(unit)
        .output()
        .expect("run systemd-analyze (install systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn init_app_writes_a_unit_systemd_verifies_and_its_environment_files() {
    let app = AppEnv::new("pdapp1-");
    let output = app.init_app(&["--proxy", "caddy"]).success();

    let unit = read(&app.unit_path());
    let target = app.env.target.to_string_lossy();
    let env_dir = app.env_dir.to_string_lossy();
    for line in [
        format!("User={}", app.app_user.name),
        format!("WorkingDirectory={target}/%i"),
        format!("EnvironmentFile={env_dir}/env"),
        format!("EnvironmentFile=-{env_dir}/secrets.env"),
        format!("EnvironmentFile={env_dir}/%i.env"),
        // `$` and `%` doubled, `"` escaped: systemd hands the shell the command as written.
        r#"ExecStart=/bin/sh -c "gunicorn -b 127.0.0.1:$$PORT \"app:make(100%%)\"""#.to_owned(),
        "KillSignal=SIGTERM".to_owned(),
        "TimeoutStopSec=30s".to_owned(),
        "Restart=on-failure".to_owned(),
        "NoNewPrivileges=yes".to_owned(),
        "ProtectSystem=strict".to_owned(),
        format!("ReadWritePaths={target}/shared"),
        "ProtectHome=yes".to_owned(),
    ] {
        assert!(unit.lines().any(|l| l == line), "no line {line:?} in the unit:\n{unit}");
    }
    assert_systemd_verifies(&app.unit_path());
    assert!(output.stderr.contains("systemd-analyze verify: pushdeploy-www@.service passed"));

    assert_eq!(
        read(&app.env_dir.join("blue.env")),
        "# Written by pushdeploy for the blue instance.\nPORT=8001\nPUSHDEPLOY_SLOT=blue\nPUSHDEPLOY_COMMIT=\"\"\n"
    );
    assert!(read(&app.env_dir.join("green.env")).contains("\nPORT=8002\n"));
    // [app.env] and the secrets: root's, the app's group may read them, nobody else.
    for name in ["env", "secrets.env"] {
        let meta = fs::symlink_metadata(app.env_dir.join(name)).expect("stat");
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, app.app_user.gid, 0o640));
    }
    let dir = fs::symlink_metadata(&app.env_dir).expect("stat the env dir");
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o755));
    let shared = fs::symlink_metadata(app.env.target.join("shared")).expect("stat shared");
    assert!(shared.is_dir());
    // The app's, with the target owner's group (setgid) so the git user's deploys can check
    // each `shared` entry.
    let target_gid = fs::metadata(&app.env.target).expect("stat target").gid();
    assert_eq!(
        (shared.uid(), shared.gid(), shared.mode() & 0o7777),
        (app.app_user.uid, target_gid, 0o2750)
    );

    let config: toml::Table = read(&app.env.bare.join("pushdeploy.toml")).parse().expect("TOML");
    let table = config["app"].as_table().expect("[app] table");
    assert_eq!(table["command"].as_str(), Some(COMMAND));
    assert_eq!(table["name"].as_str(), Some("www"));
    assert_eq!(table["proxy"]["kind"].as_str(), Some("caddy"));
    // The config init wrote is one every command reads.
    let _ = app.env.pushdeploy().arg("status").arg("--repo").arg(&app.env.bare).success();
}

#[test]
fn init_app_twice_changes_nothing() {
    let app = AppEnv::new("pdapp2-");
    let _ = app.init_app(&[]).success();
    let files = [app.unit_path(), app.env_dir.join("env"), app.env_dir.join("secrets.env")];
    let before: Vec<_> =
        files.iter().map(|f| (read(f), fs::metadata(f).expect("stat").ino())).collect();

    let again = app.init_app(&[]).success();

    let after: Vec<_> =
        files.iter().map(|f| (read(f), fs::metadata(f).expect("stat").ino())).collect();
    assert_eq!(before, after, "a second init rewrote a file");
    let lines = again.pushdeploy_lines();
    assert!(!lines.iter().any(|l| l.contains(" wrote ") || l.contains("created")), "{again}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("pushdeploy: unchanged ")).count(),
        6,
        "{again}"
    );
}

#[test]
fn the_release_unit_is_written_with_release_and_removed_without_it() {
    let app = AppEnv::new("pdapp7-");
    let release_unit = app.unit_dir.join("pushdeploy-www-release@.service");
    let _ = app.init_app(&[]).success();
    assert!(!release_unit.exists(), "a release unit without `release`");

    let migrate = "python3 manage.py migrate --noinput \"$DB\"";
    let args =
        ["--app-release", migrate, "--release-timeout", "90s", "--shared", "data", "--force"];
    let with = app.init_app(&args).success();
    assert!(
        with.stderr.contains("systemd-analyze verify: pushdeploy-www-release@.service passed"),
        "{with}"
    );
    assert_systemd_verifies(&release_unit);
    let unit = read(&release_unit);
    let target = app.env.target.to_string_lossy();
    for line in [
        "Type=oneshot".to_owned(),
        format!("User={}", app.app_user.name),
        format!("WorkingDirectory={target}/%i"),
        r#"ExecStart=/bin/sh -c "python3 manage.py migrate --noinput \"$$DB\"""#.to_owned(),
        "TimeoutStartSec=90s".to_owned(),
        format!("ReadWritePaths={target}/shared"),
    ] {
        assert!(unit.lines().any(|l| l == line), "no line {line:?} in the unit:\n{unit}");
    }
    let config: toml::Table = read(&app.env.bare.join("pushdeploy.toml")).parse().expect("TOML");
    assert_eq!(config["app"]["release"].as_str(), Some(migrate));
    assert_eq!(config["app"]["release_timeout"].as_str(), Some("90s"));
    assert_eq!(config["app"]["shared"].as_array().map(Vec::len), Some(1));
    // Again with the same options: nothing changes.
    let again = app.init_app(&args[..6]).success();
    let unchanged = "unchanged $TMP/units/pushdeploy-www-release@.service";
    assert!(again.normalized_stderr().contains(unchanged), "{again}");

    // `release` dropped: init removes the unit it wrote, and only that one.
    let without = app.init_app(&["--force"]).success();
    assert!(!release_unit.exists(), "{without}");
    let removed = "removed $TMP/units/pushdeploy-www-release@.service (no `release` in [app])";
    assert!(without.normalized_stderr().contains(removed), "{without}");
    assert!(app.unit_path().exists());
    let foreign = "[Service]\nType=oneshot\nExecStart=/usr/bin/true\n";
    fs::write(&release_unit, foreign).expect("write a foreign unit");
    let _ = app.init_app(&["--force"]).success();
    assert_eq!(read(&release_unit), foreign, "init removed a unit it did not write");
}

#[test]
fn changed_ports_rewrite_the_slot_files_and_keep_their_commit() {
    let app = AppEnv::new("pdapp3-");
    let _ = app.init_app(&[]).success();
    let blue = app.env_dir.join("blue.env");
    // As a deploy would leave it, having started blue at a commit.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fs::write(&blue, read(&blue).replace("COMMIT=\"\"", &format!("COMMIT=\"{commit}\"")))
        .expect("write");

    let _ = app.init_app_on("9001,9002", &["--force"]).success();

    let text = read(&blue);
    assert!(text.contains("\nPORT=9001\n") && text.contains(commit), "{text}");
    assert!(read(&app.unit_path()).contains("on port 9001"));
}

#[test]
fn a_differing_unit_is_refused_without_force_and_kept_with_it() {
    let app = AppEnv::new("pdapp4-");
    fs::create_dir_all(&app.unit_dir).expect("mkdir units");
    let foreign = "[Service]\nExecStart=/usr/bin/true\n";
    fs::write(app.unit_path(), foreign).expect("write a foreign unit");

    let refused = app.init_app(&[]).failure();

    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(refused.stderr.contains("pushdeploy-www@.service exists and differs"), "{refused}");
    assert!(refused.stderr.contains("--force"), "{refused}");
    assert_eq!(read(&app.unit_path()), foreign);
    assert!(!app.env.bare.exists() && !app.env.target.exists(), "a refusal changed something");

    let _ = app.init_app(&["--force"]).success();
    assert!(read(&app.unit_path()).contains("written by `pushdeploy init --app`"));
    let backup = app.unit_dir.join("pushdeploy-www@.service.pushdeploy-backup");
    assert_eq!(read(&backup), foreign);
}

#[test]
fn init_app_refuses_root_and_a_missing_user() {
    let env = TestEnv::new();
    let units = env.root.join("units");
    let base = ["--app", "--app-command", "./server", "--ports", "8001,8002", "--unit-dir"];
    let run = |user: &str| env.init_cmd(&base).arg(&units).args(["--app-user", user]).failure();
    let root = run("root");
    assert!(root.stderr.contains("invalid option: `app.user`: \"root\" is root;"), "{root}");
    let missing = run("no-such-user-pd");
    assert!(
        missing.stderr.contains("the app user \"no-such-user-pd\" does not exist"),
        "{missing}"
    );
    assert!(missing.stderr.contains("useradd --system"), "{missing}");
    assert!(!units.exists() && !env.bare.exists(), "a refusal wrote something");
    let incomplete = env.init_cmd(&["--app", "--ports", "8001,8002"]).failure();
    assert!(incomplete.stderr.contains("--app-command"), "{incomplete}");
}

#[test]
fn app_config_errors_name_their_line() {
    let app = AppEnv::new("pdapp5-");
    let _ = app.init_app(&[]).success();
    let target = toml_str(&app.env.target.to_string_lossy());
    let head = format!(
        "target = {target}\n[app]\ncommand = \"./server\"\nports = {{ blue = 8001, green = 8002 }}\nuser = {}\n",
        toml_str(&app.app_user.name)
    );
    let cases = [
        (
            head.replace("green = 8002", "green = 8001"),
            "line 4: `app.ports`: blue and green are both 8001; each slot's instance needs its own port",
        ),
        (
            head.replace("blue = 8001", "blue = 0"),
            "line 4: `app.ports.blue`: 0 is not a port (1 to 65535)",
        ),
        (
            format!("{head}stop_timeout = \"soon\"\n"),
            "line 6: `app.stop_timeout`: \"soon\" is not a duration such as \"90s\" or \"10m\"",
        ),
        (
            format!("{head}shared = [\"../etc\"]\n"),
            "line 6: `app.shared`: ../etc must be a relative path inside the release, without `..`",
        ),
        (
            format!("{head}[app.health]\npath = \"health\"\n"),
            "line 7: `app.health.path`: \"health\" is not a path such as \"/health\"",
        ),
        (
            format!("{head}[app.check]\nurl = \"ftp://x/\"\n"),
            "line 7: `app.check.url`: \"ftp://x/\" is not an http(s) URL such as \"http://127.0.0.1/health\"",
        ),
        (
            format!("{head}[app.proxy]\nkind = \"apache\"\n"),
            "line 7: unknown variant `apache`, expected one of `caddy`, `nginx`, `haproxy`, `none` (in `kind = \"apache\"`)",
        ),
    ];
    for (config, message) in cases {
        app.env.write_config(&config);
        let status = app.env.pushdeploy().arg("status").arg("--repo").arg(&app.env.bare).failure();
        let expected = format!("pushdeploy: error: $TMP/site.git/pushdeploy.toml: {message}");
        assert_eq!(status.pushdeploy_lines().first(), Some(&expected), "{config}\n{status}");
    }
}

#[test]
fn state_files_go_to_the_targets_owner_and_a_planted_symlink_is_not_followed() {
    let app = AppEnv::new("pdapp6-");
    let git_user = TestUser::create(&app.env, "pdgit6-");
    fs::set_permissions(&app.env.root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    let (uid, gid) = (git_user.uid, git_user.gid);
    for dir in [&app.env.target, &app.env.bare] {
        fs::create_dir(dir).expect("mkdir");
        nix::unistd::chown(dir, Some(uid.into()), Some(gid.into())).expect("chown");
    }
    // The git user's repository, as the operator makes it before root runs init.
    let _ = app
        .env
        .command("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".into()])
        .args(["git", "init", "--quiet", "--bare"])
        .arg(&app.env.bare)
        .success();

    let _ = app.init_app(&[]).success();

    // The git user's deploys refuse state files owned by anyone else; they rewrite the slots'
    // environment files, in root's directory, where they cannot put a symlink instead.
    let slot_env = app.env_dir.join("blue.env");
    for path in [app.env.target.join(".pushdeploy"), app.app_state(), slot_env] {
        let owner = fs::symlink_metadata(&path).expect("stat").uid();
        assert_eq!(owner, uid, "{} is not the target owner's", path.display());
    }

    // The git user swaps the app's state directory for a symlink to a directory of root's.
    let elsewhere = app.env.root.join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir elsewhere");
    fs::rename(app.app_state(), app.env.root.join("app-away")).expect("move app state away");
    std::os::unix::fs::symlink(&elsewhere, app.app_state()).expect("plant symlink");

    let refused = app.init_app(&[]).failure();

    assert!(refused.stderr.contains("pushdeploy does not follow a symlink there"), "{refused}");
    assert_eq!(fs::read_dir(&elsewhere).expect("read elsewhere").count(), 0, "written through");
}

/// The unit's environment files used to be in the target, the git user's: a build could swap
/// one for a symlink and systemd, reading it as root, would hand the app any root-readable
/// `KEY=value` file. They are in `--env-dir` now, whose every directory must be root's and
/// writable by root only (a sticky one such as /tmp above it is fine).
#[test]
fn an_env_dir_others_may_change_is_refused() {
    let mut app = AppEnv::new("pdapp7-");
    let open = app.env.root.join("open");
    fs::create_dir(&open).expect("mkdir open");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    app.env_dir = open.join("pushdeploy");
    let refused = app.init_app(&[]).failure();
    let line = "pushdeploy: error: $TMP/open (uid 0, mode 777) may be changed by others than root, who could then choose what systemd reads as root for $TMP/open/pushdeploy";
    let stderr = refused.normalized_stderr();
    assert!(stderr.lines().any(|l| l == line), "{refused}");
    // Refused before anything was written.
    assert!(!app.env_dir.exists() && !app.env.target.exists(), "init wrote {refused}");

    // A relative one is refused with the config's line.
    app.env_dir = "etc/pushdeploy".into();
    let relative = app.init_app(&[]).failure();
    assert!(
        relative.stderr.contains("`app.env_dir`: \"etc/pushdeploy\" is not an absolute path"),
        "{relative}"
    );
}
