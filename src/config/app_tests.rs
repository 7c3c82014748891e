//! Each `[app]` rule, with the line its error names.

use std::path::Path;
use std::time::Duration;

use super::{DEFAULT_HEALTH_PATH, Proxy, ProxyKind, RunningUser, default_unit_name, user_problem};
use crate::config::parse;
use crate::config::tests::parse_err;

/// A valid `[app]` table on lines 2 to 5, after `target` on line 1.
const BASE: &str = "target = \"/srv/www/shop\"\n[app]\ncommand = \"gunicorn -b 127.0.0.1:$PORT app:app\"\nports = { blue = 8001, green = 8002 }\nuser = \"shopapp\"\n";

/// Returns the error for BASE with `extra` appended (its first line is line 6).
fn err_with(extra: &str) -> String {
    parse_err(&format!("{BASE}{extra}"))
}

fn replaced(from: &str, to: &str) -> String {
    parse_err(&BASE.replace(from, to))
}

#[test]
fn defaults_fill_in() {
    let config = parse(Path::new("p"), BASE).unwrap();
    let app = config.app.unwrap();
    assert_eq!(app.name, "shop");
    assert_eq!((app.ports.blue, app.ports.green), (8001, 8002));
    assert_eq!(app.stop_timeout, Duration::from_secs(30));
    assert_eq!(app.health.path, DEFAULT_HEALTH_PATH);
    assert_eq!(app.health.deadline, Duration::from_secs(60));
    assert_eq!(app.proxy, Proxy::None);
    assert!(app.check.is_none() && app.release.is_none() && app.shared.is_empty());
    assert!(parse(Path::new("p"), "target = \"/s\"\n").unwrap().app.is_none());
}

#[test]
fn every_key_is_read() {
    let text = format!(
        "{BASE}release = \"python3 manage.py migrate\"\nstop_timeout = \"5s\"\nshared = [\"data\", \".env.local\"]\nname = \"shop.example\"\n[app.env]\nDJANGO_DEBUG = \"0\"\n[app.health]\npath = \"/up\"\ndeadline = \"10s\"\n[app.proxy]\nkind = \"haproxy\"\n[app.check]\nurl = \"https://shop.example/up\"\n"
    );
    let app = parse(Path::new("p"), &text).unwrap().app.unwrap();
    assert_eq!(app.name, "shop.example");
    assert_eq!(app.release.as_deref(), Some("python3 manage.py migrate"));
    assert_eq!(app.stop_timeout, Duration::from_secs(5));
    assert_eq!(app.shared, [Path::new("data"), Path::new(".env.local")]);
    assert_eq!(app.env["DJANGO_DEBUG"], "0");
    assert_eq!((app.health.path.as_str(), app.health.deadline), ("/up", Duration::from_secs(10)));
    assert_eq!(app.proxy.kind(), ProxyKind::Haproxy);
    assert_eq!(app.check.unwrap().url, "https://shop.example/up");
}

#[test]
fn release_timeout_is_a_duration_with_a_default() {
    let app = |extra: &str| parse(Path::new("p"), &format!("{BASE}{extra}")).unwrap().app.unwrap();
    assert_eq!(app("").release_timeout, Duration::from_secs(600));
    assert_eq!(app("release_timeout = \"90s\"\n").release_timeout, Duration::from_secs(90));
    assert_eq!(
        err_with("release_timeout = \"0s\"\n"),
        "/r/pushdeploy.toml: line 6: `app.release_timeout`: \"0s\" is not a duration such as \"90s\" or \"10m\""
    );
}

#[test]
fn shared_paths_are_plain_and_apart() {
    let app = parse(Path::new("p"), &format!("{BASE}shared = [\"./data\", \"a/b\"]\n")).unwrap();
    assert_eq!(app.app.unwrap().shared, [Path::new("data"), Path::new("a/b")]);
    assert_eq!(
        err_with("shared = [\"data\", \"data/db\"]\n"),
        "/r/pushdeploy.toml: line 6: `app.shared`: data and data/db are inside one another; list only the outer one"
    );
    assert_eq!(
        err_with("shared = [\"data\", \"./data\"]\n"),
        "/r/pushdeploy.toml: line 6: `app.shared`: data is listed twice"
    );
}

#[test]
fn ports_must_be_distinct_and_nonzero() {
    assert_eq!(
        replaced("green = 8002", "green = 8001"),
        "/r/pushdeploy.toml: line 4: `app.ports`: blue and green are both 8001; each slot's instance needs its own port"
    );
    let zero = replaced("blue = 8001", "blue = 0");
    assert!(
        zero.starts_with("/r/pushdeploy.toml: line 4: `app.ports.blue`: 0 is not a port"),
        "{zero}"
    );
    assert!(replaced("green = 8002", "green = 70000").contains("`app.ports.green`: 70000"));
}

#[test]
fn user_may_not_be_root_unless_allowed() {
    let err = replaced("\"shopapp\"", "\"root\"");
    assert!(err.starts_with("/r/pushdeploy.toml: line 5: `app.user`: \"root\" is root;"), "{err}");
    let allowed = format!("{}allow_root = true\n", BASE.replace("\"shopapp\"", "\"root\""));
    assert_eq!(parse(Path::new("p"), &allowed).unwrap().app.unwrap().user, "root");
    assert!(
        replaced("\"shopapp\"", "\"a b\"")
            .contains("line 5: `app.user`: \"a b\" is not a user name")
    );
    assert!(replaced("user = \"shopapp\"\n", "").contains("missing field `user`"));
}

#[test]
fn user_may_not_be_the_git_user() {
    let git = RunningUser { uid: 1001, name: Some("git".into()) };
    let uid_of = |name: &str| match name {
        "git" | "git-alias" => Some(1001),
        "shop" => Some(1002),
        _ => None,
    };
    let problem = user_problem("git", false, &git, uid_of).unwrap();
    assert!(problem.contains("the user pushdeploy runs as (the git user)"), "{problem}");
    // Another name for the same uid is the same user.
    assert!(user_problem("git-alias", false, &git, uid_of).is_some());
    assert_eq!(user_problem("shop", false, &git, uid_of), None);
    assert_eq!(user_problem("not-yet-created", false, &git, uid_of), None);
}

#[test]
fn health_path_starts_with_a_slash() {
    assert_eq!(
        err_with("[app.health]\npath = \"health\"\n"),
        "/r/pushdeploy.toml: line 7: `app.health.path`: \"health\" is not a path such as \"/health\""
    );
    assert!(err_with("[app.health]\npath = \"/a b\"\n").contains("line 7"));
}

#[test]
fn durations_parse_like_build_timeout() {
    let err = err_with("stop_timeout = \"soon\"\n");
    assert_eq!(
        err,
        "/r/pushdeploy.toml: line 6: `app.stop_timeout`: \"soon\" is not a duration such as \"90s\" or \"10m\""
    );
    assert!(err_with("stop_timeout = \"0s\"\n").contains("line 6: `app.stop_timeout`"));
    let deadline = err_with("[app.health]\ndeadline = \"1 fortnight\"\n");
    assert!(deadline.contains("line 7: `app.health.deadline`"), "{deadline}");
}

#[test]
fn shared_paths_stay_inside_the_release() {
    let err = err_with("shared = [\"data\", \"../etc\"]\n");
    assert!(err.starts_with("/r/pushdeploy.toml: line 6: `app.shared`: ../etc must be"), "{err}");
    assert!(err_with("shared = [\"/var/lib/shop\"]\n").contains("line 6: `app.shared`"));
}

#[test]
fn check_url_is_http() {
    assert_eq!(
        err_with("[app.check]\nurl = \"ftp://x/health\"\n"),
        "/r/pushdeploy.toml: line 7: `app.check.url`: \"ftp://x/health\" is not an http(s) URL such as \"http://127.0.0.1/health\""
    );
    assert!(err_with("[app.check]\nurl = \"http:///health\"\n").contains("line 7"));
    let ok = format!("{BASE}[app.check]\nurl = \"http://127.0.0.1:8080/\"\n");
    assert!(parse(Path::new("p"), &ok).unwrap().app.unwrap().check.is_some());
}

#[test]
fn commands_are_one_line() {
    let err = replaced("app:app\"", "app:app\\nrm -rf /\"");
    assert!(err.starts_with("/r/pushdeploy.toml: line 3: `app.command` must be one line"), "{err}");
    assert!(err_with("release = \" \"\n").contains("line 6: `app.release` is empty"));
}

#[test]
fn env_names_are_names_and_not_pushdeploys() {
    let err = err_with("[app.env]\nPORT = \"1\"\n");
    assert!(err.starts_with("/r/pushdeploy.toml: line 7: `app.env`: \"PORT\" is set by"), "{err}");
    assert!(err_with("[app.env]\n\"A-B\" = \"1\"\n").contains("not an environment variable name"));
    assert!(err_with("[app.env]\nA = \"x\\ny\"\n").contains("line 7"));
}

#[test]
fn target_and_name_fit_a_unit() {
    let err = parse_err(&BASE.replace("/srv/www/shop", "/srv/www/my shop"));
    assert!(err.starts_with("/r/pushdeploy.toml: line 1: `target`: an app's target"), "{err}");
    assert!(err_with("name = \"a/b\"\n").contains("line 6: `app.name`"));
    assert_eq!(default_unit_name(Path::new("/srv/www/example.com")), "example.com");
    assert_eq!(default_unit_name(Path::new("/srv/my site+x")), "my-site-x");
    assert_eq!(default_unit_name(Path::new("/")), "app");
}

#[test]
fn each_proxy_gets_its_defaults() {
    let app = |proxy: &str| {
        let text = format!("{BASE}[app.proxy]\n{proxy}\n");
        parse(Path::new("p"), &text).unwrap().app.unwrap().proxy
    };
    assert_eq!(
        app("kind = \"caddy\""),
        Proxy::Caddy {
            snippet: "/srv/www/shop/.pushdeploy/proxy/upstream.caddy".into(),
            caddyfile: "/etc/caddy/Caddyfile".into(),
        }
    );
    assert_eq!(
        app("kind = \"nginx\"\nconfig = \"/etc/nginx/site.conf\""),
        Proxy::Nginx {
            upstream: "/etc/nginx/pushdeploy/shop.conf".into(),
            config: "/etc/nginx/site.conf".into(),
        }
    );
    assert_eq!(
        app("kind = \"haproxy\"\nbackend = \"be_shop\""),
        Proxy::Haproxy {
            socket: "/run/haproxy/admin.sock".into(),
            backend: "be_shop".into(),
            state_file: "/srv/www/shop/.pushdeploy/proxy/haproxy.state".into(),
        }
    );
}

#[test]
fn proxy_keys_belong_to_their_kind_and_paths_are_absolute() {
    assert_eq!(
        err_with("[app.proxy]\nkind = \"caddy\"\nsocket = \"/run/x.sock\"\n"),
        "/r/pushdeploy.toml: line 8: `app.proxy.socket` is for kind = \"haproxy\", not \"caddy\"; remove it"
    );
    assert_eq!(
        err_with("[app.proxy]\nfile = \"/etc/x\"\n"),
        "/r/pushdeploy.toml: line 7: `app.proxy.file` is for kind = \"caddy\" and \"nginx\", not \"none\"; remove it"
    );
    let relative = err_with("[app.proxy]\nkind = \"nginx\"\nfile = \"up.conf\"\n");
    assert!(relative.starts_with("/r/pushdeploy.toml: line 8: `app.proxy.file` (nginx proxy): \"up.conf\" is not an absolute path"), "{relative}");
    let backend = err_with("[app.proxy]\nkind = \"haproxy\"\nbackend = \"a b\"\n");
    assert!(
        backend.contains("line 8: `app.proxy.backend`: \"a b\" is not a backend name"),
        "{backend}"
    );
}

#[test]
fn strategies_take_their_own_keys_and_errors_name_the_line() {
    let single = "target = \"/srv/www/shop\"\n[app]\ncommand = \"./shop\"\nstrategy = \"restart\"\nport = 8001\nuser = \"shopapp\"\n";
    let app = parse(Path::new("p"), single).unwrap().app.unwrap();
    assert_eq!(app.strategy, super::Strategy::Restart);
    assert_eq!((app.ports.blue, app.ports.green), (8001, 8001));
    assert_eq!(
        parse_err(&single.replace("port = 8001", "ports = { blue = 8001, green = 8002 }")),
        "/r/pushdeploy.toml: line 5: `app.port`: the restart strategy runs one instance on one port: set `port = 8001`, not `ports`"
    );
    assert_eq!(
        err_with("strategy = \"rolling\"\n"),
        "/r/pushdeploy.toml: line 6: `app.strategy`: \"rolling\" is not one of \"blue-green\", \"restart\", \"socket\", \"reload\""
    );
    assert_eq!(
        err_with("port = 8003\n"),
        "/r/pushdeploy.toml: line 6: `app.port`: the blue-green strategy runs one instance per slot: set `ports = { blue = 8001, green = 8002 }`, not `port`"
    );
    let socket = |extra: &str| format!("{BASE}strategy = \"socket\"\n{extra}");
    let app = parse(Path::new("p"), &socket("listen = \"0.0.0.0:80\"\n")).unwrap().app.unwrap();
    assert_eq!(app.listen.map(|l| l.to_string()).as_deref(), Some("0.0.0.0:80"));
    assert!(parse_err(&socket("")).starts_with(
        "/r/pushdeploy.toml: line 6: `app.listen`: the socket strategy needs the address"
    ));
    assert_eq!(
        parse_err(&socket("listen = \"8000\"\n")),
        "/r/pushdeploy.toml: line 7: `app.listen`: \"8000\" is not an address such as \"127.0.0.1:8000\" or \"0.0.0.0:80\""
    );
    assert!(
        parse_err(&socket("listen = \"127.0.0.1:8000\"\n[app.proxy]\nkind = \"caddy\"\n"))
            .contains("`app.proxy.kind`: \"caddy\" does not go with the socket strategy")
    );
    assert_eq!(
        err_with("listen = \"127.0.0.1:8000\"\n"),
        "/r/pushdeploy.toml: line 6: `app.listen` is for `strategy = \"socket\"`, not \"blue-green\""
    );
    assert!(
        parse_err(&format!("{single}[app.proxy]\nkind = \"haproxy\"\n"))
            .contains("`app.proxy.kind`: \"haproxy\" does not go with the restart strategy")
    );
    let reload = single.replace("\"restart\"", "\"reload\"");
    assert!(
        parse_err(&reload)
            .starts_with("/r/pushdeploy.toml: line 4: `app.reload`: the reload strategy needs")
    );
    let app = parse(Path::new("p"), &format!("{reload}reload = \"sh reload.sh\"\n")).unwrap();
    assert_eq!(app.app.unwrap().reload.as_deref(), Some("sh reload.sh"));
    assert_eq!(
        parse_err(&format!("{single}reload = \"sh reload.sh\"\n")),
        "/r/pushdeploy.toml: line 7: `app.reload` is for `strategy = \"reload\"`, not \"restart\""
    );
}
