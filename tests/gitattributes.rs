//! `.gitattributes` as `git archive` applies them: each release must equal `git archive` of
//! its commit, path by path, and the attribute must visibly have done something.

use std::fs;

use crate::support::{Output, TestEnv, assert_trees_equal};

/// Commits everything, pushes, and asserts the live release equals `git archive` of it.
/// Returns the commit and the push's output.
#[track_caller]
fn push_and_compare(env: &TestEnv, message: &str) -> (String, Output) {
    let commit = env.commit_all(message);
    let slot = if env.link_path().symlink_metadata().is_ok() { env.idle_slot() } else { "blue" };
    let push = env.push();
    push.assert_live(&commit, "refs/heads/main", slot);
    env.assert_live_equals_archive(&commit);
    (commit, push)
}

/// Returns the live release's bytes of `path`.
#[track_caller]
fn live(env: &TestEnv, path: &str) -> Vec<u8> {
    let path = env.live_dir().join(path);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[track_caller]
fn assert_absent(env: &TestEnv, path: &str) {
    let path = env.live_dir().join(path);
    assert!(fs::symlink_metadata(&path).is_err(), "{} was deployed", path.display());
}

#[track_caller]
fn assert_present(env: &TestEnv, path: &str) {
    let path = env.live_dir().join(path);
    assert!(fs::symlink_metadata(&path).is_ok(), "{} is missing", path.display());
}

fn site() -> TestEnv {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "<h1>home</h1>\n");
    env
}

#[test]
fn export_ignore_leaves_out_files_directories_and_patterns_as_git_archive_does() {
    let env = site();
    // laravel/laravel's and symfony/yaml's lines, and the pattern forms git documents.
    env.write(
        ".gitattributes",
        "/.github export-ignore\nCHANGELOG.md export-ignore\n/Tests export-ignore\n*.test.js export-ignore\ndocs/ export-ignore\nkeep/** export-ignore\nvendor/**/*.md export-ignore\n",
    );
    env.write(".github/workflows/ci.yml", "on: push\n");
    env.write("CHANGELOG.md", "## 1.0\n");
    env.write("lib/CHANGELOG.md", "nested, matched at any depth\n");
    env.write("Tests/YamlTest.php", "<?php\n");
    env.write("lib/Tests/kept.php", "anchored to the root: kept\n");
    env.write("js/app.js", "app();\n");
    env.write("js/app.test.js", "test();\n");
    env.write("docs/guide.md", "guide\n");
    env.write("keep/a.txt", "a\n");
    env.write("vendor/x/y/README.md", "readme\n");
    env.write("vendor/x/y/code.php", "<?php\n");
    let (_, _) = push_and_compare(&env, "export-ignore");
    for gone in [".github", "CHANGELOG.md", "lib/CHANGELOG.md", "Tests", "js/app.test.js"] {
        assert_absent(&env, gone);
    }
    assert_absent(&env, "vendor/x/y/README.md");
    for kept in ["lib/Tests/kept.php", "js/app.js", "vendor/x/y/code.php", "index.html"] {
        assert_present(&env, kept);
    }
}

#[test]
fn export_subst_expands_format_placeholders_as_git_archive_does() {
    let env = site();
    env.write(".gitattributes", "version.txt export-subst\nrefs.txt export-subst\n");
    env.write(
        "version.txt",
        "$Format:%H %h %T %t %P %p$\n$Format:%an <%ae> %ad | %aD | %at$\n$Format:%cn <%ce> %cd | %cD | %ct$\n$Format:%s%n%x41$\nliteral $Format: stays when unclosed\n",
    );
    // %d and %D name the refs at the commit when git archive runs; after the deploy they
    // include pushdeploy's own refs/deploys/*, so they are compared with the push's refs.
    env.write("refs.txt", "$Format:%d|%D$\n");
    env.write("plain.txt", "$Format:%H$ is not expanded here\n");
    let commit = env.commit_all("subst subject");
    env.push().assert_live(&commit, "refs/heads/main", "blue");
    let mut archive = env.archive_tree(&commit);
    let refs = archive.remove(std::path::Path::new("refs.txt"));
    let mut deployed = env.snapshot_tree(env.live_dir());
    let _ = deployed.remove(std::path::Path::new("refs.txt"));
    assert_trees_equal(&archive, &deployed);
    assert!(refs.is_some(), "git archive holds refs.txt");
    assert_eq!(live(&env, "refs.txt"), b" (HEAD -> main)|HEAD -> main\n");
    let text = String::from_utf8(live(&env, "version.txt")).expect("utf-8");
    assert!(text.starts_with(&commit), "%H not expanded: {text:?}");
    assert!(text.contains("subst subject\nA\n"), "%s, %n, %x41 not expanded: {text:?}");
    assert_eq!(live(&env, "plain.txt"), b"$Format:%H$ is not expanded here\n");
}

#[test]
fn eol_crlf_and_text_convert_line_endings_as_git_archive_does() {
    let env = site();
    // git/git's line, and `text` with the repository's core.eol.
    env.write(".gitattributes", "*.bat eol=crlf\n*.txt text\n*.bin -text\n");
    env.write("build.bat", "@echo off\r\necho one\necho two\n");
    env.write("notes.txt", "one\ntwo\n");
    env.write("data.bin", "raw\nbytes\n");
    let _ = env.git_in(&env.bare).args(["config", "core.eol", "crlf"]).success();
    let _ = push_and_compare(&env, "eol");
    assert_eq!(live(&env, "build.bat"), b"@echo off\r\necho one\r\necho two\r\n");
    assert_eq!(live(&env, "notes.txt"), b"one\r\ntwo\r\n");
    assert_eq!(live(&env, "data.bin"), b"raw\nbytes\n");
}

#[test]
fn text_auto_converts_text_and_leaves_binary_files_as_git_archive_does() {
    let env = site();
    env.write(".gitattributes", "* text=auto eol=crlf\n");
    env.write("page.html", "<p>\nline\n</p>\n");
    env.write("image.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\nmore\n".as_slice());
    env.write("lonely-cr.txt", "a\rb\nc\n");
    let _ = push_and_compare(&env, "text=auto");
    assert_eq!(live(&env, "page.html"), b"<p>\r\nline\r\n</p>\r\n");
    assert_eq!(live(&env, "image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\nmore\n");
}

#[test]
fn ident_expands_id_as_git_archive_does() {
    let env = site();
    env.write(".gitattributes", "*.c ident\n");
    env.write("main.c", "/* $Id$ */\nint main(void) { return 0; }\n");
    let _ = push_and_compare(&env, "ident");
    let blob = env.rev_parse("HEAD:main.c");
    let text = String::from_utf8(live(&env, "main.c")).expect("utf-8");
    assert!(text.starts_with(&format!("/* $Id: {blob} $ */")), "{text:?}");
}

#[test]
fn gitattributes_in_subdirectories_apply_below_them_and_override_the_root() {
    let env = site();
    env.write(".gitattributes", "*.txt eol=crlf\n*.log export-ignore\n");
    env.write("sub/.gitattributes", "*.txt -text\nkeep.log -export-ignore\nlocal/ export-ignore\n");
    env.write("top.txt", "a\nb\n");
    env.write("top.log", "gone\n");
    env.write("sub/inner.txt", "a\nb\n");
    env.write("sub/keep.log", "kept by the deeper file\n");
    env.write("sub/drop.log", "gone\n");
    env.write("sub/local/x.html", "x\n");
    env.write("other/local/y.html", "y\n");
    let _ = push_and_compare(&env, "subdirectories");
    assert_eq!(live(&env, "top.txt"), b"a\r\nb\r\n");
    assert_eq!(live(&env, "sub/inner.txt"), b"a\nb\n");
    assert_absent(&env, "top.log");
    assert_absent(&env, "sub/drop.log");
    assert_present(&env, "sub/keep.log");
    assert_present(&env, "other/local/y.html");
}

#[test]
fn info_attributes_of_the_bare_repository_apply_as_git_archive_reads_them() {
    let env = site();
    env.write("secret.txt", "not for the web\n");
    env.write("page.html", "a\nb\n");
    fs::create_dir_all(env.bare.join("info")).expect("mkdir info");
    fs::write(env.bare.join("info/attributes"), "secret.txt export-ignore\n*.html eol=crlf\n")
        .expect("write info/attributes");
    let _ = push_and_compare(&env, "info/attributes");
    assert_absent(&env, "secret.txt");
    assert_eq!(live(&env, "page.html"), b"a\r\nb\r\n");
}

#[test]
fn core_autocrlf_of_the_bare_repository_converts_without_any_attributes() {
    let env = site();
    env.write("page.html", "a\nb\n");
    let _ = env.git_in(&env.bare).args(["config", "core.autocrlf", "true"]).success();
    let _ = push_and_compare(&env, "autocrlf");
    assert_eq!(live(&env, "page.html"), b"a\r\nb\r\n");
}

/// Regression: unchanged files are hard-linked from the live release by blob id, but a
/// converted file's bytes are not its blob's; a blob that gains a conversion (or loses one)
/// between two deploys must be written afresh.
#[test]
fn incremental_deploys_with_attributes_equal_git_archive() {
    let env = site();
    for i in 0..80 {
        env.write(format!("pages/page-{i}.txt"), format!("page\n{i}\n"));
    }
    env.write("stays.html", "a\nb\n");
    let _ = push_and_compare(&env, "no attributes yet");

    env.write(".gitattributes", "*.txt eol=crlf\nversion.txt export-subst\n");
    env.write("version.txt", "$Format:%H$\n");
    let _ = push_and_compare(&env, "attributes added");
    assert_eq!(live(&env, "pages/page-1.txt"), b"page\r\n1\r\n");

    env.write("pages/page-2.txt", "changed\n");
    let (commit, push) = push_and_compare(&env, "one file changed");
    assert_eq!(live(&env, "version.txt"), format!("{commit}\r\n").as_bytes());
    assert!(
        push.pushdeploy_lines().iter().any(|line| line.contains("hard-linked 82 unchanged files")),
        "the converted files that did not change are linked, the two that did are not\n{push}"
    );

    env.remove(".gitattributes");
    let _ = push_and_compare(&env, "attributes removed");
    assert_eq!(live(&env, "pages/page-1.txt"), b"page\n1\n");
}

#[test]
fn export_subst_that_expands_without_bound_is_refused() {
    let env = site();
    let _ = push_and_compare(&env, "first");
    env.write(".gitattributes", "bomb.txt export-subst\n");
    env.write("bomb.txt", "$Format:%B$".repeat(1200));
    let before = env.live_site();
    let _ = env.git().args(["add", "--all"]).success();
    let message = "m".repeat(64 * 1024);
    let _ = env.git().args(["commit", "--quiet", "-m", &message]).success();
    let push = env.push();
    let line = push.assert_failed_at("materialize");
    assert!(line.contains("export-subst or ident expand too much"), "{line}");
    assert_eq!(env.link_target(), before.link_target);
}
