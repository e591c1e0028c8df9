//! Writes an image tree out as a real directory: what qemu runs an env in (`kiln check
//! --run-envs`), what an overlay is built on (the overlayfs lower), what the file-system tools
//! of `kiln export` read.
//!
//! It never follows a symlink: the tree is created from nothing through the in-root file API,
//! parents before children, and an entry whose parent is not a directory in the image (a layer
//! that put a file "under" a symlink) is refused instead of being written through the link.

use super::{image_err, parent, DeviceKind, ImageError, ImageTree, Kind, Node};
use crate::inroot::{Dir, ImageRoot, InRootError, Owner};
use rustix::fs::FileType;
use std::ffi::OsString;
use std::path::Path;

fn owner_of(node: &Node, sde: u64) -> Owner {
    Owner {
        uid: node.uid as u32,
        gid: node.gid as u32,
        mode: node.mode,
        mtime: node.mtime.min(sde) as i64,
    }
}

fn bad(path: &str, reason: &str) -> ImageError {
    image_err(path, reason)
}

/// Checks that `path`'s parent is a directory of the image (never a symlink).
pub fn parent_is_dir(tree: &ImageTree, path: &str) -> Result<(), ImageError> {
    let p = parent(path);
    match tree.get(p).map(|n| &n.kind) {
        Some(Kind::Dir) => Ok(()),
        Some(_) => Err(bad(
            path,
            &format!(
                "its parent {p} is not a directory in the image (refusing to write through it)"
            ),
        )),
        None => Err(bad(path, &format!("its parent {p} is missing"))),
    }
}

/// Creates the image tree under `dest` (an empty directory) with the image's owners, modes and
/// clamped mtimes; hard links stay hard links.
pub fn materialise(tree: &ImageTree, dest: &Path, sde: u64) -> Result<(), ImageError> {
    let fail = |path: &str, e: InRootError| bad(path, &e.reason);
    let image = ImageRoot::open(dest).map_err(|e| fail("/", e))?;
    // The parent of an image path (checked to be a directory of the image) and the last name.
    let slot = |path: &str| -> Result<(Dir, OsString), ImageError> {
        parent_is_dir(tree, path)?;
        image
            .parent(path, false)
            .map_err(|e| fail(path, e))?
            .ok_or_else(|| bad(path, "its parent directory was not created"))
    };
    let mut dirs: Vec<(&str, Owner)> = Vec::new();
    let mut aliases: Vec<(&str, &str, &Node)> = Vec::new();
    for (path, node) in tree.iter() {
        if path == "/" {
            dirs.push((path, owner_of(node, sde)));
            continue;
        }
        let (dir, name) = slot(path)?;
        match &node.kind {
            Kind::Dir => {
                dir.make_dir(&name, None).map_err(|e| fail(path, e))?;
                dirs.push((path, owner_of(node, sde)));
                continue;
            }
            Kind::File => {
                if let Some(leader) = tree.hard_link_leader(path) {
                    aliases.push((path, leader, node));
                    continue;
                }
                let (mut data, _) = tree.reader(path).map_err(|e| image_err(path, e))?;
                dir.write_from(&name, &mut data, owner_of(node, sde))
                    .map_err(|e| fail(path, e))?;
                continue;
            }
            Kind::Symlink(target) => {
                dir.symlink(&name, target).map_err(|e| fail(path, e))?;
            }
            Kind::Special => {
                let Some(dev) = node.device else {
                    return Err(bad(path, "sockets cannot be exported"));
                };
                let kind = match dev.kind {
                    DeviceKind::Char => FileType::CharacterDevice,
                    DeviceKind::Block => FileType::BlockDevice,
                    DeviceKind::Fifo => FileType::Fifo,
                };
                dir.mknod(&name, kind, dev.major, dev.minor)
                    .map_err(|e| fail(path, e))?;
            }
        }
        dir.set_owner(&name, owner_of(node, sde))
            .map_err(|e| fail(path, e))?;
    }
    for (path, leader, node) in aliases {
        let (dir, name) = slot(path)?;
        let (from, from_name) = slot(leader)?;
        dir.hardlink(&name, &from, &from_name)
            .map_err(|e| fail(path, e))?;
        dir.set_owner(&name, owner_of(node, sde))
            .map_err(|e| fail(path, e))?;
    }
    // Directories last, deepest first: creating children changes a directory's mtime.
    for (path, owner) in dirs.into_iter().rev() {
        if path == "/" {
            let root = image.root_dir().map_err(|e| fail(path, e))?;
            let fd = root.open_self().map_err(|e| fail(path, e))?;
            root.set_owner_fd(".", &fd, owner)
                .map_err(|e| fail(path, e))?;
        } else {
            let (dir, name) = slot(path)?;
            dir.set_owner(&name, owner).map_err(|e| fail(path, e))?;
        }
    }
    Ok(())
}
