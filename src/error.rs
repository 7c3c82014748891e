//! The top-level error type and the process exit codes.

use crate::target::{history, lock};
use crate::{config, git, release, target};

/// The process exit codes, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Deployed, nothing to do, or the refs pushed were not for deploying.
    Success = 0,
    /// A deploy ran and failed; the live site is unchanged.
    DeployFailed = 1,
    /// The configuration, the command line, or the setup on disk is wrong.
    Usage = 2,
    /// `pushdeploy doctor` found something that must be fixed; its report says what.
    ProblemsFound = 3,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error that ends a command before (or outside) a deploy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Target(#[from] target::Error),
    #[error(transparent)]
    Release(#[from] release::Error),
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    /// A refusal or misuse with what to do about it.
    #[error("{message}")]
    User { message: String, hint: String },
}

impl Error {
    /// Builds a user-facing error with a hint of what to do next.
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::User { message: message.into(), hint: hint.into() }
    }

    /// Returns what the user can do about this error, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(err) => Some(err.hint()),
            Error::Git(err) => err.hint(),
            Error::Lock(_) => Some("check that the target directory is writable".into()),
            Error::Target(_) | Error::Release(_) | Error::History(_) => None,
            Error::User { hint, .. } => Some(hint.clone()),
        }
    }

    /// Returns the exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) | Error::User { .. } | Error::Git(_) => ExitCode::Usage,
            Error::Target(_) | Error::Release(_) | Error::Lock(_) | Error::History(_) => {
                ExitCode::DeployFailed
            }
        }
    }
}
