//! Atomic output directories: a build writes into a hidden sibling of its destination and swaps
//! it into place only when complete (`renameat2(RENAME_EXCHANGE)`), so an interrupted or failed
//! build leaves the previous output intact and never a half-written one.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefixes of the working directories a build makes in OUT (see [`claim`]).
pub const WORK_PREFIXES: &[&str] = &[STAGING_PREFIX, ".kiln-rootfs-", ".kiln-overlays-"];

/// An output directory this process builds into; others wait until it is dropped.
pub struct OutClaim {
    _dir: std::fs::File,
    /// Stale working directories of killed builds that were removed.
    pub swept: Vec<PathBuf>,
}

/// Runs `work`, which creates `out`; when it fails, removes again the directories on the way
/// to `out` that did not exist before and are still empty: a failed command leaves no trace.
pub fn removing_created_on_failure<T, E>(
    out: &Path,
    work: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    // The directories `create_dir_all(out)` is about to create, innermost first.
    let created: Vec<std::path::PathBuf> = out
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    let result = work();
    if result.is_err() {
        for dir in &created {
            // remove_dir fails on a non-empty directory: only what was made and is empty goes.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
    result
}

/// Claims the output directory `out` for one build: an exclusive `flock` on the directory
/// itself (a second build into the same OUT waits; the lock dies with its process, so a
/// `kill -9` leaves no stale lock and no file in OUT), then removes the working directories
/// ([`WORK_PREFIXES`]) that builds killed before they could clean up left behind. Under the
/// lock no live build owns any of them.
pub fn claim(out: &Path) -> io::Result<OutClaim> {
    let dir = std::fs::File::open(out)?;
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)?;
    let mut swept = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name();
        let stale = WORK_PREFIXES
            .iter()
            .any(|p| name.as_bytes().starts_with(p.as_bytes()));
        if stale && entry.file_type()?.is_dir() {
            // remove_dir_all never follows symlinks: whatever a package planted in a staging
            // root is removed, not what it points at.
            std::fs::remove_dir_all(entry.path())?;
            swept.push(entry.path());
        }
    }
    Ok(OutClaim { _dir: dir, swept })
}

/// How a command other than `build` uses the image layout in a build's output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it (verify, export, flash, release, check).
    Read,
    /// Adds to it (sign: new blobs, a rewritten index.json).
    Write,
}

/// A hold on the output directory around a layout, released when dropped.
pub struct OutHold {
    _dir: Option<std::fs::File>,
}

/// Holds the build output directory that contains `layout` (`OUT` of `OUT/oci`) against a
/// build, which claims it exclusively ([`claim`]) from its start to the swap of `OUT/oci`:
/// shared for readers, so none sees the layout replaced halfway through its reading;
/// exclusive for writers, so sign never adds to a layout a build is about to discard, and a
/// build never swaps away a layout while its signature is being written. A layout that is not
/// named `oci` is no build's output and is not held. When a build holds the directory, says
/// so on stderr and waits.
pub fn hold(layout: &Path, access: Access) -> io::Result<OutHold> {
    let out = match (layout.file_name(), layout.parent()) {
        (Some(name), Some(parent)) if name == "oci" => {
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            }
        }
        _ => return Ok(OutHold { _dir: None }),
    };
    let dir = match std::fs::File::open(out) {
        Ok(d) => d,
        // Nothing to hold: the command reports the missing layout itself.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OutHold { _dir: None }),
        Err(e) => return Err(e),
    };
    use rustix::fs::FlockOperation as Op;
    let (now, wait) = match access {
        Access::Read => (Op::NonBlockingLockShared, Op::LockShared),
        Access::Write => (Op::NonBlockingLockExclusive, Op::LockExclusive),
    };
    match rustix::fs::flock(&dir, now) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            eprintln!("kiln: waiting for the build in {} to finish", out.display());
            rustix::fs::flock(&dir, wait)?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(OutHold { _dir: Some(dir) })
}

/// A directory being written that becomes `dest` on [`StagedDir::commit`]; removed if dropped.
pub struct StagedDir {
    dest: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

/// Prefix of staging directories, so stale ones from a killed build can be recognised.
const STAGING_PREFIX: &str = ".kiln-staging-";

impl StagedDir {
    /// Starts a new staging directory next to `dest`.
    pub fn new(dest: &Path) -> io::Result<StagedDir> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(parent)?;
        Ok(StagedDir {
            dest: dest.to_path_buf(),
            tmp: Some(tmp),
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).unwrap_or(&self.dest)
    }

    /// Puts the staged directory in place of `dest` in one step.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let staged = tmp.keep();
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            exchange(&staged, &self.dest)?;
            // `staged` now holds the previous output.
            std::fs::remove_dir_all(&staged)?;
        } else {
            std::fs::rename(&staged, &self.dest)?;
        }
        Ok(())
    }
}

fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?)
}

/// Replaces `path` by `bytes` in one step: a new file of a random name beside it (created
/// with `O_EXCL`, so nothing planted under a predictable name is followed), mode 0644,
/// renamed over it. A reader sees the old file or the new one, never half of either.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, bytes)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_and_signers_wait_for_a_build_and_readers_share() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("oci")).unwrap();
        let layout = out.join("oci");
        // Two readers at once.
        let r1 = hold(&layout, Access::Read).unwrap();
        let r2 = hold(&layout, Access::Read).unwrap();
        // A build (or a signer) waits for them.
        let (tx, rx) = std::sync::mpsc::channel();
        let out2 = out.clone();
        let builder = std::thread::spawn(move || {
            let claim = claim(&out2).unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(claim);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "the build waits for the readers");
        drop((r1, r2));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the build goes on");
        // While the build holds OUT, a signer waits until it is done.
        let started = std::time::Instant::now();
        let w = hold(&layout, Access::Write).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
        drop(w);
        builder.join().unwrap();
        // A layout that is no build's output is not held.
        let plain = d.path().join("somewhere");
        std::fs::create_dir_all(&plain).unwrap();
        assert!(hold(&plain, Access::Write).unwrap()._dir.is_none());
    }

    #[test]
    fn commit_replaces_and_drop_discards() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("oci");
        let s = StagedDir::new(&dest).unwrap();
        std::fs::write(s.path().join("a"), "1").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");

        let s = StagedDir::new(&dest).unwrap();
        std::fs::write(s.path().join("a"), "2").unwrap();
        drop(s);
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");

        let s = StagedDir::new(&dest).unwrap();
        std::fs::write(s.path().join("b"), "3").unwrap();
        s.commit().unwrap();
        assert!(!dest.join("a").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
