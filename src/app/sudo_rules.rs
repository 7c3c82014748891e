//! The sudoers rules `init --app` writes: every command line an app deploy runs as root
//! through [`super::sudo::command`], each with all its arguments, so the git user can neither
//! name another unit nor add an argument. The command lines are built from the same constants
//! the code that runs them uses, so the two cannot drift apart.

use std::path::{Path, PathBuf};

use super::journal;
use super::proxy::nginx;
use super::release::OUTPUT_LINES;
use super::sudo::program_path;
use super::systemd::{self, INVOCATION_ARGS, INVOCATION_FIELD, JOURNAL_ARGS, JOURNAL_LINES};
use super::systemd::{RUN_RESULT_ARGS, STATE_ARGS, UNIT_FIELD};
use super::unit::MARKER;
use crate::config::{App, Proxy, Strategy};
use crate::target_dir::Slot;

/// The arguments a command line of the rules allows.
enum Args {
    /// Exactly these, in this order, and no other.
    Exact(Vec<String>),
    /// All of them joined by spaces must match this regular expression, `^...$` (sudo 1.9.10
    /// and later), for what is not known in advance: an invocation id, a time, a number of
    /// lines.
    Regex(String),
}

/// One command line the git user may run as root.
struct Line {
    program: &'static str,
    args: Args,
}

/// Returns every command line an app deploy runs through [`command`], for both slots: code
/// that runs a new one adds it here, and `init --app` writes it into the rules.
fn lines(app: &App) -> Vec<Line> {
    let systemctl = |args: &[&str], unit: &str| Line {
        program: "systemctl",
        args: Args::Exact(args.iter().copied().chain([unit]).map(str::to_owned).collect()),
    };
    let journal = |lines: &str, filter: String| {
        let fixed = JOURNAL_ARGS.join(" ");
        Line { program: "journalctl", args: Args::Regex(format!("^{fixed} {lines} {filter}$")) }
    };
    let mut lines = Vec::new();
    if app.strategy.is_single() {
        // One instance, whatever the slot: restarted (restart) or reloaded (reload) in place.
        let unit = systemd::single(app);
        let verbs: &[&str] = match app.strategy {
            Strategy::Reload => &["start", "restart", "reload", "stop"],
            _ => &["start", "restart", "stop"],
        };
        for verb in verbs {
            lines.push(systemctl(&[verb], &unit));
        }
        lines.push(systemctl(&STATE_ARGS, &unit));
        lines.push(systemctl(&INVOCATION_ARGS, &unit));
    }
    for slot in Slot::ALL {
        let unit = systemd::instance(app, slot);
        if !app.strategy.is_single() {
            for verb in ["start", "restart", "stop"] {
                lines.push(systemctl(&[verb], &unit));
            }
            lines.push(systemctl(&STATE_ARGS, &unit));
            lines.push(systemctl(&INVOCATION_ARGS, &unit));
        }
        // `[app] release`: its oneshot unit, how its run ended, what it wrote since the start
        // (`--since=@SECONDS.MICROSECONDS`, as `systemd::journal_since` writes it).
        let release = systemd::release_instance(app, slot);
        lines.push(systemctl(&["start"], &release));
        lines.push(systemctl(&RUN_RESULT_ARGS, &release));
        let filter =
            format!("{UNIT_FIELD}{} --since=@[0-9]+\\.[0-9]{{6}}", regex_literal(&release));
        lines.push(journal(OUTPUT_LINES, filter));
    }
    // An invocation id is 128 bits in lowercase hex (`InvocationID` in systemctl show).
    lines.push(journal(JOURNAL_LINES, format!("{INVOCATION_FIELD}[0-9a-f]{{32}}")));
    if app.strategy == Strategy::Socket {
        // `status` tells the shared socket's state.
        lines.push(systemctl(&STATE_ARGS, &systemd::socket(app)));
    }
    // `pushdeploy logs [-f] [-n N]`: the journal of both slots' units, any number of lines.
    let units = regex_literal(&journal::Units::of(app).args().join(" "));
    let fixed = regex_literal(&journal::ARGS.join(" "));
    for follow in [String::new(), format!(" {}", regex_literal(journal::FOLLOW))] {
        let regex = format!("^{fixed} [0-9]+{follow} {units}$");
        lines.push(Line { program: "journalctl", args: Args::Regex(regex) });
    }
    // restart and reload never switch the proxy: it always names the one port.
    if let (Proxy::Nginx { upstream, config }, false) = (&app.proxy, app.strategy.is_single()) {
        lines.extend(nginx_lines(upstream, config));
    }
    lines
}

/// Returns the command lines of an nginx switch (`proxy::nginx`): the link made to name
/// either slot's file, the check of the whole configuration, the reload.
fn nginx_lines(upstream: &Path, config: &Path) -> Vec<Line> {
    let exact = |program, args: Vec<String>| Line { program, args: Args::Exact(args) };
    let path = |path: &Path| path.to_string_lossy().into_owned();
    let mut lines: Vec<Line> = Slot::ALL
        .into_iter()
        .filter_map(|slot| nginx::slot_file(upstream, slot).ok())
        .map(|file| exact(nginx::LN, vec!["-sfn".to_owned(), file, path(upstream)]))
        .collect();
    for args in [&nginx::TEST_ARGS[..], &nginx::RELOAD_ARGS[..]] {
        let args = args.iter().map(|arg| (*arg).to_owned()).chain([path(config)]).collect();
        lines.push(exact(nginx::NGINX, args));
    }
    lines
}

/// Returns an argument of the rules that sudoers could not hold as it is (a path with a
/// space, say), so that init refuses it instead of writing rules that allow something else.
pub fn unsupported_argument(app: &App) -> Option<String> {
    let plain =
        |arg: &String| arg.chars().all(|c| c.is_ascii_alphanumeric() || "/._+@:,=-".contains(c));
    lines(app).into_iter().find_map(|line| match line.args {
        Args::Exact(args) => args.into_iter().find(|arg| !plain(arg)),
        Args::Regex(_) => None,
    })
}

/// Returns `text` as a regular expression that matches only itself.
fn regex_literal(text: &str) -> String {
    let mut regex = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.^$*+?()[]{}|".contains(c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex
}

/// Returns the first line of the drop-in for `app`, which tells init the file is its own.
pub fn first_line(app: &App) -> String {
    format!(
        "# {MARKER} for pushdeploy-{}@.service; init rewrites it when the app changes.",
        app.name
    )
}

/// Returns the sudoers drop-in that lets `git_user` run, as root and without a password,
/// exactly the command lines of an app deploy (`git_user` is a checked user name).
pub fn rules(app: &App, git_user: &str) -> String {
    render(app, git_user, &program_path)
}

/// Renders the drop-in with the programs' paths from `path_of`.
fn render(app: &App, git_user: &str, path_of: &dyn Fn(&str) -> PathBuf) -> String {
    let alias = alias(&app.name);
    let commands: Vec<String> = lines(app)
        .iter()
        .map(|line| {
            let args = match &line.args {
                Args::Exact(args) => args.iter().map(|arg| escape(arg, true)).collect::<Vec<_>>(),
                Args::Regex(regex) => vec![escape(regex, false)],
            };
            format!("    {} {}", path_of(line.program).to_string_lossy(), args.join(" "))
        })
        .collect();
    format!(
        "{first}\n\
         # The git user {git_user} may run these command lines as root, with no password and no\n\
         # other arguments (sudo's environment reset applies); `sudo -l -U {git_user}` lists them.\n\
         Cmnd_Alias {alias} = \\\n{commands}\n\
         Defaults!{alias} !requiretty\n\
         {git_user} ALL=(root) NOPASSWD: {alias}\n",
        first = first_line(app),
        commands = commands.join(", \\\n"),
    )
}

/// Returns the drop-in's `Cmnd_Alias` name for the app `name`. Aliases are global to all of
/// sudoers (a second definition is an error that breaks sudo), so the name is made from the
/// app's one to one: lowercase letters and digits as they are (uppercased), every other
/// character `_` and a code (`_0` for `.`, `_1` for `-`, `_2` for `:`, `__` for `_`, `_X`
/// for the capital `X`), which no two names share.
fn alias(name: &str) -> String {
    let mut alias = String::from("PUSHDEPLOY_");
    for c in name.chars() {
        match c {
            'a'..='z' | '0'..='9' => alias.push(c.to_ascii_uppercase()),
            'A'..='Z' => alias.extend(['_', c]),
            '.' => alias.push_str("_0"),
            '-' => alias.push_str("_1"),
            ':' => alias.push_str("_2"),
            _ => alias.push_str("__"),
        }
    }
    alias
}

/// Escapes an argument for a sudoers command line: `,`, `:` and `=` are syntax there. An
/// exact argument also gets `\` and the wildcards `*`, `?`, `[`, `]` escaped, which must
/// match only themselves; a regular expression keeps its own (sudo hands `\.` to the regex
/// as it is).
fn escape(arg: &str, exact: bool) -> String {
    let mut escaped = String::with_capacity(arg.len());
    for c in arg.chars() {
        let own = matches!(c, '\\' | '*' | '?' | '[' | ']');
        if matches!(c, ',' | ':' | '=') || (exact && own) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::super::sudo::explain;
    use super::{alias, escape, render};
    use crate::config::App;
    use std::path::{Path, PathBuf};

    fn app(name: &str) -> App {
        let toml = format!(
            "target = \"/srv/www\"\n[app]\nname = \"{name}\"\ncommand = \"run\"\n\
             ports = {{ blue = 8001, green = 8002 }}\nuser = \"nobody\"\n"
        );
        crate::config::parse(Path::new("pushdeploy.toml"), &toml)
            .expect("config")
            .app
            .expect("[app]")
    }

    #[test]
    fn the_rules_list_each_command_line_whole_and_the_journal_by_a_regex() {
        let usr_bin = |program: &str| PathBuf::from("/usr/bin").join(program);
        let text = render(&app("www"), "git", &usr_bin);
        let expected = r#"# written by `pushdeploy init --app` for pushdeploy-www@.service; init rewrites it when the app changes.
# The git user git may run these command lines as root, with no password and no
# other arguments (sudo's environment reset applies); `sudo -l -U git` lists them.
Cmnd_Alias PUSHDEPLOY_WWW = \
    /usr/bin/systemctl start pushdeploy-www@blue.service, \
    /usr/bin/systemctl restart pushdeploy-www@blue.service, \
    /usr/bin/systemctl stop pushdeploy-www@blue.service, \
    /usr/bin/systemctl show -p ActiveState\,SubState\,NRestarts pushdeploy-www@blue.service, \
    /usr/bin/systemctl show -p InvocationID --value pushdeploy-www@blue.service, \
    /usr/bin/systemctl start pushdeploy-www-release@blue.service, \
    /usr/bin/systemctl show -p LoadState\,Result\,ExecMainCode\,ExecMainStatus\,ExecMainStartTimestampMonotonic pushdeploy-www-release@blue.service, \
    /usr/bin/journalctl ^--no-pager -o cat -n 200 _SYSTEMD_UNIT\=pushdeploy-www-release@blue\.service --since\=@[0-9]+\.[0-9]{6}$, \
    /usr/bin/systemctl start pushdeploy-www@green.service, \
    /usr/bin/systemctl restart pushdeploy-www@green.service, \
    /usr/bin/systemctl stop pushdeploy-www@green.service, \
    /usr/bin/systemctl show -p ActiveState\,SubState\,NRestarts pushdeploy-www@green.service, \
    /usr/bin/systemctl show -p InvocationID --value pushdeploy-www@green.service, \
    /usr/bin/systemctl start pushdeploy-www-release@green.service, \
    /usr/bin/systemctl show -p LoadState\,Result\,ExecMainCode\,ExecMainStatus\,ExecMainStartTimestampMonotonic pushdeploy-www-release@green.service, \
    /usr/bin/journalctl ^--no-pager -o cat -n 200 _SYSTEMD_UNIT\=pushdeploy-www-release@green\.service --since\=@[0-9]+\.[0-9]{6}$, \
    /usr/bin/journalctl ^--no-pager -o cat -n 20 _SYSTEMD_INVOCATION_ID\=[0-9a-f]{32}$, \
    /usr/bin/journalctl ^--no-pager --all -o json --output-fields\=MESSAGE\,_SYSTEMD_UNIT\,UNIT\,OBJECT_SYSTEMD_UNIT\,COREDUMP_UNIT -n [0-9]+ -u pushdeploy-www@blue\.service -u pushdeploy-www-release@blue\.service -u pushdeploy-www@green\.service -u pushdeploy-www-release@green\.service$, \
    /usr/bin/journalctl ^--no-pager --all -o json --output-fields\=MESSAGE\,_SYSTEMD_UNIT\,UNIT\,OBJECT_SYSTEMD_UNIT\,COREDUMP_UNIT -n [0-9]+ --follow -u pushdeploy-www@blue\.service -u pushdeploy-www-release@blue\.service -u pushdeploy-www@green\.service -u pushdeploy-www-release@green\.service$
Defaults!PUSHDEPLOY_WWW !requiretty
git ALL=(root) NOPASSWD: PUSHDEPLOY_WWW
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn behind_nginx_the_rules_add_the_link_to_either_slot_the_check_and_the_reload() {
        let mut app = app("www");
        let (upstream, config) = ("/etc/nginx/pushdeploy/www.conf", "/etc/nginx/nginx.conf");
        app.proxy =
            crate::config::Proxy::Nginx { upstream: upstream.into(), config: config.into() };
        let text = render(&app, "git", &|p: &str| PathBuf::from("/usr/bin").join(p));
        for line in [
            "    /usr/bin/ln -sfn www-blue.conf /etc/nginx/pushdeploy/www.conf, \\\n",
            "    /usr/bin/ln -sfn www-green.conf /etc/nginx/pushdeploy/www.conf, \\\n",
            "    /usr/sbin/nginx -t -c /etc/nginx/nginx.conf, \\\n",
            "    /usr/sbin/nginx -s reload -c /etc/nginx/nginx.conf\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(super::unsupported_argument(&app), None);
        app.proxy = crate::config::Proxy::Nginx {
            upstream: "/etc/my nginx/www.conf".into(),
            config: config.into(),
        };
        assert!(super::unsupported_argument(&app).is_some_and(|arg| arg.contains("my nginx")));
    }

    #[test]
    fn a_refusal_by_sudo_says_to_run_init_again_and_other_messages_stay() {
        let refused = explain("sudo: a password is required".to_owned());
        assert!(refused.starts_with("sudo: a password is required (the git user's sudo rules"));
        assert!(refused.contains("run `pushdeploy init --app` again as root"));
        let other = "Unit pushdeploy-www@blue.service not found.";
        assert_eq!(explain(other.to_owned()), other);
    }

    #[test]
    fn aliases_of_different_names_differ_and_sudoers_syntax_is_escaped() {
        let names = ["www", "WWW", "my-app", "my_app", "my.app", "my:app", "my_1app", "a_0"];
        let aliases: std::collections::BTreeSet<String> = names.iter().map(|n| alias(n)).collect();
        assert_eq!(aliases.len(), names.len(), "{aliases:?}");
        assert_eq!(alias("example.com"), "PUSHDEPLOY_EXAMPLE_0COM");
        assert!(
            aliases.iter().all(|a| a
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        );
        assert_eq!(escape("a:b,c=d\\e*[x]?", true), "a\\:b\\,c\\=d\\\\e\\*\\[x\\]\\?");
        assert_eq!(escape("^a=[0-9]$", false), "^a\\=[0-9]$");
        let text = render(&app("shop:eu"), "git", &|p: &str| PathBuf::from("/bin").join(p));
        assert!(text.contains("    /bin/systemctl stop pushdeploy-shop\\:eu@blue.service, \\\n"));
    }

    #[test]
    fn reload_allows_the_one_unit_and_its_reload_and_socket_the_socket_state() {
        let bin = |p: &str| PathBuf::from("/usr/bin").join(p);
        let mut app = app("www");
        app.strategy = crate::config::Strategy::Reload;
        let text = render(&app, "git", &bin);
        for verb in ["start", "restart", "reload", "stop"] {
            let line = format!("    /usr/bin/systemctl {verb} pushdeploy-www.service, \\\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("pushdeploy-www@blue.service"), "{text}");
        assert!(text.contains("pushdeploy-www-release@blue.service"), "{text}");
        app.strategy = crate::config::Strategy::Socket;
        let text = render(&app, "git", &bin);
        assert!(text.contains("/usr/bin/systemctl show -p ActiveState\\,SubState\\,NRestarts pushdeploy-www.socket"), "{text}");
        assert!(!text.contains(" reload "), "{text}");
    }
}
