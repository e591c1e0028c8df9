//! The `kiln` command line: the contract CI scripts and people rely on (DESIGN.md).
//! Exit codes: 0 success, 1 the thing checked is wrong, 2 kiln could not run.

use clap::{Parser, Subcommand};
use kiln::build::{self, BuildError, BuildOptions};
use kiln::fetch::Cache;
use kiln::pack::LayerCompression;
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
    },
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
    }
}
