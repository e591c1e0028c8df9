//! What an overlay's build changed, read from the overlayfs upper directory and compared with
//! the lower (the base), and the layer directory made of exactly those changes.
//!
//! overlayfs records a deletion as a 0/0 character device and a directory replaced wholesale
//! with the `trusted.overlay.opaque` attribute (kernel Documentation/filesystems/overlayfs.rst);
//! an OCI layer says the same with `.wh.NAME` and `.wh..wh..opq` entries (OCI image-spec,
//! layer.md). Files copied up without being changed (opened for writing, chmod to the same
//! mode) are not changes and are left out.

use crate::inroot::{ImageRoot, InRootError, Kind, Meta, Owner};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One changed path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or modified (file, symlink, directory whose metadata changed, special file).
    Written,
    /// Removed.
    Deleted,
    /// A directory whose previous contents are all hidden.
    Opaque,
}

/// The changes of an upper directory, by image path (`/etc/x`), and the directories that only
/// hold changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changed paths.
    pub changed: BTreeMap<String, Change>,
    /// Directories present in upper only as parents of changes.
    pub parents: Vec<String>,
}

fn same_meta(a: &Meta, b: &fs::Metadata) -> bool {
    a.mode == b.mode() && a.uid == b.uid() && a.gid == b.gid()
}

/// Whether the upper file `a` has the contents of the lower's regular file at `image` (read in
/// the lower root, never following a link out of it), compared in chunks.
fn same_content(a: &Path, lower: &ImageRoot, image: &str) -> io::Result<bool> {
    use std::io::Read;
    let inroot = |e: InRootError| io::Error::other(e.to_string());
    let Some((dir, name)) = lower.parent(image, false).map_err(inroot)? else {
        return Ok(false);
    };
    let Some((mut b, b_len)) = dir.open_read(&name).map_err(inroot)? else {
        return Ok(false);
    };
    let mut a = fs::File::open(a)?;
    if a.metadata()?.len() != b_len {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

fn is_opaque(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Reads the changes of `upper` against `lower`.
pub fn changes(upper: &Path, lower: &Path) -> io::Result<Changes> {
    let mut out = Changes::default();
    let lower = ImageRoot::open(lower).map_err(|e| io::Error::other(e.to_string()))?;
    walk(upper, &lower, "", &mut out)?;
    Ok(out)
}

fn walk(upper: &Path, lower: &ImageRoot, rel: &str, out: &mut Changes) -> io::Result<bool> {
    let dir = if rel.is_empty() {
        upper.to_path_buf()
    } else {
        upper.join(&rel[1..])
    };
    let mut names: Vec<_> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut any = false;
    for name in names {
        let image = format!("{rel}/{}", name.to_string_lossy());
        let up = dir.join(&name);
        let meta = fs::symlink_metadata(&up)?;
        let lower_meta = lower
            .metadata(&image)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let ft = meta.file_type();
        let change = if ft.is_char_device() && meta.rdev() == 0 {
            // A whiteout: a change only when the lower had the path.
            lower_meta.is_some().then_some(Change::Deleted)
        } else if ft.is_dir() {
            if is_opaque(&up) {
                walk(upper, lower, &image, out)?;
                Some(Change::Opaque)
            } else {
                let children = walk(upper, lower, &image, out)?;
                let unchanged = lower_meta
                    .as_ref()
                    .is_some_and(|l| l.kind == Kind::Dir && same_meta(l, &meta));
                if unchanged {
                    if children {
                        out.parents.push(image.clone());
                        any = true;
                    }
                    None
                } else {
                    Some(Change::Written)
                }
            }
        } else if ft.is_file() {
            let unchanged = match &lower_meta {
                Some(l) if l.kind == Kind::File && same_meta(l, &meta) => {
                    same_content(&up, lower, &image)?
                }
                _ => false,
            };
            (!unchanged).then_some(Change::Written)
        } else if ft.is_symlink() {
            let unchanged = match &lower_meta {
                Some(l) if l.kind == Kind::Symlink => {
                    let (dir, name) = lower
                        .parent(&image, false)
                        .map_err(|e| io::Error::other(e.to_string()))?
                        .ok_or_else(|| io::Error::other(format!("{image}: vanished")))?;
                    let low_target = dir
                        .read_link(&name)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    fs::read_link(&up)? == low_target && l.uid == meta.uid()
                }
                _ => false,
            };
            (!unchanged).then_some(Change::Written)
        } else {
            Some(Change::Written)
        };
        if let Some(c) = change {
            out.changed.insert(image, c);
            any = true;
        }
    }
    Ok(any)
}

/// Builds the layer directory `dest` holding exactly `changes` of `upper` (whiteouts as
/// `.wh.` files), ready for [`crate::pack::pack_layer`].
pub fn layer_dir(upper: &Path, changes: &Changes, dest: &Path, sde: u64) -> io::Result<()> {
    let inroot = |e: InRootError| io::Error::other(e.to_string());
    let source = ImageRoot::open(upper).map_err(inroot)?;
    let layer = ImageRoot::open(dest).map_err(inroot)?;
    let owner_of = |m: &Meta| Owner {
        uid: m.uid,
        gid: m.gid,
        mode: m.mode & 0o7777,
        mtime: m.mtime.min(sde as i64),
    };
    let whiteout_owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
        mtime: sde as i64,
    };
    let meta_of = |path: &str| -> io::Result<Meta> {
        source
            .metadata(path)
            .map_err(inroot)?
            .ok_or_else(|| io::Error::other(format!("{path}: vanished from the overlay")))
    };
    // Parents and changed directories first (path order puts a parent before its children).
    let mut dirs: Vec<&str> = changes.parents.iter().map(String::as_str).collect();
    for (p, c) in &changes.changed {
        let is_dir = source.kind(p).map_err(inroot)? == Some(Kind::Dir);
        if *c == Change::Opaque || (*c == Change::Written && is_dir) {
            dirs.push(p.as_str());
        }
    }
    dirs.sort();
    for d in &dirs {
        layer.make_dir_all(d).map_err(inroot)?;
    }
    let mut owners: Vec<(String, Owner)> = Vec::new();
    for (path, change) in &changes.changed {
        match change {
            Change::Deleted => {
                let (dir, name) = layer
                    .parent(path, true)
                    .map_err(inroot)?
                    .ok_or_else(|| io::Error::other("no parent"))?;
                let wh = format!(".wh.{}", name.to_string_lossy());
                dir.write_file(&wh, b"", 0o644).map_err(inroot)?;
                owners.push((
                    format!("{}/{wh}", crate::image::parent(path).trim_end_matches('/')),
                    whiteout_owner,
                ));
            }
            Change::Opaque => {
                let dir = layer.make_dir_all(path).map_err(inroot)?;
                dir.write_file(".wh..wh..opq", b"", 0o644).map_err(inroot)?;
                owners.push((format!("{path}/.wh..wh..opq"), whiteout_owner));
            }
            Change::Written => {
                let (from_dir, name) =
                    source.parent(path, false).map_err(inroot)?.ok_or_else(|| {
                        io::Error::other(format!("{path}: vanished from the overlay"))
                    })?;
                let kind = from_dir.kind(&name).map_err(inroot)?;
                if kind == Some(Kind::Dir) {
                    continue;
                }
                let meta = meta_of(path)?;
                let (to_dir, _) = layer
                    .parent(path, true)
                    .map_err(inroot)?
                    .ok_or_else(|| io::Error::other("no parent"))?;
                match kind {
                    Some(Kind::Symlink) => {
                        let target = from_dir.read_link(&name).map_err(inroot)?;
                        to_dir.symlink(&name, &target).map_err(inroot)?;
                    }
                    Some(Kind::File) => {
                        let (mut from, _) = from_dir
                            .open_read(&name)
                            .map_err(inroot)?
                            .ok_or_else(|| io::Error::other(format!("{path}: vanished")))?;
                        let mut to = to_dir.create_file(&name).map_err(inroot)?;
                        io::copy(&mut from, &mut to)?;
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{path}: special files cannot go into an overlay layer"),
                        ))
                    }
                }
                owners.push((path.clone(), owner_of(&meta)));
            }
        }
    }
    let set = |path: &str, owner: Owner| layer.set_owner(path, owner).map_err(inroot);
    for (p, o) in owners {
        set(&p, o)?;
    }
    // Directories' metadata last, deepest first.
    for d in dirs.iter().rev() {
        set(d, owner_of(&meta_of(d)?))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_copy_ups_are_not_changes() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("l"), d.path().join("u"));
        for p in [&lower, &upper] {
            fs::create_dir_all(p.join("etc")).unwrap();
            fs::write(p.join("etc/same"), "x").unwrap();
        }
        fs::write(lower.join("etc/changed"), "old").unwrap();
        fs::write(upper.join("etc/changed"), "new").unwrap();
        fs::create_dir_all(upper.join("opt/app")).unwrap();
        fs::write(upper.join("opt/app/run"), "#!/bin/sh\n").unwrap();
        let c = changes(&upper, &lower).unwrap();
        let paths: Vec<&str> = c.changed.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/etc/changed", "/opt", "/opt/app", "/opt/app/run"]);
        assert_eq!(c.parents, ["/etc"]);
        let layer = d.path().join("layer");
        fs::create_dir(&layer).unwrap();
        layer_dir(&upper, &c, &layer, 1_700_000_000).unwrap();
        assert!(layer.join("etc/changed").is_file());
        assert!(!layer.join("etc/same").exists());
        assert!(layer.join("opt/app/run").is_file());
    }
}
