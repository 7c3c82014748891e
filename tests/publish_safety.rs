//! Publish safety: a build must say what it publishes, and what it publishes must be a site.

use crate::support::{TestEnv, toml_str};

// Regression: `init --build "hugo --minify"` without `--publish` was accepted, and the link then
// served the whole release: hugo.toml, package.json and the rest of the sources, with the site
// itself under /public/.
#[test]
fn init_with_a_build_and_no_publish_served_the_sources() {
    let env = TestEnv::new();
    let refused = env.init_cmd(&["--build", "hugo --minify"]).failure();
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert_eq!(
        refused.pushdeploy_lines(),
        [
            "pushdeploy: error: --build without --publish would serve the whole release, the \
             site's sources with it",
            "pushdeploy: hint: pass --publish DIR, the directory the build writes (public for \
             Hugo, dist for Vite, _site for Jekyll and Eleventy), or --no-publish if the build \
             writes the site in place",
        ],
        "{refused}"
    );
    assert!(!env.bare.join("pushdeploy.toml").exists(), "a refused init wrote its config");

    // Said on purpose, it is allowed.
    let _ = env.init_cmd(&["--build", "true", "--no-publish"]).success();
}

// Regression: a build configured by hand without `publish` served the sources with the site,
// and neither the deploy nor doctor said a word.
#[test]
fn build_without_publish_serving_the_sources_went_unmentioned() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write_config(&format!(
        "{}[build]\ncommand = \"mkdir -p public && cp page.html public/index.html\"\n",
        env.base_config()
    ));
    env.write("index.html", "the sources' own page\n");
    env.write("page.html", "built\n");
    env.write("hugo.toml", "title = 'x'\n");
    env.write("package.json", "{}\n");
    let commit = env.commit_all("sources at the top");
    let push = env.push();
    push.assert_live(&commit, "refs/heads/main", "blue");
    let config = env.bare.join("pushdeploy.toml");
    let warning = format!(
        "pushdeploy: warning: the whole release is served, sources included (hugo.toml, \
         package.json); set `publish` in [build] of {} to the directory the build writes \
         (public for Hugo, dist for Vite, _site for Jekyll and Eleventy)",
        config.display()
    )
    .replace(&env.root.to_string_lossy().into_owned(), "$TMP");
    assert!(push.pushdeploy_lines().contains(&warning), "{push}");

    let doctor = env.pushdeploy().args(["doctor", "--repo"]).arg(&env.bare).success();
    let line = doctor.stdout.lines().find(|line| line.contains("sources included"));
    assert!(
        line.is_some_and(|line| line.starts_with("warning  the whole release is served")),
        "{doctor}"
    );

    // With `publish`, neither says it.
    env.write_config(&format!(
        "{}[build]\ncommand = \"mkdir -p public && cp page.html public/index.html\"\npublish = \"public\"\n",
        env.base_config()
    ));
    let push = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success();
    assert!(!push.stderr.contains("sources included"), "{push}");
}

// Regression: a build whose published directory had no index.html went live, and `/` answered
// with an error (403 or 404) until the next push.
#[test]
fn published_directory_without_index_html_went_live() {
    let (env, v1, before) = TestEnv::with_live_site();
    let build = "mkdir -p public && echo '{}' > public/api.json";
    env.write_config(&format!(
        "{}[build]\ncommand = {}\npublish = \"public\"\n",
        env.base_config(),
        toml_str(build)
    ));
    let push = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).failure();
    let config = env
        .bare
        .join("pushdeploy.toml")
        .to_string_lossy()
        .replace(&env.root.to_string_lossy().into_owned(), "$TMP");
    assert_eq!(
        push.final_line(),
        format!(
            "pushdeploy: failed at verify: the publish directory public has no index.html; the \
             live site is unchanged (blue, {}); make the build write index.html there, fix \
             `build.publish`, or set `allow_no_index = true` in [build] of {config}",
            crate::support::short(&v1)
        ),
        "{push}"
    );
    env.assert_live_unchanged(&before);

    // An API that has no index page says so, and deploys.
    env.write_config(&format!(
        "{}[build]\ncommand = {}\npublish = \"public\"\nallow_no_index = true\n",
        env.base_config(),
        toml_str(build)
    ));
    let push = env.pushdeploy().args(["deploy", "--repo"]).arg(&env.bare).success();
    push.assert_live(&v1, "refs/heads/main", "green");
    assert!(env.live_dir().join("api.json").is_file());
}
