//! `kiln completions` and `kiln manpages`: generated from the same clap definitions the
//! parser uses, so they cannot disagree with it.

use super::Cli;
use crate::cli::report::error_exit;
use kiln::exit::Exit;
use std::process::ExitCode;

/// `kiln completions`: the shell's completion script on stdout.
pub fn run_completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "kiln", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `kiln manpages`: exit 0, or 2 when a page cannot be written.
pub fn run_manpages(dir: &std::path::Path) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)) {
        Ok(()) => {
            println!("man pages written to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => error_exit(format!("{}: {e}", dir.display()), Exit::CouldNotRun),
    }
}
