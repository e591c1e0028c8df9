//! `kiln check`, `kiln export` and `kiln flash`: thin adapters over [`kiln::check`],
//! [`kiln::export`] and [`kiln::flash`].

use super::signing::require_signed;
use crate::cli::report::{error_exit, failed, layout_for_board, layout_of};
use kiln::check::report::{render, summary, Format};
use kiln::check::{check_image, CheckOptions};
use kiln::exit::Exit;
use kiln::image::ImageTree;
use kiln::pipeline::fetch::Cache;
use kiln::recipe::Board;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kiln export`: exit 0, 1 when the image, its signature or the board is wrong, 2 when a
/// tool or the disk fails.
pub fn run_export(
    out: &std::path::Path,
    format: kiln::export::ExportFormat,
    output: &std::path::Path,
    board: Option<&std::path::Path>,
    keys: &[PathBuf],
    rauc: Option<(&std::path::Path, &std::path::Path)>,
) -> ExitCode {
    let board = match board.map(Board::load).transpose() {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let layout = layout_for_board(out, board.as_ref().map(|b| b.name.as_str()));
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", out.display()), Exit::CouldNotRun),
    };
    if !keys.is_empty() {
        if let Err(code) = require_signed(&layout, keys) {
            return code;
        }
    }
    let signer = match rauc {
        None => None,
        Some((key, cert)) => {
            let key = match kiln::signing::keys::load_signing_key(key) {
                Ok(k) => k,
                Err(e) => return failed(&e),
            };
            let mut certs = match kiln::signing::certs::load_certificates(cert) {
                Ok(c) => c,
                Err(e) => return error_exit(e, Exit::CouldNotRun),
            };
            let cert_der = certs.remove(0);
            Some(kiln::export::rauc::RaucSigner {
                key,
                cert_der,
                chain_der: certs,
            })
        }
    };
    let opts = kiln::export::ExportOptions {
        format,
        output: output.to_path_buf(),
        board: board.as_ref(),
        rauc: signer.as_ref(),
    };
    match kiln::export::export(&layout, &opts) {
        Ok(done) => {
            println!(
                "exported {} to {} ({} bytes, sha256:{}){}",
                done.image,
                output.display(),
                done.size,
                done.sha256,
                done.files[1..]
                    .iter()
                    .map(|f| format!(" and {}", f.display()))
                    .collect::<String>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln flash`: exit 0 written and verified, 1 refused (signature, device, board), 2 failed.
pub fn run_flash(
    image: &std::path::Path,
    device: &std::path::Path,
    keys: &[PathBuf],
    board: &std::path::Path,
    force: bool,
    cache: Option<PathBuf>,
) -> ExitCode {
    let board = match Board::load(board) {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let layout = layout_for_board(image, Some(&board.name));
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", image.display()), Exit::CouldNotRun),
    };
    if let Err(code) = require_signed(&layout, keys) {
        return code;
    }
    let flash_layout = match kiln::export::layout::FlashLayout::from_board(&board) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    let limits = kiln::flash::Limits {
        max_device_size: flash_layout.max_device_size,
        force,
    };
    // Checked before the disk image is made, and again by the exclusive open when writing.
    if let Err(e) = kiln::flash::check_device(device, flash_layout.disk_size(), limits) {
        return error_exit(e, Exit::Refused);
    }
    let cache = cache.unwrap_or_else(Cache::default_dir);
    let work = match std::fs::create_dir_all(&cache)
        .and_then(|_| tempfile::Builder::new().prefix("flash-").tempdir_in(&cache))
    {
        Ok(w) => w,
        Err(e) => return error_exit(format!("{}: {e}", cache.display()), Exit::CouldNotRun),
    };
    let disk = work.path().join("disk.img");
    let opts = kiln::export::ExportOptions {
        format: kiln::export::ExportFormat::Disk,
        output: disk.clone(),
        board: Some(&board),
        rauc: None,
    };
    let exported = match kiln::export::export(&layout, &opts) {
        Ok(x) => x,
        Err(e) => {
            return failed(&e);
        }
    };
    let target = match kiln::flash::check_device(device, exported.size, limits) {
        Ok(t) => t,
        Err(e) => return error_exit(e, Exit::Refused),
    };
    match kiln::flash::flash(&disk, &target, std::io::stderr().is_terminal()) {
        Ok(done) => {
            println!(
                "flashed {} onto {} ({}): {} MiB written of a {} MiB image, read back and verified",
                exported.image,
                device.display(),
                target.name,
                done.written >> 20,
                done.image_size >> 20
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln check`: exit 0 clean, 1 errors, 2 could not run.
pub fn run_check(
    path: &std::path::Path,
    board: &std::path::Path,
    format: Format,
    run_envs_cache: Option<PathBuf>,
) -> ExitCode {
    let board = match Board::load(board) {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    // Held while the image is read (a path that is not a build's output is not held).
    let _hold = match kiln::output::hold(&layout_of(path), kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", path.display()), Exit::CouldNotRun),
    };
    let image = match ImageTree::open(path) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kiln: error: cannot read image {}: {e}", path.display());
            return ExitCode::from(Exit::CouldNotRun.code());
        }
    };
    let mut opts = CheckOptions::new(board.arch);
    opts.waivers = board.waivers.clone();
    // The image runs from a private directory in the cache's tmp/, removed afterwards.
    let scratch = match run_envs_cache {
        Some(cache) => {
            let tmp = cache.join("tmp");
            match std::fs::create_dir_all(&tmp).and_then(|()| {
                tempfile::Builder::new()
                    .prefix("check-run-")
                    .tempdir_in(&tmp)
            }) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("kiln: error: cache {}: {e}", tmp.display());
                    return ExitCode::from(Exit::CouldNotRun.code());
                }
            }
        }
        None => None,
    };
    opts.run_envs = scratch.as_ref().map(|d| d.path().to_path_buf());
    let report = check_image(&image, &opts);
    print!("{}", render(&report, format));
    if format != Format::Table {
        eprintln!("kiln check: {}", summary(&report));
    }
    if report.errors() > 0 {
        ExitCode::from(Exit::Refused.code())
    } else {
        ExitCode::SUCCESS
    }
}
