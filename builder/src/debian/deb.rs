//! Reading .deb files (deb(5)): an ar archive of `debian-binary`, `control.tar[.gz|.xz|.zst]`
//! and `data.tar[.gz|.xz|.zst|.bz2]`. The control members are read into memory; the data
//! member is handed to the caller as a stream, so a package is decompressed exactly once.

use crate::debian::control::{self, Paragraph};
use crate::decompress::Compression;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A malformed or unreadable .deb.
#[derive(Debug, thiserror::Error)]
#[error("{package}: {member}: {reason}")]
pub struct DebError {
    /// Package (or file) name.
    pub package: String,
    /// The ar member or control file at fault.
    pub member: String,
    /// What is wrong.
    pub reason: String,
}

/// One file of the control archive (maintainer scripts, md5sums, conffiles, ...).
#[derive(Debug, Clone)]
pub struct ControlFile {
    /// Unix permission bits.
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// The control part of a .deb.
#[derive(Debug, Clone)]
pub struct DebControl {
    /// The `control` paragraph.
    pub control: Paragraph,
    /// Every other control-archive file by name (`postinst`, `md5sums`, ...).
    pub files: BTreeMap<String, ControlFile>,
}

/// Largest control archive accepted, compressed and again after decompression (real ones are
/// kilobytes; the largest in Debian, with long md5sums, a few MB).
const MAX_CONTROL: u64 = 32 << 20;

/// The compression suffixes dpkg-deb accepts on `control.tar` and `data.tar` (deb(5)).
const MEMBER_SUFFIXES: &[&str] = &["", ".gz", ".xz", ".zst", ".bz2", ".lzma"];

/// Whether an ar member is exactly `base` with one of the suffixes dpkg-deb knows
/// (`data.tarball.xz` is not `data.tar.xz`).
fn is_member(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|suffix| MEMBER_SUFFIXES.contains(&suffix))
}

/// A reader that fails once more than `limit` bytes came through: caps what a small
/// compressed member may inflate to.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "inflates to more than {} MiB",
                self.limit >> 20
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Refuses ar archives whose member names use a GNU or BSD long-name table: deb(5) members
/// have short names, and the `ar` crate panics on a long-name reference past its table (found
/// by fuzzing). Leaves the file positioned at its start.
fn plain_ar_names(file: &mut std::fs::File) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut pos = 8u64;
    let mut header = [0u8; 60];
    while pos + 60 <= len {
        file.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
        file.read_exact(&mut header).map_err(|e| e.to_string())?;
        let name = &header[..16];
        if name.starts_with(b"/") && name.get(1).is_some_and(|b| *b != b' ')
            || name.starts_with(b"#1/")
        {
            return Err(format!(
                "member name '{}' uses an ar long-name table, which .deb files never do",
                String::from_utf8_lossy(name).trim_end()
            ));
        }
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or("member header has no valid size")?;
        pos = pos
            .saturating_add(60)
            .saturating_add(size)
            .saturating_add(size % 2);
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads a .deb: parses its control archive, then calls `data` with the decompressed data.tar
/// stream. Errors of `data` pass through unchanged.
pub fn read_deb<T, E: From<DebError>>(
    path: &Path,
    label: &str,
    data: impl FnOnce(&DebControl, &mut dyn Read) -> Result<T, E>,
) -> Result<T, E> {
    let err = |member: &str, reason: String| DebError {
        package: label.to_string(),
        member: member.to_string(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| err("(file)", e.to_string()))?;
    plain_ar_names(&mut file).map_err(|e| err("(ar)", e))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    let mut control: Option<DebControl> = None;
    let mut seen_binary = false;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(|e| err("(ar)", format!("not a valid ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).to_string();
        let name = name.trim_end_matches('/').to_string();
        if name == "debian-binary" {
            let mut v = String::new();
            entry
                .by_ref()
                .take(64)
                .read_to_string(&mut v)
                .map_err(|e| err(&name, e.to_string()))?;
            if !v.starts_with("2.") {
                return Err(
                    err(&name, format!("unsupported format version '{}'", v.trim())).into(),
                );
            }
            seen_binary = true;
        } else if is_member(&name, "control.tar") {
            if !seen_binary {
                return Err(err(&name, "comes before debian-binary".into()).into());
            }
            if control.is_some() {
                return Err(err(
                    &name,
                    "a second control member (dpkg-deb refuses this)".into(),
                )
                .into());
            }
            let compression = Compression::from_name(&name)
                .ok_or_else(|| err(&name, "unknown compression".into()))?;
            let decoder = compression
                .decoder(entry.by_ref().take(MAX_CONTROL))
                .map_err(|e| err(&name, e.to_string()))?;
            let capped = Capped {
                inner: decoder,
                left: MAX_CONTROL,
                limit: MAX_CONTROL,
            };
            control = Some(read_control(capped, label, &name)?);
        } else if is_member(&name, "data.tar") {
            let ctl = control
                .as_ref()
                .ok_or_else(|| err(&name, "data member before the control member".into()))?;
            let compression = Compression::from_name(&name)
                .ok_or_else(|| err(&name, "unknown compression".into()))?;
            let mut decoder = compression
                .decoder(&mut entry)
                .map_err(|e| err(&name, e.to_string()))?;
            let out = data(ctl, &mut decoder)?;
            return Ok(out);
        } else if name.starts_with('_') {
            // Members starting with '_' are reserved for extensions and ignored (deb(5)).
        } else {
            return Err(err(&name, "unexpected ar member".into()).into());
        }
    }
    Err(err("data.tar", "missing (truncated archive?)".into()).into())
}

fn read_control(reader: impl Read, label: &str, member: &str) -> Result<DebControl, DebError> {
    let err = |reason: String| DebError {
        package: label.to_string(),
        member: member.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let mut control_text = None;
    for entry in archive.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(format!("corrupt tar: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| err(e.to_string()))?.into_owned();
        let name = path.to_string_lossy().trim_start_matches("./").to_string();
        if name.contains('/') || name.is_empty() || name == "." || name == ".." {
            return Err(err(format!("unexpected control member '{name}'")));
        }
        // `list` is the file list dpkg generates; a package that ships one forges it.
        if name == "list" {
            return Err(err(
                "control member 'list' is reserved for the file list dpkg writes".into(),
            ));
        }
        if files.contains_key(&name) || (name == "control" && control_text.is_some()) {
            return Err(err(format!("control member '{name}' appears twice")));
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| err(format!("{name}: {e}")))?;
        if name == "control" {
            control_text =
                Some(String::from_utf8(data).map_err(|_| err("control is not UTF-8".into()))?);
        } else {
            files.insert(name, ControlFile { mode, data });
        }
    }
    let text = control_text.ok_or_else(|| err("no control file".into()))?;
    let mut paragraphs = control::parse(&text).map_err(|e| err(format!("control: {e}")))?;
    if paragraphs.len() != 1 {
        return Err(err(format!(
            "control holds {} paragraphs, not 1",
            paragraphs.len()
        )));
    }
    let control = paragraphs.remove(0);
    for f in ["Package", "Version", "Architecture"] {
        if control.get(f).is_none() {
            return Err(err(format!("control has no {f} field")));
        }
    }
    let package = control.get("Package").unwrap_or_default();
    if !control::valid_package_name(package) {
        return Err(err(format!(
            "Package '{}' is not a valid Debian package name",
            package.chars().take(80).collect::<String>()
        )));
    }
    if !control::valid_arch_name(control.get("Architecture").unwrap_or_default()) {
        return Err(err(
            "Architecture is not a valid Debian architecture name".into()
        ));
    }
    Ok(DebControl { control, files })
}

#[cfg(test)]
mod fuzz_regressions {
    /// Found by ci/fuzz: an ar member header whose name is a GNU long-name reference
    /// ("/NNN") far beyond any name table.
    #[test]
    fn gnu_long_name_reference_out_of_range() {
        let data: &[u8] = &[
            33, 60, 97, 114, 99, 104, 62, 10, 47, 49, 49, 49, 49, 49, 49, 49, 49, 49, 53, 49, 49,
            49, 49, 49, 49, 49, 49, 49, 49, 46, 49, 49, 49, 53, 49, 49, 49, 49, 49, 49, 49, 49, 49,
            49, 46, 207, 60, 13, 54, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
            49, 50, 51, 49, 54, 57, 0,
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.deb");
        std::fs::write(&path, data).expect("write");
        let r = super::read_deb(&path, "fuzz", |_c, _r| -> Result<(), super::DebError> {
            Ok(())
        });
        assert!(r.is_err());
    }
}
