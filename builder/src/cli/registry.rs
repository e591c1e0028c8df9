//! `kiln push` and `kiln pull`: thin adapters over [`kiln::registry`].

use crate::cli::report::{failed, layout_of};
use kiln::registry::{ConnectOptions, Reference, TransferError};
use std::path::Path;
use std::process::ExitCode;

fn reference(text: &str) -> Result<Reference, ExitCode> {
    Reference::parse(text).map_err(|e| failed(&TransferError::from(e)))
}

/// `kiln push`: exit 0, 1 when the layout is wrong, 2 when the registry fails or refuses.
pub fn run_push(out: &Path, text: &str, connect: &ConnectOptions) -> ExitCode {
    let reference = match reference(text) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let layout = layout_of(out);
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => {
            return failed(&TransferError::Layout {
                path: out.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    match kiln::registry::push::push(&layout, &reference, connect) {
        Ok(p) => {
            println!(
                "pushed {} to {reference}: {} blobs uploaded ({} bytes), {} already there; tags {}",
                p.image,
                p.uploaded,
                p.bytes,
                p.skipped,
                p.tags.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln pull`: exit 0, 1 when the registry holds other bytes than it names, 2 when it fails.
pub fn run_pull(text: &str, out: &Path, connect: &ConnectOptions) -> ExitCode {
    let reference = match reference(text) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match kiln::registry::pull::pull(&reference, out, connect) {
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
