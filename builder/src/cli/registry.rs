//! `kiln push` and `kiln pull`: thin adapters over [`kiln::registry`].

use crate::cli::report::{failed, layout_of};
use kiln::image::layout::board_outputs;
use kiln::registry::{ConnectOptions, Reference, TransferError};
use std::path::Path;
use std::process::ExitCode;

fn reference(text: &str) -> Result<Reference, ExitCode> {
    Reference::parse(text).map_err(|e| failed(&TransferError::from(e)))
}

/// `kiln push`: exit 0, 1 when the layout is wrong, 2 when the registry fails or refuses.
pub fn run_push(
    outs: &[std::path::PathBuf],
    text: &str,
    mount_from: Option<&str>,
    connect: &ConnectOptions,
) -> ExitCode {
    let reference = match reference(text) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mount_from = match mount_from.filter(|m| !m.is_empty()) {
        Some(m) => match Reference::parse_repository(m) {
            Ok(r) => Some(r),
            Err(e) => return failed(&TransferError::from(e)),
        },
        None => None,
    };
    // The output of a build for several boards holds one output per board.
    let outs: Vec<std::path::PathBuf> = outs.iter().flat_map(|o| board_outputs(o)).collect();
    let layouts: Vec<std::path::PathBuf> = outs.iter().map(|o| layout_of(o)).collect();
    let mut holds = Vec::new();
    for (out, layout) in outs.iter().zip(&layouts) {
        match kiln::output::hold(layout, kiln::output::Access::Read) {
            Ok(h) => holds.push(h),
            Err(e) => {
                return failed(&TransferError::Layout {
                    path: out.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
    }
    let paths: Vec<&Path> = layouts.iter().map(std::path::PathBuf::as_path).collect();
    match kiln::registry::push::push_boards(&paths, &reference, connect, mount_from.as_ref()) {
        Ok(p) => {
            println!(
                "pushed {} to {reference}: {} blobs uploaded ({} bytes), {} already there ({} mounted); tags {}{}",
                p.image,
                p.uploaded,
                p.bytes,
                p.skipped,
                p.mounted,
                p.tags.join(", "),
                if p.resumed + p.restarted > 0 {
                    format!(
                        "; after a dropped connection {} upload(s) resumed, {} started again",
                        p.resumed, p.restarted
                    )
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln pull`: exit 0, 1 when the registry holds other bytes than it names, 2 when it fails.
pub fn run_pull(text: &str, out: &Path, board: Option<&str>, connect: &ConnectOptions) -> ExitCode {
    let reference = match reference(text) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match kiln::registry::pull::pull(&reference, out, connect, board) {
        Ok(p) => {
            println!(
                "pulled {} from {reference} into {}: {} bytes of blobs, {}, {}",
                p.image,
                out.join("oci").display(),
                p.bytes,
                if p.signed { "signed" } else { "no signature" },
                if p.sbom { "with its SBOM" } else { "no SBOM" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln vendor`: exit 0, 1 when the recipe, lock or cache lacks an input, 2 when the registry
/// fails.
pub fn run_vendor(
    text: &str,
    dir: &Path,
    cache: Option<std::path::PathBuf>,
    connect: &ConnectOptions,
) -> ExitCode {
    let reference = match reference(text) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(tag) = reference.tag.clone() else {
        return failed(&TransferError::Layout {
            path: dir.to_path_buf(),
            reason: format!("vendor needs a tag to write ({reference} has none)"),
        });
    };
    let cache_dir = cache.unwrap_or_else(kiln::pipeline::fetch::Cache::default_dir);
    let run = || -> Result<_, kiln::pipeline::inputs::InputsError> {
        let cache = kiln::pipeline::fetch::Cache::open(&cache_dir)?;
        let registry = kiln::registry::Registry::connect(&reference, connect)?;
        kiln::pipeline::inputs::vendor(dir, &cache, &registry, &tag)
    };
    match run() {
        Ok(v) => {
            for r in &v.not_held {
                eprintln!("kiln: note: {r}: no file in the cache (a marker excludes it for this board, or the wheelhouse has it)");
            }
            println!(
                "archived {} inputs ({} bytes, {} uploaded) at {reference}: {}",
                v.files, v.bytes, v.uploaded, v.manifest
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}
