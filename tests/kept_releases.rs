//! `[retire] keep = N`: the releases before the previous one wait in `.pushdeploy/kept/`;
//! `pushdeploy releases` lists them, `pushdeploy rollback` goes back to any with no rebuild.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use crate::support::app::AppSite;
use crate::support::site::{build_table, commit_version, push};
use crate::support::{BIN, Cmd, TestEnv, short};

/// Returns `pushdeploy rollback --repo BARE ARGS...`.
fn rollback_cmd(env: &TestEnv, args: &[&str]) -> Cmd {
    env.pushdeploy().args(["rollback", "--repo"]).arg(&env.bare).args(args)
}

/// Returns the lines of `pushdeploy releases`.
fn releases(env: &TestEnv) -> Vec<String> {
    let output = env.pushdeploy().args(["releases", "--repo"]).arg(&env.bare).success();
    output.stdout.lines().map(str::to_owned).collect()
}

/// Returns how many builds ran: each one appends a line to a file outside the releases.
fn builds(env: &TestEnv) -> usize {
    fs::read_to_string(env.root.join("builds")).map_or(0, |text| text.lines().count())
}

/// Returns the names in `.pushdeploy/kept/`.
fn kept_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.target.join(".pushdeploy/kept"))
        .expect("the kept directory is readable")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Returns a site with `[retire] keep = KEEP` whose build appends a line to `ROOT/builds`
/// (outside every release), so that a test can tell a rollback ran none.
fn counting_builds(keep: usize) -> TestEnv {
    let env = TestEnv::new();
    env.init(&[]);
    let build = format!("echo built >> '{}'", env.root.join("builds").display());
    env.write_config(&crate::support::site::config_with(
        &env,
        &format!("{}\n[retire]\nkeep = {keep}\n", build_table(&build)),
    ));
    env
}

#[test]
fn keep_ten_keeps_ten_releases_and_rolls_back_seven_without_a_build() {
    let env = counting_builds(10);
    let commits: Vec<String> = (1..=12)
        .map(|n| {
            let commit = commit_version(&env, &format!("v{n}"));
            let slot = slot_of(n);
            push(&env, &[]).assert_live(&commit, "refs/heads/main", slot);
            commit
        })
        .collect();
    assert_eq!(builds(&env), 12);

    // 12 deploys leave 10 releases: live (12) and previous (11) in the slots, 10 to 3 kept.
    let expected: Vec<String> =
        (3..=10).rev().map(|n| format!("{n:06}-{}", short(&commits[n - 1]))).collect();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(kept_names(&env), sorted);
    let listed = releases(&env);
    assert_eq!(listed.len(), 11, "{listed:#?}");
    for (line, n) in listed.iter().zip((3..=12).rev()) {
        let start = format!("{n:>4}  {}  ", short(&commits[n - 1]));
        assert!(line.starts_with(&start), "{line:?} does not start with {start:?}");
        let place = match n {
            12 => "  live (green)  refs/heads/main",
            11 => "  previous (blue)  refs/heads/main",
            _ => "  kept  refs/heads/main",
        };
        assert!(line.ends_with(place), "{line:?} does not end with {place:?}");
    }
    let summary = &listed[10];
    eprintln!("{}", listed.join("\n"));
    assert!(summary.starts_with("10 releases (keep = 10), "), "{summary}");
    assert!(
        summary.ends_with(" on disk, each file counted once however many releases hard-link it"),
        "{summary}"
    );

    // Seven back from 12 is 5, kept in .pushdeploy/kept: moved into the idle slot, no build.
    let started = Instant::now();
    let rollback = rollback_cmd(&env, &["--steps", "7"]).success();
    let took = started.elapsed();
    eprintln!("rollback to the 7th release back took {took:?}");
    assert!(
        rollback.pushdeploy_lines().contains(&format!(
            "pushdeploy: rolling back to {}, kept in $TMP/www/.pushdeploy/kept: moving it into blue, no rebuild",
            short(&commits[4])
        )),
        "{rollback}"
    );
    rollback.assert_live(&commits[4], "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commits[4]);
    assert_eq!(builds(&env), 12, "a build ran for the rollback");
    assert!(took.as_secs_f64() < 1.0, "the rollback took {took:?}");

    // Rolling back again goes further back (4, then 3), not forth to 12.
    let again = rollback_cmd(&env, &[]).success();
    again.assert_live(&commits[3], "refs/heads/main", "green");
    env.assert_live_equals_archive(&commits[3]);
    let third = rollback_cmd(&env, &[]).success();
    third.assert_live(&commits[2], "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commits[2]);
    assert_eq!(builds(&env), 12, "a build ran for a rollback");

    // Still ten releases, none lost: 3 live, 4 previous, the rest kept.
    let listed = releases(&env);
    assert_eq!(listed.len(), 11, "{listed:#?}");
    assert!(listed[10].starts_with("10 releases (keep = 10), "), "{listed:#?}");
    let live = listed.iter().find(|line| line.contains("  live (blue)")).unwrap();
    assert!(live.starts_with(&format!("   3  {}  ", short(&commits[2]))), "{live}");
    let previous = listed.iter().find(|line| line.contains("  previous (green)")).unwrap();
    assert!(previous.starts_with(&format!("   4  {}  ", short(&commits[3]))), "{previous}");

    // And forward again, by name, with no build either.
    let forward = rollback_cmd(&env, &[&commits[11]]).success();
    forward.assert_live(&commits[11], "refs/heads/main", "green");
    env.assert_live_equals_archive(&commits[11]);
    assert_eq!(builds(&env), 12, "a build ran for a rollback");
}

#[test]
fn releases_report_the_disk_of_hard_linked_files_once() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&crate::support::site::config_with(&env, "[retire]\nkeep = 4\n"));
    // 4 MB that no deploy changes: each release hard-links it from the one before, also after
    // the oldest kept release (which holds a link to it too) is removed.
    let big: Vec<u8> =
        (0..4_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    env.write("big.bin", &big);
    for n in 1..=5 {
        commit_version(&env, &format!("v{n}"));
        let pushed = push(&env, &[]);
        // The fifth recycles the first, which kept/ would drop: the diff route.
        let wrote = match n {
            1 => continue,
            5 => "pushdeploy: applied the changes since ",
            _ => "pushdeploy: wrote 1 file and hard-linked 1 unchanged file (",
        };
        assert!(pushed.pushdeploy_lines().iter().any(|l| l.starts_with(wrote)), "{pushed}");
    }
    let listed = releases(&env);
    eprintln!("{}", listed.join("\n"));
    assert_eq!(listed.len(), 5, "{listed:#?}");
    for line in &listed[..4] {
        assert!(line.contains("    4.0 MB  ") || line.contains("    4.1 MB  "), "{line}");
    }
    let summary = &listed[4];
    assert!(
        summary.starts_with("4 releases (keep = 4), 4.0 MB on disk")
            || summary.starts_with("4 releases (keep = 4), 4.1 MB on disk"),
        "{summary}"
    );
}

#[test]
fn releases_list_the_deploys_that_failed_their_checks_as_not_kept() {
    let env = TestEnv::new();
    env.init(&[]);
    let extra = "[build]\npublish = \"public\"\n[retire]\nkeep = 3\n";
    env.write_config(&crate::support::site::config_with(&env, extra));
    env.write("public/index.html", "v1\n");
    let first = env.commit_all("v1");
    push(&env, &[]).assert_live(&first, "refs/heads/main", "blue");
    env.remove("public");
    env.write("index.html", "no public dir\n");
    let broken = env.commit_all("v2 without public/");
    push(&env, &[]).assert_failed_at("verify");

    let listed = releases(&env);

    assert_eq!(listed.len(), 3, "{listed:#?}");
    assert!(listed[0].starts_with(&format!("   1  {}  ", short(&first))), "{listed:#?}");
    assert!(listed[0].ends_with("  live (blue)  refs/heads/main"), "{listed:#?}");
    let failed = format!("   -  {}  ", short(&broken));
    assert!(listed[1].starts_with(&failed), "{listed:#?}");
    assert!(
        listed[1].contains("           -  failed its check at verify, not kept: "),
        "{listed:#?}"
    );
    assert!(listed[2].starts_with("1 release (keep = 3), "), "{listed:#?}");
}

#[test]
fn an_app_rolls_back_to_a_release_kept_beyond_the_previous_one_under_systemd() {
    let Some(site) = AppSite::new("pdkept1-") else { return };
    site.edit_config(|config| format!("{config}\n[retire]\nkeep = 4\n"));
    let commits: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .zip(["blue", "green", "blue", "green"])
        .map(|(name, slot)| {
            let commit = site.commit("ok", name);
            site.push().assert_live(&commit, "refs/heads/main", slot);
            commit
        })
        .collect();
    // d live in green, c previous in blue (its instance kept running), b and a kept.
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "active"));

    let rollback = site
        .systemd
        .run(&site.env, BIN)
        .args(["rollback", "--steps", "3", "--repo"])
        .arg(&site.env.bare)
        .success();

    assert!(
        rollback.pushdeploy_lines().contains(&format!(
            "pushdeploy: rolling back to {}, kept in $TMP/www/.pushdeploy/kept: moving it into blue, no rebuild",
            short(&commits[0])
        )),
        "{rollback}"
    );
    eprintln!("app rollback to a kept release: {}", rollback.final_line());
    rollback.assert_live(&commits[0], "refs/heads/main", "blue");
    // Blue's instance runs a now, not c, whose files were moved out from under it.
    site.assert_serves(site.blue, &commits[0]);
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "active"));
    let listed = releases(&site.env);
    assert!(listed.last().is_some_and(|line| line.starts_with("4 releases (keep = 4), ")));
}

#[test]
fn the_restart_strategy_rolls_back_its_one_instance_to_a_kept_release() {
    let (port, _) = crate::support::app::free_ports();
    let command =
        "exec /usr/bin/gunicorn --threads 8 --worker-tmp-dir /dev/shm -b 127.0.0.1:$PORT app:app";
    let args = ["--strategy", "restart", "--ports", &port.to_string(), "--app-command", command];
    let Some(site) = AppSite::with_init("pdkept2-", &args) else { return };
    site.edit_config(|config| format!("{config}\n[retire]\nkeep = 4\n"));
    let commits: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .zip(["blue", "green", "blue", "green"])
        .map(|(name, slot)| {
            let commit = site.commit("ok", name);
            site.push().assert_live(&commit, "refs/heads/main", slot);
            commit
        })
        .collect();
    site.assert_serves(port, &commits[3]);

    let rollback = site.systemd.run(&site.env, BIN).args(["rollback", "--steps", "3", "--repo"]);
    let rollback = rollback.arg(&site.env.bare).success();

    eprintln!("restart strategy, rollback to a kept release: {}", rollback.final_line());
    rollback.assert_live(&commits[0], "refs/heads/main", "blue");
    site.assert_serves(port, &commits[0]);
    let again = site.systemd.run(&site.env, BIN).args(["rollback", "--repo"]);
    let again = again.arg(&site.env.bare).failure();
    assert!(
        again.pushdeploy_lines()[0]
            == "pushdeploy: error: there is no earlier successful deploy to roll back to",
        "{again}"
    );
    site.assert_serves(port, &commits[0]);
}

// A release deployed again by a rollback (no longer kept) is the newest by number; rolling
// back from it went forward to the release the first rollback left, not further back.
#[test]
fn a_rollback_from_a_release_a_rollback_rebuilt_goes_further_back() {
    let env = counting_builds(3);
    let commits: Vec<String> = (1..=5)
        .map(|n| {
            let commit = commit_version(&env, &format!("v{n}"));
            let _ = push(&env, &[]);
            commit
        })
        .collect();
    // 5 live, 4 previous, 3 kept: 2 is three back and no longer kept, so it is built again.
    let rollback = rollback_cmd(&env, &["--steps", "3"]).success();
    rollback.assert_live(&commits[1], "refs/heads/main", "green");
    assert_eq!(builds(&env), 6);

    let again = rollback_cmd(&env, &[]).success();

    again.assert_live(&commits[0], "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commits[0]);
    assert_eq!(builds(&env), 7);
}

/// Writes version `n` of a small site: pages in directories, some added, changed and removed
/// from one version to the next, an executable that flips, a symlink that moves. Returns the
/// commit.
fn commit_pages(env: &TestEnv, n: usize) -> String {
    for dir in 0..3 {
        for page in 0..8 {
            env.write(format!("pages/{dir}/page-{page}.html"), format!("<p>page {page}</p>\n"));
        }
    }
    env.write(format!("pages/{}/page-{}.html", n % 3, n % 8), format!("<p>changed in v{n}</p>\n"));
    env.write(format!("added/v{n}.html"), format!("<p>added in v{n}</p>\n"));
    if n > 1 {
        env.remove(format!("added/v{}.html", n - 1));
    }
    let mode = if n % 2 == 0 { 0o755 } else { 0o644 };
    env.write("bin/tool.sh", "#!/bin/sh\necho tool\n");
    fs::set_permissions(env.work.join("bin/tool.sh"), fs::Permissions::from_mode(mode))
        .expect("chmod the tool");
    let _ = fs::remove_file(env.work.join("latest.html"));
    env.symlink("latest.html", format!("added/v{n}.html"));
    commit_version(env, &format!("v{n}"))
}

/// Returns a site with `[retire] keep = KEEP` and no build (the diff route's condition).
fn keeping(keep: usize) -> TestEnv {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&crate::support::site::config_with(
        &env,
        &format!("[retire]\nkeep = {keep}\n"),
    ));
    env
}

/// Returns the line of a deploy that recycled the oldest kept release (of `commit`) into
/// `slot`, up to its counts.
fn recycled(commit: &str, slot: &str) -> String {
    format!(
        "pushdeploy: applied the changes since {} to the oldest kept release, moved into {slot}: ",
        short(commit)
    )
}

/// Pushes version `n`; asserts it is live in `slot`, equals its archive, and (when `from` is
/// given) took the diff route from the recycled release of that commit, writing no whole tree.
#[track_caller]
fn push_version(env: &TestEnv, n: usize, slot: &str, from: Option<&str>) -> String {
    let commit = commit_pages(env, n);
    let pushed = push(env, &[]);
    pushed.assert_live(&commit, "refs/heads/main", slot);
    env.assert_live_equals_archive(&commit);
    let lines = pushed.pushdeploy_lines();
    if let Some(from) = from {
        let line = recycled(from, slot);
        assert!(lines.iter().any(|l| l.starts_with(&line)), "v{n}: no `{line}`\n{pushed}");
        assert!(!lines.iter().any(|l| l.starts_with("pushdeploy: wrote ")), "{pushed}");
    }
    commit
}

/// The slot the `n`th deploy of a fresh target goes live in: blue first, then alternating.
fn slot_of(n: usize) -> &'static str {
    if n % 2 == 1 { "blue" } else { "green" }
}

/// Deploys versions 1 to `count` with [`push_version`], each writing a tree; returns their
/// commits, 1-based (index 0 is empty).
fn push_versions(env: &TestEnv, count: usize) -> Vec<String> {
    let mut commits = vec![String::new()];
    for n in 1..=count {
        commits.push(push_version(env, n, slot_of(n), None));
    }
    commits
}

/// Asserts `pushdeploy releases` lists `count` releases, `keep` as configured.
#[track_caller]
fn assert_release_count(env: &TestEnv, count: usize) {
    let listed = releases(env);
    assert_eq!(listed.len(), count + 1, "{listed:#?}");
    let summary = format!("{count} releases (keep = {count}), ");
    assert!(listed[count].starts_with(&summary), "{listed:#?}");
}

#[test]
fn once_kept_is_full_a_deploy_recycles_the_oldest_kept_release_by_the_diff_route() {
    let env = keeping(4);
    // Until kept/ holds 2 (keep - 2), each deploy writes a tree.
    let mut commits = push_versions(&env, 4);
    // From then on the release kept/ would drop (n - 4) is brought to the new commit.
    for n in 5..=8 {
        let slot = slot_of(n);
        let from = commits[n - 4].clone();
        commits.push(push_version(&env, n, slot, Some(&from)));
        assert_release_count(&env, 4);
    }
    let expected: Vec<String> = (5..=6).map(|n| format!("{n:06}-{}", short(&commits[n]))).collect();
    assert_eq!(kept_names(&env), expected);

    // Every kept release still equals its commit: roll back to each, newest first.
    for n in (5..=7).rev() {
        let slot = slot_of(n);
        let back = rollback_cmd(&env, &[&commits[n]]).success();
        back.assert_live(&commits[n], "refs/heads/main", slot);
        env.assert_live_equals_archive(&commits[n]);
        assert_release_count(&env, 4);
    }
}

#[test]
fn after_a_rollback_to_a_kept_release_later_deploys_still_take_the_diff_route() {
    let env = keeping(4);
    let mut commits = push_versions(&env, 6);
    // Live 6 (green), previous 5 (blue), kept 3 and 4. Back to 3: into blue, 5 kept.
    let back = rollback_cmd(&env, &[&commits[3]]).success();
    back.assert_live(&commits[3], "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commits[3]);

    // 7 recycles 4 (the renames and removals since it was written are pushdeploy's own), 8
    // recycles 5 and keeps 3, which the rollback brought back; by number 3 is then the oldest
    // kept, and 9 recycles it: its index still vouches for it.
    let order = [(7, "green", 4), (8, "blue", 5), (9, "green", 3), (10, "blue", 6)];
    for (n, slot, from) in order {
        let from = commits[from].clone();
        commits.push(push_version(&env, n, slot, Some(&from)));
        assert_release_count(&env, 4);
    }
}

#[test]
fn a_hand_edit_in_the_oldest_kept_release_forces_the_full_route() {
    let env = keeping(4);
    let commits = push_versions(&env, 4);
    // kept/ holds 1 and 2; 1 is the next to be recycled. An editor writes a new file and
    // renames it over the old one (in place would change the releases sharing the inode).
    let tree = env.target.join(format!(".pushdeploy/kept/000001-{}/release", short(&commits[1])));
    let temp = tree.join("pages/2/.page-5.html.swp");
    fs::write(&temp, "<p>edited by hand</p>\n").expect("write the edit");
    fs::rename(&temp, tree.join("pages/2/page-5.html")).expect("rename the edit into place");

    let commit = commit_pages(&env, 5);
    let pushed = push(&env, &[]);
    pushed.assert_live(&commit, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&commit);
    let line = format!(
        "pushdeploy: the oldest kept release ({}) is not reused: pages/2 was changed since it \
         was deployed; writing the whole tree",
        short(&commits[1])
    );
    assert!(pushed.pushdeploy_lines().contains(&line), "{pushed}");
    assert_release_count(&env, 4);
}

#[test]
fn after_a_rollback_to_a_kept_release_the_next_deploy_links_its_files() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&crate::support::site::config_with(&env, "[retire]\nkeep = 4\n"));
    for page in 0..20 {
        env.write(format!("pages/page-{page}.html"), format!("<p>page {page}</p>\n"));
    }
    let commits: Vec<String> = (1..=6)
        .map(|n| {
            let commit = commit_version(&env, &format!("v{n}"));
            let _ = push(&env, &[]);
            commit
        })
        .collect();
    // Back to v3, kept in .pushdeploy/kept/ while the later deploys linked to its files and
    // the removals of older releases unlinked from them (all pushdeploy's own ctime changes).
    let back = rollback_cmd(&env, &[&commits[2]]).success();
    back.assert_live(&commits[2], "refs/heads/main", "blue");

    // The next deploy would recycle v4, the oldest kept; a file added by hand to it sends the
    // deploy down the full route, which links from the live release (v3) what it can.
    let oldest = env.target.join(format!(".pushdeploy/kept/000004-{}/release", short(&commits[3])));
    fs::write(oldest.join("by-hand.html"), "hand\n").expect("add a file by hand");

    // v3's index still vouches for it: the next deploy links its files, writes one.
    let v7 = commit_version(&env, "v7");
    let pushed = push(&env, &[]);
    pushed.assert_live(&v7, "refs/heads/main", "green");
    env.assert_live_equals_archive(&v7);
    let lines = pushed.pushdeploy_lines();
    let full = format!(
        "pushdeploy: the oldest kept release ({}) is not reused: its top directory was changed \
         since it was deployed; writing the whole tree",
        short(&commits[3])
    );
    assert!(lines.contains(&full), "{pushed}");
    let wrote = "pushdeploy: wrote 1 file and hard-linked 20 unchanged files (";
    assert!(lines.iter().any(|l| l.starts_with(wrote)), "{pushed}");
}

#[test]
fn sigkill_while_applying_a_diff_to_a_recycled_release_leaves_the_next_deploy_right() {
    let env = keeping(4);
    let write_all = |version: &str| {
        for dir in 0..40 {
            for page in 0..50 {
                env.write(
                    format!("pages/{dir:03}/page-{page}.html"),
                    format!("<p>{version}</p>\n"),
                );
            }
        }
    };
    write_all("v1");
    let mut commits = Vec::new();
    for n in 1..=4 {
        commits.push(commit_version(&env, &format!("v{n}")));
        let _ = push(&env, &[]);
    }
    let live = env.live_site();

    // v5 changes every page: the recycled v1 gets 2,001 files rewritten.
    write_all("v5");
    let v5 = commit_version(&env, "v5");
    // Its objects reach the repository through a branch that does not deploy.
    let _ = env.push_ref("HEAD:refs/heads/staging");
    let mut deploy = crate::support::site::deploy_cmd(&env, &v5).spawn();
    // v1 leaves kept/ just before the diff is applied to it: kill the deploy then.
    let oldest = env.target.join(format!(".pushdeploy/kept/000001-{}", short(&commits[0])));
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while oldest.exists() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    let _ = deploy.kill();
    let _ = deploy.wait();
    assert_eq!(env.link_target(), live.link_target, "the link moved");
    crate::support::assert_trees_equal(&live.tree, &env.snapshot_tree(env.live_dir()));

    // The next deploy puts v3 back from where it was parked, and goes the full route (kept/
    // holds v2 only: v1, recycled, is gone); then v3 is kept and the count is 4 again.
    let pushed = push(&env, &[]);
    pushed.assert_live(&v5, "refs/heads/main", "blue");
    env.assert_live_equals_archive(&v5);
    assert!(!env.target.join(".pushdeploy/recycled").exists(), "{pushed}");
    assert_release_count(&env, 4);
    let expected: Vec<String> =
        (2..=3).map(|n| format!("{n:06}-{}", short(&commits[n - 1]))).collect();
    assert_eq!(kept_names(&env), expected);
    for commit in commits[1..].iter().rev() {
        let slot = env.idle_slot();
        let back = rollback_cmd(&env, &[commit]).success();
        back.assert_live(commit, "refs/heads/main", slot);
        env.assert_live_equals_archive(commit);
    }
}
