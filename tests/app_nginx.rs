//! App deploys behind Debian's nginx (`[app.proxy] kind = "nginx"`), run inside the test's
//! systemd with the operator config of site-templates/apps/nginx-standalone.conf; nginx's
//! files (the include directory, its configuration, pid and logs) live in the test's own
//! directory. `init --app` writes the root-owned slot files and the link, and the operator's
//! snippet (nginx.conf) passes `nginx -t` with them; 20 pushes under load fail no request, and
//! the drain waits for a request held in flight on an old worker; a failed gate, a crash and a failed
//! check through nginx each leave the old instance serving (the check's failure links nginx
//! back: `rolled-back`); a configuration the operator broke fails the switch with `nginx -t`'s
//! line, the link back on the old file.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::app::{AppSite, free_ports};
use crate::support::app_load::{failed_gates_under_load, push_under_load, push_with_request_held};
use crate::support::history;
use crate::support::nginx::{NGINX, NginxSite, nginx_dir};
use crate::support::templates::template_dir;
use crate::support::user::TestUser;
use crate::support::{TestEnv, skip};

/// Returns when systemd began the last stop of `unit` (CLOCK_MONOTONIC, µs), from its journal:
/// a stopped instance is unloaded, and `systemctl show` forgets its timestamps.
#[track_caller]
fn stop_began(site: &AppSite, unit: &str) -> u64 {
    let journal = site.systemd.run(&site.env, "journalctl").args(["-u", unit, "-o", "json"]);
    let journal = journal.success();
    let stopping = journal.stdout.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let message = entry["MESSAGE"].as_str()?;
        message
            .starts_with("Stopping ")
            .then(|| entry["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok())?
    });
    stopping.unwrap_or_else(|| panic!("no `Stopping` entry for {unit}\n{journal}"))
}

#[test]
fn init_with_nginx_writes_root_slot_files_a_link_and_the_operators_include_line() {
    if !Path::new(NGINX).exists() {
        return skip("no /usr/sbin/nginx (Debian's nginx package)");
    }
    let env = TestEnv::new();
    let user = TestUser::create(&env, "pdngx0-");
    let dir = nginx_dir(&env);
    let (link, config) = (dir.join("pushdeploy/shop.conf"), dir.join("nginx.conf"));
    let init = || {
        env.init_cmd(&["--app", "--app-command", "./server", "--ports", "8001,8002"])
            .args(["--name", "shop.example-1", "--proxy", "nginx", "--app-user", &user.name])
            .arg("--unit-dir")
            .arg(env.root.join("units"))
            .arg("--proxy-file")
            .arg(&link)
            .arg("--proxy-config")
            .arg(&config)
    };
    let output = init().success();
    let lines = output.pushdeploy_lines();
    let expected = [
        "pushdeploy: created $TMP/nginx/pushdeploy",
        "pushdeploy: wrote $TMP/nginx/pushdeploy/shop-blue.conf",
        "pushdeploy: wrote $TMP/nginx/pushdeploy/shop-green.conf",
        "pushdeploy: linked $TMP/nginx/pushdeploy/shop.conf to shop-blue.conf",
        "pushdeploy: nginx: add `include $TMP/nginx/pushdeploy/shop.conf;` to the http {} block of $TMP/nginx/nginx.conf, and to the app's location `proxy_pass http://pushdeploy_shop_example_1;` and `add_header X-Pushdeploy-Slot $pushdeploy_shop_example_1_slot always;` (site-templates/apps/nginx.conf has the server block)",
        "pushdeploy: nginx: each deploy runs, as root, `ln -sfn shop-green.conf $TMP/nginx/pushdeploy/shop.conf` (or shop-blue.conf), `nginx -t -c $TMP/nginx/nginx.conf` and `nginx -s reload -c $TMP/nginx/nginx.conf`",
    ];
    for line in expected {
        assert!(lines.iter().any(|l| l == line), "no line {line:?}\n{output}");
    }
    let config_text = fs::read_to_string(env.bare.join("pushdeploy.toml")).expect("config");
    assert!(
        config_text.contains(&format!(
            "kind = \"nginx\"\nfile = \"{}\"\nconfig = \"{}\"\n",
            link.display(),
            config.display()
        )),
        "{config_text}"
    );
    let meta = |path: &Path| fs::symlink_metadata(path).expect("stat");
    let include_dir = dir.join("pushdeploy");
    assert_eq!((meta(&include_dir).uid(), meta(&include_dir).mode() & 0o7777), (0, 0o755));
    for (slot, port) in [("blue", 8001), ("green", 8002)] {
        let file = include_dir.join(format!("shop-{slot}.conf"));
        assert_eq!((meta(&file).uid(), meta(&file).mode() & 0o7777), (0, 0o644));
        let text = fs::read_to_string(&file).expect("slot file");
        assert!(text.contains(&format!("server 127.0.0.1:{port};")), "{text}");
        assert!(text.contains(&format!("default {slot};")), "{text}");
    }
    assert!(meta(&link).file_type().is_symlink());

    // The operator's snippet, rendered with init's names inside an http {} block: nginx
    // accepts it, with the upstream and the map the linked file defines.
    let snippet = fs::read_to_string(template_dir("apps").join("nginx.conf")).expect("template");
    let snippet = snippet
        .replace("@FILE@", &link.display().to_string())
        .replace("@UPSTREAM@", "pushdeploy_shop_example_1")
        .replace("@PORT@", &format!("127.0.0.1:{}", free_ports().0))
        .replace("@SERVER_NAME@", "shop.example");
    let run = dir.join("run");
    let wrapper = format!(
        "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\nhttp {{\n    \
         access_log off;\n    proxy_temp_path {run}/proxy;\n    client_body_temp_path {run}/body;\n\
         {snippet}\n}}\n",
        run = run.display()
    );
    fs::create_dir_all(&run).expect("create run/");
    fs::write(&config, wrapper).expect("write the wrapper config");
    let _ = env.command(NGINX).arg("-t").arg("-c").arg(&config).success();

    // Again: nothing is rewritten, the link is kept.
    let again = init().success();
    let lines = again.pushdeploy_lines();
    for line in [
        "pushdeploy: unchanged $TMP/nginx/pushdeploy/shop-blue.conf",
        "pushdeploy: kept $TMP/nginx/pushdeploy/shop.conf (links to shop-blue.conf)",
    ] {
        assert!(lines.iter().any(|l| l == line), "no line {line:?}\n{again}");
    }
    assert!(!lines.iter().any(|l| l.contains(" wrote ") || l.contains("created")), "{again}");

    // A directory others may write, or a file where the link goes, is refused.
    fs::set_permissions(&include_dir, fs::Permissions::from_mode(0o775)).expect("chmod");
    let open = init().failure();
    assert!(open.stderr.contains("(uid 0, mode 775) may be written by others than root"), "{open}");
    fs::set_permissions(&include_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::remove_file(&link).expect("remove the link");
    fs::write(&link, "upstream x { server 127.0.0.1:1; }\n").expect("a file of the operator's");
    let file = init().failure();
    assert!(file.stderr.contains("shop.conf is a file, not a link to shop-blue.conf"), "{file}");
}

#[test]
fn twenty_pushes_through_nginx_fail_no_request_and_the_drain_waits_for_the_old_workers() {
    let Some(nginx) = NginxSite::new("pdngx1-") else { return };
    let site = &nginx.site;
    let a = site.commit("ok", "a");
    let first = site.push();
    first.assert_live(&a, "refs/heads/main", "blue");
    assert_eq!(nginx.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!(nginx.linked(), Path::new("www-blue.conf"));

    // A request in flight on an old worker (to blue) when nginx reloads for green: the drain
    // waits until that worker answered it (blue's answer) and exited; blue's stop starts only
    // after the answer.
    let b = site.commit("ok", "b");
    let held = push_with_request_held(site, nginx.front, "blue", &b);
    let pushed = &held.pushed;
    pushed.assert_live(&b, "refs/heads/main", "green");
    let (answer, answered_at) = (&held.answer, held.answered_at_us);
    assert_eq!((answer.status, String::from_utf8_lossy(&answer.body)), (200, a.as_str().into()));
    let stop_began = stop_began(site, &site.unit("blue"));
    assert!(
        stop_began > answered_at,
        "blue's stop began {} µs before /hold was answered\n{pushed}",
        answered_at - stop_began
    );
    let lines = pushed.pushdeploy_lines();
    let drained = lines.iter().find_map(|l| l.split("drained in ").nth(1)?.split(' ').next());
    let drained: f64 = drained.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{pushed}"));
    assert!(drained >= 0.3, "blue was stopped with /hold still in flight\n{pushed}");
    assert_eq!(nginx.get(), (200, b.clone(), Some("green".to_owned())));
    assert_eq!(nginx.linked(), Path::new("www-green.conf"));
    eprintln!("{}", lines.join("\n"));

    let load = push_under_load(site, nginx.front, &b, 20);
    let live = site.env.link_target().display().to_string();
    let (status, body, slot) = nginx.get();
    assert_eq!((status, slot.as_deref()), (200, Some(live.as_str())));
    assert_eq!(nginx.linked(), PathBuf::from(format!("www-{live}.conf")));

    // The operator reloads nginx: the link still names the live instance.
    let config = nginx.config.display().to_string();
    let reload = site.systemd.run(&site.env, NGINX).args(["-s", "reload", "-c", &config]).output();
    assert!(reload.status.success(), "nginx -s reload\n{reload}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(nginx.get(), (200, body, slot));
    eprintln!(
        "nginx: {} pushes, {} + {} requests",
        load.pushes, load.requests.requests, load.slow.requests
    );
}

#[test]
fn failures_behind_nginx_leave_the_old_instance_serving_and_a_broken_config_keeps_the_link() {
    let Some(nginx) = NginxSite::new("pdngx2-") else { return };
    let site = &nginx.site;
    let (a, versions, load) = failed_gates_under_load(site, nginx.front);
    assert_eq!(nginx.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!(nginx.linked(), Path::new("www-blue.conf"));

    // Green passes its gate and nginx sends it requests, but /ready answers 503 through nginx:
    // the link goes back to blue's file and nginx reloads it; blue never stopped. Clients may
    // get green's answers meanwhile.
    let not_ready = site.commit("not-ready", "not ready");
    versions.add(1, "/", not_ready.as_bytes());
    let pushed = site.push();
    let line = pushed.final_line();
    assert!(
        line.starts_with("pushdeploy: failed at activate: check through the proxy: "),
        "{pushed}"
    );
    assert!(line.contains("answered HTTP 503; the proxy went back to blue"), "{line}");
    assert_eq!(nginx.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!(nginx.linked(), Path::new("www-blue.conf"));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "inactive"));
    let entries = history::history(&site.env);
    let last = entries.iter().find(|e| e["commit"] == not_ready.as_str()).expect("entry");
    assert_eq!(last["result"], "rolled-back", "{last}");

    // The operator broke the configuration: `nginx -t` refuses it, naming the line, and the
    // link goes back to blue's file; nginx never reloaded, blue still serves.
    let good = fs::read_to_string(&nginx.config).expect("nginx.conf");
    let broken = good.replacen("http {\n", "http {\n    no_such_directive on;\n", 1);
    assert_ne!(broken, good);
    fs::write(&nginx.config, &broken).expect("break nginx.conf");
    let broken_line = broken.lines().position(|l| l.contains("no_such_directive")).unwrap() + 1;
    let _ = site.commit("ok", "b");
    let refused = site.push();
    let line = refused.final_line();
    let expected = format!(
        "pushdeploy: failed at activate: proxy switch: `nginx -t -c $TMP/nginx/nginx.conf` failed: \
         [emerg] unknown directive \"no_such_directive\" in $TMP/nginx/nginx.conf:{broken_line}; \
         $TMP/nginx/pushdeploy/www.conf links to www-blue.conf again"
    );
    assert!(line.starts_with(&expected), "expected {expected:?}\n{refused}");
    assert!(line.contains("; the live site is unchanged"), "{line}");
    assert_eq!(nginx.linked(), Path::new("www-blue.conf"));
    assert_eq!(nginx.get(), (200, a.clone(), Some("blue".to_owned())));
    assert_eq!((site.state("blue").as_str(), site.state("green").as_str()), ("active", "inactive"));

    let report = load.stop();
    eprintln!("during the four failed pushes through nginx: {report}");
    assert_eq!((report.failed(), report.wrong_bodies, report.stale_bodies), (0, 0, 0), "{report}");
    assert!(report.requests > 100, "{report}");
}
