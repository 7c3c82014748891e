//! App deploys: an app that systemd runs in each slot behind a proxy. What `init --app`
//! writes: the template unit ([`unit`]), the environment files it reads ([`env`]), and where
//! they live in the target ([`state`]); what a deploy drives: the unit's instances
//! ([`systemd`]), the `release` command before an instance starts ([`release`]), the links to
//! `shared/` in each release ([`shared`]) and the GETs of the health gate and the check
//! ([`http`]); how the git user may drive the units as root ([`sudo`], and the sudoers drop-in
//! [`sudoers`] writes); what `pushdeploy logs` reads of them ([`journal`]).

pub mod env;
pub mod http;
pub mod journal;
pub mod progress;
pub mod proxy;
pub mod release;
pub mod shared;
pub mod state;
pub mod sudo;
pub mod sudo_rules;
pub mod sudoers;
pub mod systemd;
pub mod unit;

/// Why a step of an app deploy failed, in one line, and what the pusher can do about it.
#[derive(Debug)]
pub struct Failed {
    pub reason: String,
    pub hint: String,
}

impl Failed {
    fn new(reason: String, hint: impl Into<String>) -> Failed {
        Failed { reason, hint: hint.into() }
    }
}
