//! Why an overlay could not be built, and which of those are kiln's own failures (exit 2).

use std::path::{Path, PathBuf};

/// Why an overlay could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The overlay changed paths it does not own.
    #[error("overlay {overlay}: changes outside its prefixes ({allowed}): {paths}")]
    Outside {
        /// The overlay.
        overlay: String,
        /// What it may change.
        allowed: String,
        /// The offending paths (the first ones).
        paths: String,
    },
    /// A directory symlink inside an environment.
    #[error("overlay {overlay}: {path} is a symlink to a directory ({target}); environments hold no directory symlinks (a later write through it lands outside the env)")]
    DirectorySymlink {
        /// The overlay.
        overlay: String,
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// The smoke command failed: the daemon installs but does not start.
    #[error("overlay {overlay}: smoke command `{command}` failed ({status}): {output}")]
    Smoke {
        /// The overlay.
        overlay: String,
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines it printed.
        output: String,
    },
    /// `kiln check` found errors in the overlay's files.
    #[error("check: {errors} error finding(s) in overlay {overlay}; first: {first}")]
    Check {
        /// The overlay.
        overlay: String,
        /// Unwaived errors.
        errors: usize,
        /// The first one.
        first: String,
    },
    /// A python-venv overlay's interpreter, lock, wheels or byte-compilation failed.
    #[error("overlay {overlay}: {reason}")]
    Python {
        /// The overlay.
        overlay: String,
        /// Why (the lock's file and line, the wheel, the hashes).
        reason: String,
    },
    /// A daemon package is unreadable.
    #[error("overlay {overlay}: {reason}")]
    Deb {
        /// The overlay.
        overlay: String,
        /// Why.
        reason: String,
    },
    /// dpkg refused or failed to install the daemon's packages.
    #[error("overlay {overlay}: dpkg --install failed ({status}): {output}")]
    Install {
        /// The overlay.
        overlay: String,
        /// dpkg's exit status.
        status: String,
        /// The last lines it printed.
        output: String,
    },
    /// Two overlays that would overwrite each other's state.
    #[error("overlays {first} and {second} both install packages: each carries the whole dpkg status, so the later would hide the earlier's; put the packages in one debs overlay")]
    DebsTwice {
        /// The first.
        first: String,
        /// The second.
        second: String,
    },
    /// No envrun binary for the board.
    #[error("no envrun for {arch}: {reason}")]
    Envrun {
        /// Debian architecture.
        arch: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The sandbox could not run.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// Reading or writing failed.
    #[error("overlay {overlay}: {path}: {reason}")]
    Io {
        /// The overlay (or "base").
        overlay: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(super) fn io_err(overlay: &str, path: &Path, e: impl std::fmt::Display) -> OverlayError {
    OverlayError::Io {
        overlay: overlay.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
