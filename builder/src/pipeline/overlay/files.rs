//! How the overlay stage writes into an image tree: every path resolved inside the root, never
//! through a symlink ([`crate::inroot`]), owned by root and dated SOURCE_DATE_EPOCH unless said
//! otherwise. Shared by the stage, the venv installer and the sdist builder.

use super::error::{io_err, OverlayError};
use crate::inroot::{ImageRoot, Owner};
use std::path::Path;

/// Where kiln stages what it needs in the view while building (the daemon's packages for dpkg,
/// an sdist and its build environment): never part of the layer.
pub const STAGING: &str = "/var/cache/kiln-overlay";

/// The directory holding image path `dest` in `root` (resolved inside the root, missing
/// parents created root-owned 0755 as dpkg does) and the last component, not followed.
fn parent_in(
    root: &Path,
    dest: &str,
    overlay: &str,
) -> Result<(crate::inroot::Dir, std::ffi::OsString), OverlayError> {
    let fail = |e: crate::inroot::InRootError| io_err(overlay, Path::new(dest), e.reason);
    let image = ImageRoot::open(root).map_err(fail)?;
    image
        .parent(dest, true)
        .map_err(fail)?
        .ok_or_else(|| io_err(overlay, Path::new(dest), "its directory is missing"))
}

/// Writes `content` at image path `dest` of `root`, with owner and mode.
pub fn put_file(
    root: &Path,
    dest: &str,
    content: &[u8],
    owner: Owner,
    overlay: &str,
) -> Result<(), OverlayError> {
    let (dir, name) = parent_in(root, dest, overlay)?;
    dir.write(&name, content, owner)
        .map_err(|e| io_err(overlay, Path::new(dest), e.reason))
}

/// Makes the directory at image path `dest` of `root` (empty, or as it is), with owner and mode.
pub fn put_dir(root: &Path, dest: &str, owner: Owner, overlay: &str) -> Result<(), OverlayError> {
    let (dir, name) = parent_in(root, dest, overlay)?;
    let fail = |e: crate::inroot::InRootError| io_err(overlay, Path::new(dest), e.reason);
    match dir.kind(&name).map_err(fail)? {
        Some(crate::inroot::Kind::Dir) => dir.set_owner(&name, owner).map_err(fail),
        Some(_) => Err(io_err(
            overlay,
            Path::new(dest),
            "exists and is not a directory".to_string(),
        )),
        None => dir.make_dir(&name, Some(owner)).map(drop).map_err(fail),
    }
}

/// Makes a symlink at image path `dest` of `root`.
pub fn put_symlink(
    root: &Path,
    dest: &str,
    target: &str,
    overlay: &str,
) -> Result<(), OverlayError> {
    let (dir, name) = parent_in(root, dest, overlay)?;
    dir.symlink(&name, target)
        .map_err(|e| io_err(overlay, Path::new(dest), e.reason))
}

/// Owned by root:root with `mode`, dated SOURCE_DATE_EPOCH: what kiln itself writes.
pub fn root_owned(mode: u32, sde: u64) -> Owner {
    Owner {
        uid: 0,
        gid: 0,
        mode,
        mtime: sde as i64,
    }
}
