//! How a command reports failure: one line on stderr (credentials in URLs redacted), and the
//! exit code from [`kiln::exit`]'s table.

use kiln::exit::{Classified, Exit};
use kiln::pipeline::build::BuildError;
use std::process::ExitCode;

/// Reports an error on one line and gives the exit code for it.
pub fn error_exit(e: impl std::fmt::Display, exit: Exit) -> ExitCode {
    eprintln!(
        "kiln: error: {}",
        kiln::transport::redact_userinfo(&e.to_string())
    );
    ExitCode::from(exit.code())
}

/// Reports a typed error on one line with the exit code its type says.
pub fn failed(e: &(impl std::fmt::Display + Classified)) -> ExitCode {
    error_exit(e, e.exit())
}

pub use kiln::image::layout::{layout_for_board, layout_of};

/// Reports a failed build: the check report first when the check gate stopped it.
pub fn fail(e: &BuildError) -> ExitCode {
    if let BuildError::Check { report, .. } = e {
        eprint!("{report}");
    }
    eprintln!(
        "kiln: error: {}",
        kiln::transport::redact_userinfo(&e.to_string())
    );
    ExitCode::from(e.exit().code())
}
