//! The export stage: turns a built (and usually signed) OCI image into what goes onto a robot —
//! the flattened root filesystem as a tar, an ext4 or squashfs image, a partitioned disk image
//! with a bmap file, or a signed RAUC bundle for over-the-air updates.
//!
//! Every output is a pure function of the image: file systems get UUIDs, hash seeds and salts
//! derived from the image manifest digest, and every timestamp from the image's creation time
//! (SOURCE_DATE_EPOCH), so two exports of one image are byte-identical.
//!
//! The file systems themselves are made by the tools made for the job (e2fsprogs' mke2fs,
//! squashfs-tools' mksquashfs, dosfstools and mtools, util-linux's sfdisk), from the image tree
//! materialised in a private staging directory beside the output. That directory needs real
//! owners and device nodes, so these formats need root, as `kiln build` does.
//!
//! Outputs are written under a staging name and renamed into place only when complete: a failed
//! export leaves nothing behind.

pub mod bmap;
pub mod disk;
pub mod fsimage;
pub mod layout;
pub mod rauc;
pub mod rootfs;

use crate::digest::sha256_hex;
use crate::image::{ImageError, ImageTree};
use crate::recipe::Board;
use std::path::{Path, PathBuf};

/// What `kiln export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The flattened root filesystem as one tar (numeric owners, sorted, clamped times).
    Tar,
    /// An ext4 file system image of the root filesystem.
    Ext4,
    /// A squashfs image of the root filesystem (xz), read-only root for A/B slots.
    Squashfs,
    /// A partitioned disk image from the board's flash layout, plus FILE.bmap.
    Disk,
    /// A RAUC bundle (verity format) signed with an X.509 release certificate.
    Rauc,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The image could not be read, or a blob did not match its digest.
    #[error("{0}")]
    Image(#[from] ImageError),
    /// The image is not what an export needs (no manifest annotations, a hostile tree).
    #[error("image {image}: {reason}")]
    BadImage {
        /// The layout.
        image: String,
        /// Why.
        reason: String,
    },
    /// The board's flash layout is missing or wrong.
    #[error("board {board}: [flash] {key}: {reason}")]
    Layout {
        /// The board file.
        board: PathBuf,
        /// The key at fault.
        key: String,
        /// Why.
        reason: String,
    },
    /// What the format needs was not given (a board, a certificate).
    #[error("{0}")]
    Usage(String),
    /// A file-system tool failed.
    #[error("{tool} failed: {reason}")]
    Tool {
        /// The command.
        tool: String,
        /// Its exit status and last line of output.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Signing the RAUC bundle failed.
    #[error("signing the RAUC bundle: {0}")]
    Signing(String),
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |e| ExportError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The image being exported: its tree and the facts every format records.
pub struct SourceImage {
    /// The flattened tree (every layer applied, digests verified).
    pub tree: ImageTree,
    /// `sha256:` digest of the image manifest: the seed of every derived identifier.
    pub digest: String,
    /// The image name (`org.opencontainers.image.title`).
    pub name: String,
    /// The image version (`org.opencontainers.image.version`).
    pub version: String,
    /// The hardware `compatible` strings the image was built for.
    pub compatible: Vec<String>,
    /// The board name.
    pub board: String,
    /// The image's creation time: SOURCE_DATE_EPOCH of every file system written.
    pub created: u64,
}

impl SourceImage {
    /// Reads an OCI layout (verifying every blob as it streams), file contents kept in an
    /// unlinked file in `spool_dir` rather than in memory: a robot-sized image exports within
    /// bounded memory.
    pub fn open(layout: &Path, spool_dir: &Path) -> Result<SourceImage, ExportError> {
        let spool = tempfile::tempfile_in(spool_dir).map_err(io_err(spool_dir))?;
        let tree = ImageTree::from_oci_layout_spooled(layout, spool)?;
        let bad = |reason: &str| ExportError::BadImage {
            image: layout.display().to_string(),
            reason: reason.to_string(),
        };
        let manifest = tree
            .manifest
            .clone()
            .ok_or_else(|| bad("not an OCI image layout"))?;
        let get = |key: &str| {
            manifest
                .annotations
                .get(key)
                .cloned()
                .ok_or_else(|| bad(&format!("manifest has no annotation {key}")))
        };
        let name = get("org.opencontainers.image.title")?;
        let version = get("org.opencontainers.image.version")?;
        let board = get(crate::image::oci::annotation::BOARD)?;
        let compatible: Vec<String> =
            serde_json::from_str(&get(crate::image::oci::annotation::COMPATIBLE)?)
                .map_err(|_| bad("annotation dev.kiln.compatible is not a JSON list"))?;
        let created_text = get("org.opencontainers.image.created")?;
        let created = crate::timefmt::parse_rfc3339_utc(&created_text)
            .ok_or_else(|| bad("annotation org.opencontainers.image.created is not RFC 3339"))?;
        Ok(SourceImage {
            tree,
            digest: manifest.digest,
            name,
            version,
            compatible,
            board,
            created,
        })
    }

    /// A UUID (RFC 4122 version 4 layout) derived from the image digest and a purpose, so a
    /// file system's identity is the same in every export of the same image and differs
    /// between images and between partitions.
    pub fn derived_uuid(&self, purpose: &str) -> String {
        let h = hex::decode(sha256_hex(
            format!("kiln-export {purpose} {}", self.digest).as_bytes(),
        ))
        .unwrap_or_else(|_| vec![0; 32]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    }

    /// 32 bytes derived from the image digest and a purpose (verity salt).
    pub fn derived_bytes(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Ok(h) = hex::decode(sha256_hex(
            format!("kiln-export {purpose} {}", self.digest).as_bytes(),
        )) {
            out.copy_from_slice(&h);
        }
        out
    }
}

/// What to export, where.
pub struct ExportOptions<'a> {
    /// The format.
    pub format: ExportFormat,
    /// The file to write (a disk export also writes FILE.bmap).
    pub output: PathBuf,
    /// The board (its flash layout); required for `disk`, sizes `ext4` when given.
    pub board: Option<&'a Board>,
    /// The RAUC signer; required for `rauc`.
    pub rauc: Option<&'a rauc::RaucSigner>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The files written, the main one first.
    pub files: Vec<PathBuf>,
    /// Size of the main file.
    pub size: u64,
    /// sha256 of the main file.
    pub sha256: String,
    /// The image exported.
    pub image: String,
}

/// Exports the image of an OCI layout.
pub fn export(layout: &Path, opts: &ExportOptions) -> Result<Exported, ExportError> {
    // The spool goes where the output goes (beside it), never elsewhere.
    let spool_dir = opts
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let image = SourceImage::open(layout, spool_dir)?;
    export_image(&image, opts)
}

/// Exports an already opened image.
pub fn export_image(image: &SourceImage, opts: &ExportOptions) -> Result<Exported, ExportError> {
    if let Some(board) = opts.board {
        if board.name != image.board {
            return Err(ExportError::Usage(format!(
                "the image was built for board '{}', not '{}' ({})",
                image.board,
                board.name,
                board.path.display()
            )));
        }
    }
    let staging = rootfs::Staging::new(&opts.output)?;
    let main = staging.path().join("export");
    let mut extra: Vec<(PathBuf, PathBuf)> = Vec::new();
    match opts.format {
        ExportFormat::Tar => {
            let file = std::fs::File::create(&main).map_err(io_err(&main))?;
            let mut w = std::io::BufWriter::new(file);
            rootfs::write_tar(&image.tree, image.created, &mut w)?;
            std::io::Write::flush(&mut w).map_err(io_err(&main))?;
        }
        ExportFormat::Ext4 => {
            let tree_dir = staging.materialise(image)?;
            let size = match opts.board {
                Some(b) => Some(layout::FlashLayout::from_board(b)?.rootfs_size()?),
                None => None,
            };
            fsimage::ext4(
                image,
                &tree_dir,
                &main,
                size,
                &fsimage::Ext4Ids::for_slot(image, "rootfs"),
            )?;
        }
        ExportFormat::Squashfs => {
            let tree_dir = staging.materialise(image)?;
            fsimage::squashfs(&tree_dir, &main, image.created)?;
        }
        ExportFormat::Disk => {
            let board = opts.board.ok_or_else(|| {
                ExportError::Usage(
                    "--format disk needs --board BOARD.toml (its flash layout)".into(),
                )
            })?;
            let flash = layout::FlashLayout::from_board(board)?;
            let bmap_tmp = staging.path().join("export.bmap");
            disk::write_disk(image, &flash, board.arch, &staging, &main, &bmap_tmp)?;
            let mut bmap_dest = opts.output.clone().into_os_string();
            bmap_dest.push(".bmap");
            extra.push((bmap_tmp, PathBuf::from(bmap_dest)));
        }
        ExportFormat::Rauc => {
            let signer = opts.rauc.ok_or_else(|| {
                ExportError::Usage(
                    "--format rauc needs --signing-key RELEASE.key and --cert RELEASE.pem".into(),
                )
            })?;
            rauc::write_bundle(image, signer, &staging, &main)?;
        }
    }
    let (sha256, size) =
        crate::digest::sha256_reader(std::fs::File::open(&main).map_err(io_err(&main))?)
            .map_err(io_err(&main))?;
    let mut files = vec![opts.output.clone()];
    for (from, to) in &extra {
        std::fs::rename(from, to).map_err(io_err(to))?;
        files.push(to.clone());
    }
    if let Err(e) = std::fs::rename(&main, &opts.output) {
        for (_, to) in &extra {
            let _ = std::fs::remove_file(to);
        }
        return Err(io_err(&opts.output)(e));
    }
    Ok(Exported {
        files,
        size,
        sha256,
        image: image.digest.clone(),
    })
}

/// Runs a file-system tool with a clean, fixed environment; an error names the tool and
/// carries the last line it printed.
pub(crate) fn run_tool(
    cmd: &mut std::process::Command,
    stdin: Option<&[u8]>,
) -> Result<(), ExportError> {
    use std::io::Write;
    let tool = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .next()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let tool_err = |reason: String| ExportError::Tool {
        tool: tool.trim().to_string(),
        reason,
    };
    // Nothing of the caller's environment (a stray SOURCE_DATE_EPOCH, MKE2FS_CONFIG, MTOOLSRC)
    // may change the bytes: only what the caller set on `cmd`, plus a fixed PATH and locale.
    let chosen: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
        .collect();
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    for (k, v) in chosen {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        tool_err(if e.kind() == std::io::ErrorKind::NotFound {
            "not installed (ci/setup installs e2fsprogs, squashfs-tools, dosfstools, mtools, fdisk)"
                .to_string()
        } else {
            e.to_string()
        })
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(|e| tool_err(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| tool_err(e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Err(tool_err(format!("{}: {last}", out.status)))
}
