//! Programs swapped for stand-ins while the maintainer scripts run, and put back afterwards:
//! `start-stop-daemon` (no service starts in a build) and Debian's Python byte-compilers (the
//! bytecode is made once, deterministically, after every package is configured: see
//! [`super::bytecode`]).
//!
//! The real file is renamed beside itself (`NAME.kiln-real`) and a stand-in written in its place;
//! [`restore`] renames it back, so owner, mode, inode and mtime are the package's own.

use crate::inroot::{self, ImageRoot, InRootError};
use std::ffi::OsString;

/// A program replaced by a stand-in: the directory holding it and its name.
pub struct Swapped {
    dir: inroot::Dir,
    name: OsString,
}

fn real_name(name: &OsString) -> String {
    format!("{}.kiln-real", name.to_string_lossy())
}

/// Replaces each existing regular file among `paths` by `stand_in` (mode 0755). Paths that are
/// one file (merged /usr makes /sbin/x and /usr/sbin/x the same inode) are swapped once: every
/// path is looked up before any is replaced, since the stand-in written for the first is a new
/// file and looking the second up afterwards would not show that they were one.
pub fn swap(
    image: &ImageRoot,
    paths: &[&str],
    stand_in: &[u8],
) -> Result<Vec<Swapped>, InRootError> {
    let mut found: Vec<Swapped> = Vec::new();
    let mut seen = Vec::new();
    for path in paths {
        let Some((dir, name)) = image.parent(path, false)? else {
            continue;
        };
        let Some(id) = dir.file_identity(&name)? else {
            continue;
        };
        if !seen.contains(&id) {
            seen.push(id);
            found.push(Swapped { dir, name });
        }
    }
    let mut swapped = Vec::new();
    for s in found {
        s.dir.rename(&s.name, real_name(&s.name))?;
        // Pushed before the stand-in is written: a failure writing it still restores the real one.
        swapped.push(s);
        if let Some(s) = swapped.last() {
            s.dir.write_file(&s.name, stand_in, 0o755)?;
        }
    }
    Ok(swapped)
}

/// Puts every real program back (replacing its stand-in); tries them all and reports the
/// first failure.
pub fn restore(swapped: Vec<Swapped>) -> Result<(), InRootError> {
    let mut first = Ok(());
    for s in swapped {
        let done = s.dir.rename(real_name(&s.name), &s.name);
        if first.is_ok() {
            first = done;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swapped_program_comes_back_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let image = ImageRoot::open(tmp.path()).unwrap();
        image.write("/usr/sbin/tool", b"real", 0o700).unwrap();
        image.make_dir_all("/sbin").unwrap();
        // /sbin/tool is the same file (a hard link stands in for merged /usr here).
        std::fs::hard_link(
            tmp.path().join("usr/sbin/tool"),
            tmp.path().join("sbin/tool"),
        )
        .unwrap();
        let swapped = swap(
            &image,
            &["/sbin/tool", "/usr/sbin/tool", "/bin/absent"],
            b"stub",
        )
        .unwrap();
        assert_eq!(swapped.len(), 1, "one file under two names is swapped once");
        assert_eq!(
            image.read("/sbin/tool", 100).unwrap().as_deref(),
            Some(&b"stub"[..])
        );
        restore(swapped).unwrap();
        assert_eq!(
            image.read("/sbin/tool", 100).unwrap().as_deref(),
            Some(&b"real"[..])
        );
        assert_eq!(
            image.metadata("/sbin/tool").unwrap().unwrap().mode & 0o777,
            0o700
        );
        assert!(image.kind("/sbin/tool.kiln-real").unwrap().is_none());
    }
}
