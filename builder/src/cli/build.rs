//! `kiln lock` and `kiln build`: thin adapters over [`kiln::pipeline::build`].

use crate::cli::report::{error_exit, fail};
use kiln::exit::Exit;
use kiln::image::pack::LayerCompression;
use kiln::pipeline::build::{self, BuildOptions};
use kiln::pipeline::fetch::Cache;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `kiln lock`: exit 0, 1 when the recipe or the archive is wrong, 2 could not run.
pub fn run_lock(dir: &Path) -> ExitCode {
    match build::lock_recipe(dir) {
        Ok(locked) => {
            for (lock, path) in locked {
                println!(
                    "locked {} packages from InRelease sha256:{} into {}",
                    lock.packages.len(),
                    lock.release.inrelease_sha256,
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// What `kiln build` was asked for, as parsed.
pub struct BuildRequest {
    /// Recipe directory.
    pub dir: PathBuf,
    /// `--locked`.
    pub locked: bool,
    /// `--offline`.
    pub offline: bool,
    /// `-o/--output`.
    pub out: PathBuf,
    /// `--compression`.
    pub compression: LayerCompression,
    /// `--cache`.
    pub cache: Option<PathBuf>,
    /// `--timings`.
    pub timings: bool,
    /// `-j/--jobs`.
    pub jobs: Option<u16>,
    /// `--emulate-all`.
    pub emulate_all: bool,
    /// `--cache-registry` (or `$KILN_CACHE_REGISTRY`).
    pub cache_registry: Option<String>,
    /// `--inputs`.
    pub inputs: Option<String>,
    /// `--builder-id`.
    pub builder_id: Option<String>,
    /// `--insecure`, `--ca-file`.
    pub connect: kiln::registry::ConnectOptions,
}

/// `kiln build`: exit 0, 1 when the input is wrong, 2 could not run.
pub fn run_build(request: BuildRequest) -> ExitCode {
    let sde = match source_date_epoch() {
        Ok(v) => v,
        Err(e) => return error_exit(e, Exit::Refused),
    };
    let cache_registry = match request.cache_registry.as_deref().filter(|r| !r.is_empty()) {
        Some(text) => match kiln::registry::Reference::parse_repository(text) {
            Ok(r) => Some((r, request.connect.clone())),
            Err(e) => return error_exit(e, Exit::CouldNotRun),
        },
        None => None,
    };
    let inputs = match request.inputs.as_deref() {
        Some(text) => match kiln::registry::Reference::parse(text) {
            Ok(r) => Some((r, request.connect.clone())),
            Err(e) => return error_exit(e, Exit::CouldNotRun),
        },
        None => None,
    };
    let opts = BuildOptions {
        inputs,
        builder_id: request.builder_id.clone(),
        cache_registry,
        locked: request.locked,
        offline: request.offline,
        out: request.out,
        compression: request.compression,
        cache_dir: request.cache.unwrap_or_else(Cache::default_dir),
        progress: std::io::stderr().is_terminal(),
        source_date_epoch: sde,
        timings: request.timings,
        jobs: request.jobs.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        emulate_all: request.emulate_all,
    };
    match build::build_all(&request.dir, &opts) {
        Ok(reports) => {
            for report in &reports {
                print_report(report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn print_report(report: &build::BuildReport) {
    if let Some(r) = &report.inputs {
        println!(
            "inputs {}: {} files, {} downloaded into the cache{}",
            r.manifest,
            r.files,
            r.downloaded,
            if r.wrote_lock {
                ", kiln.lock written from the archive"
            } else {
                ""
            }
        );
    }
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
    for (name, reused) in &report.overlays {
        println!(
            "  layer {name}: {}",
            if *reused { "reused" } else { "built" }
        );
    }
}

/// SOURCE_DATE_EPOCH from the environment, when set (reproducible-builds.org's convention).
pub fn source_date_epoch() -> Result<Option<u64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        _ => Ok(None),
    }
}
