//! The server configs of `site-templates/servers/`, checked by Apache, nginx and Caddy themselves.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::TestEnv;
use crate::support::servers::ServerKind;
use crate::support::templates::template_dir;

/// Returns `template` with every `@NAME@` placeholder replaced from `vars`, asserting none is
/// left (a placeholder added to a template must be added here too).
#[track_caller]
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    // Every piece between two `@`s is a candidate: Caddy's `@matcher` names are lowercase.
    let pieces: Vec<&str> = text.split('@').collect();
    let inner = pieces.get(1..pieces.len().saturating_sub(1)).unwrap_or_default();
    let leftover = inner
        .iter()
        .copied()
        .find(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
    assert!(leftover.is_none(), "placeholder @{}@ is not rendered", leftover.unwrap_or_default());
    text
}

/// Renders `site-templates/servers/NAME` into `dir` and returns the written file.
#[track_caller]
fn render_server_config(name: &str, dir: &Path, vars: &[(&str, &str)]) -> PathBuf {
    let source = template_dir("servers").join(name);
    let template =
        fs::read_to_string(&source).unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let path = dir.join(name);
    fs::write(&path, render(&template, vars))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A directory for one server's rendered configs, pid file and logs.
#[track_caller]
fn rundir(env: &TestEnv, kind: ServerKind) -> PathBuf {
    let dir = env.root.join(format!("run-{}", kind.program()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Returns the block of a server config that starts at the line beginning with `open` and
/// ends where its nesting (`{ }`, or Apache's `<Tag>` and `</Tag>`) closes, each line trimmed,
/// without comments and blank lines.
fn block_lines(text: &str, open: &str) -> Vec<String> {
    let mut block = Vec::new();
    let mut depth = 0_i32;
    for line in text.lines().map(str::trim).skip_while(|line| !line.starts_with(open)) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let opens = line.matches('{').count()
            + usize::from(line.starts_with('<') && !line.starts_with("</"));
        let closes = line.matches('}').count() + usize::from(line.starts_with("</"));
        depth +=
            i32::try_from(opens).expect("few braces") - i32::try_from(closes).expect("few braces");
        block.push(line.to_owned());
        if depth <= 0 {
            break;
        }
    }
    block
}

#[test]
fn server_configs_pass_the_servers_own_checks() {
    let env = TestEnv::new();
    env.init(&[]);
    env.write("index.html", "<h1>served</h1>\n");
    let commit = env.commit_all("site");
    env.push().assert_live(&commit, "refs/heads/main", "blue");
    let target = env.target.to_string_lossy().into_owned();

    if ServerKind::Apache.require() {
        check_apache_configs(&env, &target);
    }

    if ServerKind::Nginx.require() {
        check_nginx_configs(&env, &target);
    }

    if ServerKind::Caddy.require() {
        check_caddy_configs(&env, &target);
    }
}

/// Checks the Apache configs with `apache` itself: the standalone one, and the site one inside
/// the least a main config needs.
fn check_apache_configs(env: &TestEnv, target: &str) {
    let apache = ServerKind::Apache.binary().expect("apache2 is installed");
    let dir = rundir(env, ServerKind::Apache);
    let run = dir.to_string_lossy().into_owned();
    let vars =
        [("TARGET", target), ("PORT", "8080"), ("SERVER_NAME", "localhost"), ("RUNDIR", &*run)];
    let standalone = render_server_config("apache-standalone.conf", &dir, &vars);
    let check = env.command(&apache).arg("-t").arg("-f").arg(&standalone).success();
    assert!(check.stderr.contains("Syntax OK"), "{check}");

    // The vhost as a site would include it, under the least a server config needs.
    let vhost = render_server_config("apache-vhost.conf", &dir, &vars);
    let modules = "/usr/lib/apache2/modules";
    let wrapper = dir.join("apache-with-vhost.conf");
    let main = format!(
        "ServerRoot {run}\nServerName localhost\nListen 127.0.0.1:8080\nPidFile {run}/apache.pid\n\
         DefaultRuntimeDir {run}\nMutex file:{run} default\nErrorLog {run}/error.log\n\
         LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\n\
         LoadModule alias_module {modules}/mod_alias.so\n\
         LoadModule dir_module {modules}/mod_dir.so\n\
         LoadModule mime_module {modules}/mod_mime.so\n\
         TypesConfig /etc/mime.types\nInclude {}\n",
        vhost.display()
    );
    fs::write(&wrapper, main).expect("write the Apache wrapper config");
    let check = env.command(&apache).arg("-t").arg("-f").arg(&wrapper).success();
    assert!(check.stderr.contains("Syntax OK"), "{check}");
}

/// Checks the Nginx configs with `nginx` itself: the standalone one, and the site one inside
/// the least a main config needs.
fn check_nginx_configs(env: &TestEnv, target: &str) {
    let nginx = ServerKind::Nginx.binary().expect("nginx is installed");
    let dir = rundir(env, ServerKind::Nginx);
    let run = dir.to_string_lossy().into_owned();
    let vars =
        [("TARGET", target), ("PORT", "8080"), ("SERVER_NAME", "localhost"), ("RUNDIR", &*run)];
    let error_log = dir.join("error.log");
    let standalone = render_server_config("nginx-standalone.conf", &dir, &vars);
    let check = env
        .command(&nginx)
        .arg("-t")
        .arg("-e")
        .arg(&error_log)
        .arg("-c")
        .arg(&standalone)
        .success();
    assert!(check.stderr.contains("test is successful"), "{check}");

    let server = render_server_config("nginx.conf", &dir, &vars);
    let wrapper = dir.join("nginx-with-server.conf");
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map(|kind| format!("    {kind}_temp_path {run}/{kind};\n"))
        .concat();
    let main = format!(
        "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\nhttp {{\n    \
         include /etc/nginx/mime.types;\n    access_log {run}/access.log;\n{temp_paths}    \
         include {};\n}}\n",
        server.display()
    );
    fs::write(&wrapper, main).expect("write the nginx wrapper config");
    let check =
        env.command(&nginx).arg("-t").arg("-e").arg(&error_log).arg("-c").arg(&wrapper).success();
    assert!(check.stderr.contains("test is successful"), "{check}");
}

/// Checks the Caddy configs with `caddy` itself: the standalone one, and the site one inside
/// the least a main config needs.
fn check_caddy_configs(env: &TestEnv, target: &str) {
    let caddy = ServerKind::Caddy.binary().expect("caddy is installed");
    let dir = rundir(env, ServerKind::Caddy);
    let run = dir.to_string_lossy().into_owned();
    let vars =
        [("TARGET", target), ("PORT", "8080"), ("SERVER_NAME", "localhost"), ("RUNDIR", &*run)];
    for name in ["Caddyfile.standalone", "Caddyfile"] {
        let config = render_server_config(name, &dir, &vars);
        let check = env
            .command(&caddy)
            .args(["validate", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("XDG_CONFIG_HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .success();
        assert!(check.stdout.contains("Valid configuration"), "{name}\n{check}");
        assert!(!check.stderr.contains("not formatted"), "{name}: run `caddy fmt`\n{check}");
    }
}

/// The zero-downtime tests run the standalone configs; they must serve the site exactly as the
/// configs users install do, so the standalone files inline the same site block.
#[test]
fn standalone_server_configs_inline_the_published_site_blocks() {
    let read = |name: &str| {
        let path = template_dir("servers").join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    assert_eq!(
        block_lines(&read("apache-standalone.conf"), "<VirtualHost"),
        block_lines(&read("apache-vhost.conf"), "<VirtualHost"),
        "apache-standalone.conf's <VirtualHost> differs from apache-vhost.conf's"
    );
    // The test server listens on loopback only.
    let nginx_standalone: Vec<String> = block_lines(&read("nginx-standalone.conf"), "server {")
        .into_iter()
        .map(|line| line.replace("listen 127.0.0.1:@PORT@;", "listen @PORT@;"))
        .collect();
    assert_eq!(
        nginx_standalone,
        block_lines(&read("nginx.conf"), "server {"),
        "nginx-standalone.conf's server block differs from nginx.conf's"
    );
    let caddy_standalone: Vec<String> =
        block_lines(&read("Caddyfile.standalone"), "http://127.0.0.1:@PORT@ {")
            .into_iter()
            .skip(1)
            .filter(|line| line != "bind 127.0.0.1")
            .collect();
    let caddy_site: Vec<String> =
        block_lines(&read("Caddyfile"), "@SERVER_NAME@ {").into_iter().skip(1).collect();
    assert_eq!(
        caddy_standalone, caddy_site,
        "Caddyfile.standalone's site differs from Caddyfile's"
    );
}
