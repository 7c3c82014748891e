//! Deploys triggered by a hosted repository: `pushdeploy serve` receives its webhook
//! deliveries ([`server`]), checks their signature ([`signature`]), reads the pushed branch
//! ([`delivery`]), fetches it into the bare repository ([`fetch`]), then runs the same deploy a
//! push runs (`pushdeploy webhook-deploy`, a child process per deploy).

pub mod delivery;
pub mod fetch;
pub mod server;
pub mod signature;
