//! What an overlay's build changed, read from the overlayfs upper directory and compared with
//! the lower (the base), and the layer directory made of exactly those changes.
//!
//! overlayfs records a deletion as a 0/0 character device and a directory replaced wholesale
//! with the `trusted.overlay.opaque` attribute (kernel Documentation/filesystems/overlayfs.rst);
//! an OCI layer says the same with `.wh.NAME` and `.wh..wh..opq` entries (OCI image-spec,
//! layer.md). Files copied up without being changed (opened for writing, chmod to the same
//! mode) are not changes and are left out.

use crate::compose::unpack::{apply_owner, Owner};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

fn same_meta(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid()
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(fs::read(a)? == fs::read(b)?)
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
    walk(upper, lower, "", &mut out)?;
    Ok(out)
}

fn walk(upper: &Path, lower: &Path, rel: &str, out: &mut Changes) -> io::Result<bool> {
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
        let low = lower.join(&image[1..]);
        let meta = fs::symlink_metadata(&up)?;
        let lower_meta = fs::symlink_metadata(&low).ok();
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
                    .is_some_and(|l| l.is_dir() && same_meta(l, &meta));
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
                Some(l) if l.is_file() && same_meta(l, &meta) => same_content(&up, &low)?,
                _ => false,
            };
            (!unchanged).then_some(Change::Written)
        } else if ft.is_symlink() {
            let unchanged = match &lower_meta {
                Some(l) if l.file_type().is_symlink() => {
                    fs::read_link(&up)? == fs::read_link(&low)? && l.uid() == meta.uid()
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
    let src = |image: &str| upper.join(&image[1..]);
    let at = |image: &str| dest.join(&image[1..]);
    let owner_of = |m: &fs::Metadata| Owner {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
        mtime: m.mtime().min(sde as i64),
    };
    let whiteout_owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
        mtime: sde as i64,
    };
    // Parents and changed directories first (path order puts a parent before its children).
    let mut dirs: Vec<&str> = changes.parents.iter().map(String::as_str).collect();
    dirs.extend(
        changes
            .changed
            .iter()
            .filter(|(p, c)| **c == Change::Opaque || (**c == Change::Written && src(p).is_dir()))
            .map(|(p, _)| p.as_str()),
    );
    dirs.sort();
    for d in &dirs {
        fs::create_dir_all(at(d))?;
    }
    let mut owners: Vec<(PathBuf, Owner, bool)> = Vec::new();
    for (path, change) in &changes.changed {
        let target = at(path);
        match change {
            Change::Deleted => {
                let name = Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parent = target.parent().unwrap_or(dest).to_path_buf();
                fs::create_dir_all(&parent)?;
                let wh = parent.join(format!(".wh.{name}"));
                fs::write(&wh, b"")?;
                owners.push((wh, whiteout_owner, false));
            }
            Change::Opaque => {
                let wh = target.join(".wh..wh..opq");
                fs::write(&wh, b"")?;
                owners.push((wh, whiteout_owner, false));
            }
            Change::Written => {
                let from = src(path);
                let meta = fs::symlink_metadata(&from)?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    continue;
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                if ft.is_symlink() {
                    std::os::unix::fs::symlink(fs::read_link(&from)?, &target)?;
                } else if ft.is_file() {
                    fs::copy(&from, &target)?;
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{path}: special files cannot go into an overlay layer"),
                    ));
                }
                owners.push((target, owner_of(&meta), ft.is_symlink()));
            }
        }
    }
    for (p, o, link) in owners {
        apply_owner(&p, o, link)?;
    }
    // Directories' metadata last, deepest first.
    for d in dirs.iter().rev() {
        let meta = fs::symlink_metadata(src(d))?;
        apply_owner(&at(d), owner_of(&meta), false)?;
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
