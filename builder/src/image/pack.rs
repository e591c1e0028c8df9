//! The pack stage, layer half: turns a directory tree into a deterministic, compressed OCI layer.
//!
//! Determinism rules (the same tree gives the same bytes on any machine, any day): entries in
//! depth-first order with each directory's children sorted by name bytes; mtimes clamped to
//! SOURCE_DATE_EPOCH; numeric uid/gid only (no user or group names from the host); no atime or
//! ctime (plain ustar/GNU headers, no PAX time records); hard links stored once and then as link
//! entries; compression with fixed parameters (zstd level 3 with a fixed worker count, whose
//! output does not depend on the machine's cores; gzip with a zero header mtime).

use crate::digest::HashingWriter;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// `tar+zstd` (OCI 1.1), the default.
    Zstd,
    /// `tar+gzip`, for older tools such as umoci 0.4.
    Gzip,
}

impl LayerCompression {
    /// The OCI layer media type.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

/// A written layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// sha256 hex of the compressed blob (its OCI digest).
    pub digest: String,
    /// Size of the compressed blob.
    pub size: u64,
    /// sha256 hex of the uncompressed tar (its OCI diff_id).
    pub diff_id: String,
    /// Media type.
    pub media_type: &'static str,
    /// Number of tar entries.
    pub entries: u64,
}

/// Why a layer could not be packed.
#[derive(Debug, thiserror::Error)]
#[error("packing {path}: {reason}")]
pub struct PackError {
    /// The file at fault.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// zstd level (the CLI default) and workers; fixed so the bytes never depend on the machine.
const ZSTD_LEVEL: i32 = 3;
const ZSTD_WORKERS: u32 = 2;

/// Packs `root` into `blobs_dir/<digest>`.
pub fn pack_layer(
    root: &Path,
    blobs_dir: &Path,
    source_date_epoch: u64,
    compression: LayerCompression,
) -> Result<Layer, PackError> {
    let err = |path: &Path, e: io::Error| PackError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = tempfile::NamedTempFile::new_in(blobs_dir).map_err(|e| err(blobs_dir, e))?;
    let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    let encoder = match compression {
        LayerCompression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(blob, ZSTD_LEVEL)
                .map_err(|e| err(blobs_dir, e))?;
            enc.multithread(ZSTD_WORKERS)
                .map_err(|e| err(blobs_dir, e))?;
            Encoder::Zstd(enc)
        }
        LayerCompression::Gzip => Encoder::Gzip(
            flate2::GzBuilder::new()
                .mtime(0)
                .write(blob, flate2::Compression::default()),
        ),
    };
    let mut tar = tar::Builder::new(HashingWriter::new(encoder));
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut walker = Walker {
        sde: source_date_epoch,
        links: HashMap::new(),
        entries: 0,
    };
    walker.walk(root, Path::new(""), &mut tar)?;
    let entries = walker.entries;
    let (diff_id, _, encoder) = tar.into_inner().map_err(|e| err(root, e))?.into_parts();
    let (digest, size, buffered) = encoder
        .finish()
        .map_err(|e| err(blobs_dir, e))?
        .into_parts();
    buffered
        .into_inner()
        .map_err(|e| err(blobs_dir, e.into_error()))?
        .sync_all()
        .map_err(|e| err(blobs_dir, e))?;
    tmp.persist(blobs_dir.join(&digest))
        .map_err(|e| err(blobs_dir, e.error))?;
    Ok(Layer {
        digest,
        size,
        diff_id,
        media_type: compression.media_type(),
        entries,
    })
}

/// The layer compressor; an enum rather than a trait object so `finish` hands the sink back.
enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
        }
    }
}

struct Walker {
    sde: u64,
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

impl Walker {
    fn header(&self, meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime((meta.mtime().max(0) as u64).min(self.sde));
        h.set_size(0);
        h
    }

    fn walk<W: Write>(
        &mut self,
        host: &Path,
        rel: &Path,
        tar: &mut tar::Builder<W>,
    ) -> Result<(), PackError> {
        let err = |path: &Path, e: io::Error| PackError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut children: Vec<(Vec<u8>, PathBuf)> = fs::read_dir(host)
            .map_err(|e| err(host, e))?
            .map(|e| e.map(|e| (e.file_name().as_bytes().to_vec(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(|e| err(host, e))?;
        children.sort();
        for (name, path) in children {
            let rel_path = rel.join(std::ffi::OsStr::from_bytes(&name));
            let meta = fs::symlink_metadata(&path).map_err(|e| err(&path, e))?;
            let ft = meta.file_type();
            self.entries += 1;
            if ft.is_dir() {
                let mut h = self.header(&meta, tar::EntryType::Directory);
                let mut name = rel_path.as_os_str().as_bytes().to_vec();
                name.push(b'/');
                tar.append_data(&mut h, std::ffi::OsStr::from_bytes(&name), io::empty())
                    .map_err(|e| err(&path, e))?;
                self.walk(&path, &rel_path, tar)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| err(&path, e))?;
                let mut h = self.header(&meta, tar::EntryType::Symlink);
                tar.append_link(&mut h, &rel_path, &target)
                    .map_err(|e| err(&path, e))?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key) {
                        let mut h = self.header(&meta, tar::EntryType::Link);
                        tar.append_link(&mut h, &rel_path, first)
                            .map_err(|e| err(&path, e))?;
                        continue;
                    }
                    self.links.insert(key, rel_path.clone());
                }
                let mut h = self.header(&meta, tar::EntryType::Regular);
                h.set_size(meta.len());
                let file = fs::File::open(&path).map_err(|e| err(&path, e))?;
                tar.append_data(&mut h, &rel_path, file)
                    .map_err(|e| err(&path, e))?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = self.header(&meta, kind);
                let rdev = meta.rdev();
                h.set_device_major(libc::major(rdev))
                    .map_err(|e| err(&path, e))?;
                h.set_device_minor(libc::minor(rdev))
                    .map_err(|e| err(&path, e))?;
                tar.append_data(&mut h, &rel_path, io::empty())
                    .map_err(|e| err(&path, e))?;
            } else {
                return Err(PackError {
                    path,
                    reason: "sockets cannot be stored in an image layer".into(),
                });
            }
        }
        Ok(())
    }
}
