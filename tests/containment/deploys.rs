//! Containment: deploys.
