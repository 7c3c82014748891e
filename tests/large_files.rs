//! Large pushes: a 200 MB file deploys with bounded memory, and 100,000 files deploy.

use std::time::Instant;

use crate::support::big_file::{MEMORY_LIMIT, deploy_measured, env_with_200_mb_branch, mib};
use crate::support::target::{names, set};
use crate::support::{Entry, TestEnv, assert_trees_equal};

#[test]
fn file_of_200_mb_deploys_with_bounded_memory() {
    let (env, commit) = env_with_200_mb_branch();

    let deploy = deploy_measured(&env, "big");

    deploy.assert_big_live(&env, &commit);
    assert_eq!(names(&env.live_dir()), set(&["big.bin", "css", "index.html"]));
    println!(
        "200 MB file, loose object: peak RSS {} (as /usr/bin/time counts it, with mapped file \
         pages), peak anonymous memory {}",
        mib(deploy.peak_rss),
        mib(deploy.peak_anon)
    );
    assert!(deploy.peak_anon < MEMORY_LIMIT, "peak anonymous memory {}", mib(deploy.peak_anon));
}

#[test]
fn hundred_thousand_files_deploy() {
    const FILES: usize = 100_000;
    const DIRS: usize = 100;
    let (env, _, _) = TestEnv::with_live_site();
    // `git fast-import` makes the commit straight from a stream: writing 100,000 files into
    // the work tree and `git add`ing them would take most of the time of this test.
    let head = env.rev_parse("HEAD");
    let message = "100,000 files";
    let mut stream = format!(
        "commit refs/heads/main\ncommitter Test Committer <committer@example.com> 981173106 +0000\n\
         data {}\n{message}\nfrom {head}\n",
        message.len()
    );
    let mut expected = env.archive_tree(&head);
    expected.insert("files".into(), Entry::Dir { mode: 0o755 });
    for dir in 0..DIRS {
        expected.insert(format!("files/d{dir:02}").into(), Entry::Dir { mode: 0o755 });
    }
    for i in 0..FILES {
        let path = format!("files/d{:02}/f{i:06}.txt", i % DIRS);
        let contents = format!("file {i}\n");
        stream.push_str(&format!("M 100644 inline {path}\ndata {}\n{contents}\n", contents.len()));
        expected.insert(path.into(), Entry::File { mode: 0o644, contents: contents.into_bytes() });
    }
    let _ = env.git().args(["fast-import", "--quiet"]).stdin(stream).success();
    let commit = env.rev_parse("main");

    let timer = Instant::now();
    let push = env.git().args(["push", "origin", "main"]).success();
    let took = timer.elapsed();

    push.assert_live(&commit, "refs/heads/main", "green");
    let wrote = push
        .pushdeploy_lines()
        .into_iter()
        .find(|line| line.starts_with("pushdeploy: wrote "))
        .unwrap_or_else(|| panic!("no `wrote` line\n{push}"));
    assert!(wrote.starts_with("pushdeploy: wrote 100,00"), "{wrote}");
    println!("100,000 files: push and deploy took {took:?}; {wrote}; {}", push.final_line());
    assert_trees_equal(&expected, &env.snapshot_tree(env.live_dir()));
    env.assert_no_idle_slot();
}
