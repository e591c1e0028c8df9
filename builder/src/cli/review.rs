//! `kiln diff`: a thin adapter over [`kiln::diff`].

use super::DiffFormat;
use crate::cli::report::failed;
use std::path::Path;
use std::process::ExitCode;

/// `kiln diff OLD NEW`: exit 0 with the report, 1 when a side is no readable image.
pub fn run_diff(old: &Path, new: &Path, format: DiffFormat) -> ExitCode {
    let sides = kiln::diff::read_side(old).and_then(|o| Ok((o, kiln::diff::read_side(new)?)));
    let (old, new) = match sides {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let diff = match kiln::diff::compare(&old, &new) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    match format {
        DiffFormat::Table => print!("{}", kiln::diff::render::table(&diff)),
        DiffFormat::Json => println!("{}", kiln::diff::render::json(&diff)),
    }
    ExitCode::SUCCESS
}
