//! The `kiln` command line: the contract CI scripts and people rely on (DESIGN.md).
//! Exit codes: 0 success, 1 the thing checked is wrong, 2 kiln could not run.

use clap::{Parser, Subcommand};
use kiln::build::{self, BuildError, BuildOptions};
use kiln::check::image::ImageTree;
use kiln::check::report::{render, summary, Format};
use kiln::check::{check_image, CheckOptions};
use kiln::fetch::Cache;
use kiln::pack::LayerCompression;
use kiln::spec::Board;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Fires signed, reproducible Debian firmware images for ARM robots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve the recipe against the suite's signed index and write kiln.lock.
    Lock {
        /// Recipe directory (holding kiln.toml).
        #[arg(short = 'C', default_value = ".")]
        dir: PathBuf,
    },
    /// Lock (unless --locked), fetch, compose and pack the image into OUT/oci.
    Build {
        /// Recipe directory (holding kiln.toml).
        #[arg(short = 'C', default_value = ".")]
        dir: PathBuf,
        /// Fail unless kiln.lock exists and matches the recipe.
        #[arg(long)]
        locked: bool,
        /// Use no network: build from kiln.lock and the cache.
        #[arg(long)]
        offline: bool,
        /// Output directory.
        #[arg(short = 'o', default_value = "out")]
        out: PathBuf,
        /// Layer compression.
        #[arg(long, value_enum, default_value = "zstd")]
        compression: LayerCompression,
        /// Cache directory (default: $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print each stage's wall time to stderr.
        #[arg(long)]
        timings: bool,
        /// Maintainer scripts run at once (default: the number of CPUs; the image is the same
        /// for every value).
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Check every ELF file and script of an image against a board (exit 1 on errors).
    Check {
        /// A directory, a tar (optionally compressed) or an OCI image layout.
        path: PathBuf,
        /// The board file the image is for.
        #[arg(long)]
        board: PathBuf,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// `kiln check`: exit 0 clean, 1 errors, 2 could not run.
fn run_check(path: &std::path::Path, board: &std::path::Path, format: Format) -> ExitCode {
    let board = match Board::load(board) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kiln: error: {e}");
            return ExitCode::from(2);
        }
    };
    let image = match ImageTree::open(path) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kiln: error: cannot read image {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut opts = CheckOptions::new(board.arch);
    opts.waivers = board.waivers.clone();
    let report = check_image(&image, &opts);
    print!("{}", render(&report, format));
    if format != Format::Table {
        eprintln!("kiln check: {}", summary(&report));
    }
    if report.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn source_date_epoch() -> Result<Option<u64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        _ => Ok(None),
    }
}

fn fail(e: &BuildError) -> ExitCode {
    if let BuildError::Check { report, .. } = e {
        eprint!("{report}");
    }
    eprintln!("kiln: error: {e}");
    ExitCode::from(e.exit_code() as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lock { dir } => match build::lock_recipe(&dir) {
            Ok((lock, path)) => {
                println!(
                    "locked {} packages from InRelease sha256:{} into {}",
                    lock.packages.len(),
                    lock.release.inrelease_sha256,
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Build {
            dir,
            locked,
            offline,
            out,
            compression,
            cache,
            timings,
            jobs,
        } => {
            let sde = match source_date_epoch() {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("kiln: error: {e}");
                    return ExitCode::from(1);
                }
            };
            let opts = BuildOptions {
                locked,
                offline,
                out,
                compression,
                cache_dir: cache.unwrap_or_else(Cache::default_dir),
                progress: std::io::stderr().is_terminal(),
                source_date_epoch: sde,
                timings,
                jobs: jobs.map(usize::from).unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                }),
            };
            match build::build(&dir, &opts) {
                Ok(report) => {
                    println!(
                        "built {}:{} ({} packages{}) manifest {}",
                        report.layout.display(),
                        report.image.tag,
                        report.packages,
                        if report.base_reused {
                            ", base layer reused from the layer cache"
                        } else {
                            ""
                        },
                        report.image.manifest_digest
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Check {
            path,
            board,
            format,
        } => run_check(&path, &board, format),
    }
}
