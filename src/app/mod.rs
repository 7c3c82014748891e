//! App deploys: an app that systemd runs in each slot behind a proxy. What `init --app`
//! writes: the template unit ([`unit`]), the environment files it reads ([`env`]), and where
//! they live in the target ([`state`]); what a deploy drives: the unit's instances
//! ([`systemd`]) and the GETs of the health gate and the check ([`http`]).

pub mod env;
pub mod http;
pub mod progress;
pub mod proxy;
pub mod state;
pub mod systemd;
pub mod unit;
