//! An app's `release` command and `shared` paths under real systemd (support::systemd): the
//! release runs once per deploy as the app's user with [app.env], through the oneshot unit
//! `init --app` wrote, before the new instance starts; a failing or slow one fails the push
//! with nothing started and the old instance serving. Each `shared` path of a release is a
//! link into `TARGET/shared/`, whose files outlive the releases; a missing entry fails before
//! the switch, and a pushed link into `shared/` is still refused.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::app::{APP_PY, AppSite, Watcher};

/// The migration: appends the commit, the app user's uid and an [app.env] value to the shared
/// log, and says so on its output (the journal, which the pusher sees).
const MIGRATE: &str = "echo \"$PUSHDEPLOY_COMMIT $(id -u) $GREETING\" >> data/migrations.log && echo \"migrated $PUSHDEPLOY_COMMIT\"";

/// The test app, which at boot requires its commit's migration to have run, and leaves a file
/// of its own in `shared/data`.
fn app_reading_the_migrations() -> String {
    format!(
        "{APP_PY}\nif COMMIT not in open(\"data/migrations.log\").read():\n    raise RuntimeError(\"not migrated\")\nopen(\"data/booted-\" + COMMIT, \"w\").write(COMMIT)\n"
    )
}

/// Creates `TARGET/shared/NAME` as the app's user would.
fn make_shared_dir(site: &AppSite, name: &str) {
    let dir = site.env.target.join("shared").join(name);
    fs::create_dir(&dir).expect("mkdir shared entry");
    let (uid, gid) = (site.user.uid, site.user.gid);
    nix::unistd::chown(&dir, Some(uid.into()), Some(gid.into())).expect("chown shared entry");
}

/// Sets `[app.env]` as init writes it into the app's environment file.
fn set_app_env(site: &AppSite, line: &str) {
    let path = site.env_file("env");
    let text = fs::read_to_string(&path).expect("read the env file");
    fs::write(&path, format!("{text}{line}\n")).expect("write the env file");
}

#[track_caller]
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn the_release_runs_once_per_deploy_as_the_app_user_before_its_instance_and_shared_files_stay() {
    let Some(site) = AppSite::with_init(
        "pdrel1-",
        &["--app-release", MIGRATE, "--release-timeout", "5s", "--shared", "data"],
    ) else {
        return;
    };
    make_shared_dir(&site, "data");
    set_app_env(&site, "GREETING=\"hello from app.env\"");
    site.env.write("app.py", app_reading_the_migrations());
    // The commit's own data/ is replaced by the link: its file never reaches shared/.
    site.env.write("data/committed.txt", "from the commit\n");
    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    let shared = site.env.target.join("shared");
    let lines = first.pushdeploy_lines();
    let replaced =
        "pushdeploy: shared: replaced data/ of the commit with a link to $TMP/www/shared/data";
    assert!(lines.contains(&replaced.to_owned()), "{first}");
    assert!(lines.contains(&format!("pushdeploy: release: migrated {a}")), "{first}");
    let finished = lines.iter().find(|l| l.starts_with("pushdeploy: release: `echo ")).cloned();
    eprintln!("first deploy: {finished:?}");
    assert!(finished.is_some_and(|l| l.contains("` finished in ")), "{first}");
    assert_eq!(
        fs::read_link(site.env.target.join("blue/data")).expect("readlink"),
        shared.join("data")
    );
    assert!(!shared.join("data/committed.txt").exists());

    let b = site.commit("ok", "b");
    let second = site.push();
    second.assert_live(&b, "refs/heads/main", "green");
    site.assert_serves(site.green, &b);

    // Once per deploy, as the app's user, with [app.env]; the instance booted after it.
    let uid = site.user.uid;
    let log = shared.join("data/migrations.log");
    assert_eq!(read(&log), format!("{a} {uid} hello from app.env\n{b} {uid} hello from app.env\n"));
    assert_eq!(fs::metadata(&log).expect("stat the log").uid(), uid);
    // What blue's instance wrote in shared/data outlived blue's release.
    assert!(!site.env.target.join("blue").exists(), "blue was not retired");
    let booted = shared.join(format!("data/booted-{a}"));
    assert_eq!(read(&booted), a);
    assert_eq!(fs::metadata(&booted).expect("stat").uid(), uid);
    assert!(site.env.target.join(format!("green/data/booted-{a}")).exists());
}

/// Tells whether systemd ever had `unit` active (its first activation time is not 0).
fn ever_active(site: &AppSite, unit: &str) -> bool {
    let shown =
        site.systemd.systemctl(&["show", "-p", "ActiveEnterTimestampMonotonic", "--value", unit]);
    shown.stdout.trim() != "0"
}

#[test]
fn a_failing_or_slow_release_and_a_missing_shared_entry_fail_with_the_old_instance_serving() {
    let release = "if [ -e fail ]; then echo 'migration 0042 failed' >&2; exit 3; fi; if [ -e slow ]; then sleep 30; fi";
    let Some(site) =
        AppSite::with_init("pdrel2-", &["--app-release", release, "--release-timeout", "1s"])
    else {
        return;
    };
    let a = site.commit("ok", "a");
    site.push().assert_live(&a, "refs/heads/main", "blue");
    let watcher = Watcher::start(site.blue, a.clone());
    let green = site.unit("green");

    // Exit 3: the push fails at release, with the command's output; green never started.
    site.env.write("fail", "");
    let _ = site.commit("ok", "fails");
    let failed = site.push();
    let line = failed.final_line();
    eprintln!("{line}");
    assert!(
        line.starts_with(&format!(
            "pushdeploy: failed at release: `{release}` exited with status 3 after "
        )),
        "{failed}"
    );
    assert!(line.contains("; its output is above"), "{line}");
    let output = "pushdeploy: release: migration 0042 failed".to_owned();
    assert!(failed.pushdeploy_lines().contains(&output), "{failed}");
    assert!(!ever_active(&site, &green), "green was started\n{failed}");
    let history = crate::support::history::history(&site.env);
    assert_eq!(history[0]["failed_stage"], "release", "{}", history[0]);

    // Past release_timeout: systemd stops it, the push fails in about that time.
    site.env.remove("fail");
    site.env.write("slow", "");
    let _ = site.commit("ok", "slow");
    let started = Instant::now();
    let slow = site.push();
    let took = started.elapsed();
    eprintln!(
        "a release past its 1 s timeout failed the push after {took:?}: {}",
        slow.final_line()
    );
    assert!(
        slow.final_line().contains(&format!(
            "`{release}` did not finish within 1s (`release_timeout`); systemd stopped it"
        )),
        "{slow}"
    );
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "{took:?}\n{slow}");
    assert!(!ever_active(&site, &green), "green was started\n{slow}");
    site.env.remove("slow");

    // A shared entry that does not exist: the deploy fails before the switch, and before the
    // release command runs; the hint says how to create it.
    let config = read(&site.env.bare.join("pushdeploy.toml"));
    site.env.write_config(&config.replace("shared = []", "shared = [\"uploads\"]"));
    let _ = site.commit("ok", "uploads");
    let missing = site.push();
    eprintln!("{}", missing.final_line());
    let uploads = "$TMP/www/shared/uploads";
    let expected = format!(
        "pushdeploy: failed at verify: shared: {uploads} does not exist; the live site is unchanged"
    );
    assert!(missing.final_line().starts_with(&expected), "{missing}");
    let hint =
        format!("create it as the app's user: `sudo -u {} mkdir -p {uploads}`", site.user.name);
    assert!(missing.final_line().contains(&hint), "{missing}");
    assert!(!missing.stderr.contains("pushdeploy: release:"), "{missing}");

    // A pushed link into shared/ is not one of pushdeploy's: refused as leading out.
    make_shared_dir(&site, "uploads");
    site.env.symlink("x", "../shared/uploads");
    let _ = site.commit("ok", "link");
    let link = site.push();
    assert!(
        link.final_line().starts_with(
            "pushdeploy: failed at materialize: refused x: symlink to ../shared/uploads leads out of the release"
        ),
        "{link}"
    );

    // `release` in the file but no unit for it (init not run again): one line says so.
    site.env.remove("x");
    let unit_file =
        site.systemd.host_path(site.systemd.unit_dir().join("pushdeploy-www-release@.service"));
    fs::remove_file(&unit_file).expect("remove the release unit");
    assert!(site.systemd.systemctl(&["daemon-reload"]).status.success());
    let _ = site.commit("ok", "no unit");
    let no_unit = site.push();
    assert!(
        no_unit.final_line().starts_with(&format!(
            "pushdeploy: failed at release: pushdeploy-www-release@green.service does not exist, so `{release}` could not run;"
        )),
        "{no_unit}"
    );
    assert!(no_unit.final_line().contains("run `pushdeploy init --app` again"), "{no_unit}");

    assert!(!ever_active(&site, &green), "green was started");
    site.assert_serves(site.blue, &a);
    assert_eq!(site.env.link_target(), Path::new("blue"));
    let (answered, failures) = watcher.stop();
    eprintln!("blue answered {answered} requests during the failed deploys");
    assert!(answered > 20 && failures.is_empty(), "{answered} answered, failures: {failures:?}");
}
