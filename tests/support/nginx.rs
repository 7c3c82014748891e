//! An app site behind Debian's nginx, which runs inside the site's systemd with the operator
//! config of site-templates/apps/nginx-standalone.conf including pushdeploy's link. nginx's
//! files (the include directory init writes, the configuration, pid and logs) are in the
//! test's own `nginx/` directory, never in /etc; the error log is printed when a test fails.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::TestEnv;
use super::app::{AppSite, free_ports};
use super::app_load::start_proxy_unit;
use super::load::Connection;
use super::templates::template_dir;

/// Debian's nginx.
pub const NGINX: &str = "/usr/sbin/nginx";

/// An app site behind an nginx that runs inside its systemd.
pub struct NginxSite {
    pub site: AppSite,
    pub front: SocketAddr,
    /// The operator's configuration (nginx-standalone.conf, rendered).
    pub config: PathBuf,
    /// The `[app.proxy] file`: the link nginx includes.
    pub link: PathBuf,
    rundir: PathBuf,
}

impl NginxSite {
    /// Boots the site (`init --proxy nginx`, its files in the test's `nginx/`) and its nginx;
    /// `None` (skipped) without nginx.
    pub fn new(prefix: &str) -> Option<NginxSite> {
        if !Path::new(NGINX).exists() {
            super::skip("no /usr/sbin/nginx (Debian's nginx package)");
            return None;
        }
        let site = AppSite::with_init_by(prefix, |env| {
            let dir = nginx_dir(env);
            let args = ["--proxy", "nginx", "--proxy-file"].map(str::to_owned);
            let paths = [dir.join("pushdeploy/www.conf"), dir.join("nginx.conf")];
            let [file, config] = paths.map(|path| path.display().to_string());
            args.into_iter().chain([file, "--proxy-config".to_owned(), config]).collect()
        })?;
        let dir = site.env.root.join("nginx");
        let link = dir.join("pushdeploy/www.conf");
        assert_eq!(fs::read_link(&link).expect("init's link"), Path::new("www-blue.conf"));
        let rundir = dir.join("run");
        fs::create_dir_all(&rundir).expect("create nginx/run");
        let (port, _) = free_ports();
        let template = fs::read_to_string(template_dir("apps").join("nginx-standalone.conf"))
            .expect("template");
        let config = dir.join("nginx.conf");
        let text = template
            .replace("@PORT@", &port.to_string())
            .replace("@FILE@", &link.display().to_string())
            .replace("@UPSTREAM@", "pushdeploy_www")
            .replace("@RUNDIR@", &rundir.display().to_string());
        fs::write(&config, text).expect("write nginx.conf");
        let front = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config_arg = config.display().to_string();
        let argv = [NGINX, "-c", &config_arg, "-g", "daemon off;"];
        start_proxy_unit(&site, "test-nginx.service", &[], &argv, front);
        Some(NginxSite { site, front, config, link, rundir })
    }

    /// Returns the status nginx answers `/` with, the body (the live commit) and the slot
    /// header.
    pub fn get(&self) -> (u16, String, Option<String>) {
        let response = Connection::new(self.front, Duration::from_secs(5))
            .get("/")
            .unwrap_or_else(|e| panic!("GET / through nginx: {e}\n{}", self.error_log()));
        let slot = response.header("x-pushdeploy-slot").map(str::to_owned);
        (response.status, String::from_utf8_lossy(&response.body).into_owned(), slot)
    }

    /// Returns what the included file links to.
    pub fn linked(&self) -> PathBuf {
        fs::read_link(&self.link).expect("read the link")
    }

    /// Returns nginx's error log (notice level: reloads, workers exiting).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.rundir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxSite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- nginx's error.log ---\n{}", self.error_log());
        }
    }
}

/// Makes the directory that holds nginx's files for a test (root's, 0755, as /etc/nginx).
pub fn nginx_dir(env: &TestEnv) -> PathBuf {
    let dir = env.root.join("nginx");
    fs::create_dir_all(&dir).expect("create nginx/");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod nginx/");
    dir
}
