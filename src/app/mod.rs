//! App deploys: an app that systemd runs in each slot behind a proxy. So far, what
//! `init --app` writes: the template unit ([`unit`]), the environment files it reads
//! ([`env`]), and where they live in the target ([`state`]).

pub mod env;
pub mod state;
pub mod unit;
