//! Containment (issue 10): nothing a push, a build or a planted file does reaches outside the
//! release. Each test is named after what broke and says how in one comment; each failed on
//! the code before its fix.

mod build;
mod deploys;
mod served;
mod target;
