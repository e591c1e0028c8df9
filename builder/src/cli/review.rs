//! `kiln diff`: a thin adapter over [`kiln::diff`].

use super::DiffFormat;
use crate::cli::report::{error_exit, failed};
use kiln::exit::Exit;
use std::path::Path;
use std::process::ExitCode;

/// `kiln diff OLD NEW`: exit 0 with the report, 1 when a side is no readable image, 2 when the
/// page cannot be written.
pub fn run_diff(old: &Path, new: &Path, format: DiffFormat, output: Option<&Path>) -> ExitCode {
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
        DiffFormat::Html => {
            let Some(path) = output else {
                return error_exit("--format html needs -o FILE", Exit::CouldNotRun);
            };
            let page = kiln::diff::html::page(&diff);
            if let Err(e) = kiln::output::replace_file(path, page.as_bytes()) {
                return error_exit(format!("{}: {e}", path.display()), Exit::CouldNotRun);
            }
            println!(
                "wrote {}: {}",
                path.display(),
                kiln::diff::render::summary_line(&diff)
            );
        }
    }
    ExitCode::SUCCESS
}
