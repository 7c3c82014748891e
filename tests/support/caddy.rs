//! An app site behind Debian's Caddy, which runs inside the site's systemd with the operator
//! config of site-templates/apps/Caddyfile.standalone importing pushdeploy's snippet.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::app::{AppSite, free_ports};
use super::app_load::start_proxy_unit;
use super::load::Connection;
use super::templates::template_dir;

/// An app site behind a Caddy that runs inside its systemd.
pub struct CaddySite {
    pub site: AppSite,
    pub front: SocketAddr,
    pub caddyfile: PathBuf,
}

impl CaddySite {
    /// Boots the site (`init --proxy caddy`) and its Caddy; `None` (skipped) without Caddy.
    pub fn new(prefix: &str) -> Option<CaddySite> {
        CaddySite::with_init(prefix, &[])
    }

    /// [`CaddySite::new`] with more options for `init` (`--strategy restart`).
    pub fn with_init(prefix: &str, init_args: &[&str]) -> Option<CaddySite> {
        if !Path::new("/usr/bin/caddy").exists() {
            crate::support::skip("no /usr/bin/caddy (Debian's caddy package)");
            return None;
        }
        let args: Vec<&str> =
            ["--proxy", "caddy"].into_iter().chain(init_args.iter().copied()).collect();
        let site = AppSite::with_init(prefix, &args)?;
        let rundir = site.env.root.join("caddy-run");
        fs::create_dir_all(&rundir).expect("create caddy-run");
        let (port, admin) = free_ports();
        let snippet = site.env.target.join(".pushdeploy/proxy/upstream.caddy");
        assert!(snippet.exists(), "init --proxy caddy wrote no snippet");
        let template = fs::read_to_string(template_dir("apps").join("Caddyfile.standalone"))
            .expect("template");
        let caddyfile = rundir.join("Caddyfile");
        let text = template
            .replace("@PORT@", &port.to_string())
            .replace("@ADMIN_PORT@", &admin.to_string())
            .replace("@SNIPPET@", &snippet.display().to_string())
            .replace("@RUNDIR@", &rundir.display().to_string());
        fs::write(&caddyfile, text).expect("write Caddyfile");
        site.edit_config(|config| {
            config.replace(
                "kind = \"caddy\"\n",
                &format!("kind = \"caddy\"\nconfig = \"{}\"\n", caddyfile.display()),
            )
        });
        let front = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let dirs = rundir.display().to_string();
        let setenv =
            [("HOME", dirs.as_str()), ("XDG_CONFIG_HOME", &dirs), ("XDG_DATA_HOME", &dirs)];
        let argv = ["/usr/bin/caddy", "run", "--adapter", "caddyfile", "--config"];
        let caddyfile_arg = caddyfile.display().to_string();
        let argv: Vec<&str> = argv.into_iter().chain([caddyfile_arg.as_str()]).collect();
        start_proxy_unit(&site, "test-caddy.service", &setenv, &argv, front);
        Some(CaddySite { site, front, caddyfile })
    }

    /// Returns the body Caddy answers `/` with (the live commit) and its slot header.
    pub fn get(&self) -> (u16, String, Option<String>) {
        let response = Connection::new(self.front, Duration::from_secs(5))
            .get("/")
            .unwrap_or_else(|e| panic!("GET / through Caddy: {e}"));
        let slot = response.header("x-pushdeploy-slot").map(str::to_owned);
        (response.status, String::from_utf8_lossy(&response.body).into_owned(), slot)
    }
}
