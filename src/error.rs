//! The error a command ends with (its kind, what happened, why, what to do about it) and the
//! process exit codes, which only the kind decides.

use std::fmt;

use crate::report;
use crate::target_dir::{history, lock};
use crate::{config, git, release, target_dir};

/// The process exit codes, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Deployed, nothing to do, or the refs pushed were not for deploying.
    Success = 0,
    /// A deploy ran and failed, or reading or writing the target failed; the live site is
    /// unchanged.
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

/// What kind of thing went wrong; the kind alone decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A refusal or a misuse: what was asked cannot be done as asked.
    User,
    /// `pushdeploy.toml` cannot be read or says something wrong.
    Config,
    /// The repository cannot be opened or read, or a name does not resolve in it.
    Git,
    /// Reading or writing the target, a release, the lock or the history failed.
    Io,
    /// pushdeploy itself went wrong, not anything the user did.
    Internal,
}

impl Kind {
    /// Returns the exit code of an error of this kind: the one place that mapping is made.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Kind::User | Kind::Config | Kind::Git => ExitCode::Usage,
            Kind::Io | Kind::Internal => ExitCode::DeployFailed,
        }
    }
}

/// An error that ends a command before (or outside) a deploy.
///
/// It prints as one `error:` line (the message, then each cause after a colon, so a hook's
/// pusher gets one line) and one `hint:` line per hint.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    /// What happened, to what.
    message: String,
    /// Why it happened, outermost first.
    causes: Vec<String>,
    /// What the user can do about it.
    hints: Vec<String>,
}

impl Error {
    /// Builds an error of `kind` with no cause and no hint yet.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), causes: Vec::new(), hints: Vec::new() }
    }

    /// Builds a user-facing error with a hint of what to do next.
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::new(Kind::User, message).hint(hint)
    }

    /// Returns the error with one more hint, printed after those it has.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Returns the error with one more cause, printed after those it has.
    #[must_use]
    pub fn cause(mut self, cause: impl fmt::Display) -> Self {
        self.causes.push(cause.to_string());
        self
    }

    /// Builds an error of `kind` from a module's error, whose message already names its cause.
    fn from_module(kind: Kind, err: &impl fmt::Display, hint: Option<String>) -> Self {
        let mut error = Error::new(kind, err.to_string());
        error.hints.extend(hint);
        error
    }

    /// Returns the exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        self.kind.exit_code()
    }

    /// Prints the error to stderr: its `error:` line, then a `hint:` line for each hint.
    pub fn print(&self) {
        report::line(&format!("error: {self}"));
        for hint in &self.hints {
            report::line(&format!("hint: {hint}"));
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<config::Error> for Error {
    fn from(err: config::Error) -> Self {
        Error::from_module(Kind::Config, &err, Some(err.hint()))
    }
}

impl From<git::Error> for Error {
    fn from(err: git::Error) -> Self {
        Error::from_module(Kind::Git, &err, err.hint())
    }
}

impl From<target_dir::Error> for Error {
    fn from(err: target_dir::Error) -> Self {
        let hint = match &err {
            target_dir::Error::StateDir { hint, .. } => Some(hint.clone()),
            _ => None,
        };
        Error::from_module(Kind::Io, &err, hint)
    }
}

impl From<release::Error> for Error {
    fn from(err: release::Error) -> Self {
        let kind = if err.is_internal() { Kind::Internal } else { Kind::Io };
        Error::from_module(kind, &err, None)
    }
}

impl From<lock::Error> for Error {
    fn from(err: lock::Error) -> Self {
        let hint = "check that the target directory is writable".to_owned();
        Error::from_module(Kind::Io, &err, Some(hint))
    }
}

impl From<history::Error> for Error {
    fn from(err: history::Error) -> Self {
        Error::from_module(Kind::Io, &err, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_the_message_on_its_line_and_hints_stay_in_order() {
        let err = Error::user("cannot set up the state directory", "move it away")
            .cause("x: Permission denied")
            .hint("or run as its owner");
        assert_eq!(err.to_string(), "cannot set up the state directory: x: Permission denied");
        assert_eq!(err.hints, ["move it away", "or run as its owner"]);
        assert_eq!(err.exit_code(), ExitCode::Usage);
    }

    #[test]
    fn kinds_map_to_exit_codes() {
        use ExitCode::{DeployFailed, Usage};
        let codes =
            [Kind::User, Kind::Config, Kind::Git, Kind::Io, Kind::Internal].map(Kind::exit_code);
        assert_eq!(codes, [Usage, Usage, Usage, DeployFailed, DeployFailed]);
    }

    #[test]
    fn a_panicked_writer_is_internal_and_names_no_path() {
        let err = Error::from(release::Error::WriterPanicked);
        assert_eq!(err.kind, Kind::Internal);
        assert_eq!(err.to_string(), "a writer thread panicked while writing the release");
        assert!(err.hints.is_empty());
    }

    #[test]
    fn module_errors_keep_their_hints() {
        let state_dir = target_dir::Error::StateDir {
            path: "/srv/www/.pushdeploy".into(),
            problem: "is a symlink".into(),
            hint: "move it away".into(),
        };
        let err = Error::from(state_dir);
        assert_eq!(
            (err.kind, err.hints.as_slice()),
            (Kind::Io, ["move it away".to_owned()].as_slice())
        );
        assert_eq!(err.to_string(), "/srv/www/.pushdeploy is a symlink");
    }
}
