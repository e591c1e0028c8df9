//! `kiln flash`: writes a disk image onto a block device (an SD card, a USB eMMC reader) and
//! reads it back, after the checks that keep a hardware engineer from overwriting the wrong
//! disk: it must be a block device, none of it mounted, used as swap or held by device-mapper,
//! not the disk the running system lives on, large enough, and not larger than the board's
//! `max-device-size` unless forced (a 64 GiB limit tells an SD card from a 2 TB system disk).
//!
//! Only the mapped blocks of the image are written (as `bmaptool copy` does), each range is
//! read back from the device (page cache dropped first) and compared by sha256.

use crate::export::bmap::{data_ranges, Range};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a device was refused or the write failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The device is not safe to write (mounted, the system disk, too large, ...).
    #[error("refusing {device}: {reason}")]
    Refused {
        /// The device.
        device: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading, writing or verifying failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file or device.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// What was read back differs from what was written.
    #[error("{device}: read-back differs from the image at bytes {offset}..{end}")]
    Mismatch {
        /// The device.
        device: PathBuf,
        /// Start of the range.
        offset: u64,
        /// End of the range.
        end: u64,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FlashError + '_ {
    move |e| FlashError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// What the checks found out about the target.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its path.
    pub path: PathBuf,
    /// Its kernel name (`sdb`, `mmcblk0`, `loop3`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The limits the board sets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest device written without `force`.
    pub max_device_size: Option<u64>,
    /// Write to a larger device anyway.
    pub force: bool,
}

/// `major:minor` of a dev_t, as /proc and /sys write it.
fn dev_string(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// The kernel name of a block device and those of its partitions.
fn names_with_partitions(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if let Ok(entries) = std::fs::read_dir(format!("/sys/class/block/{name}")) {
        for e in entries.flatten() {
            if e.path().join("partition").exists() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names
}

fn sys_dev(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The whole-disk kernel name of a `major:minor` (a partition's parent, or itself).
fn disk_of(majmin: &str) -> Option<String> {
    let link = std::fs::canonicalize(format!("/sys/dev/block/{majmin}")).ok()?;
    if link.join("partition").exists() {
        link.parent()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    } else {
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }
}

/// Runs every safety check on `path` for an image of `image_size` bytes.
pub fn check_device(path: &Path, image_size: u64, limits: Limits) -> Result<Device, FlashError> {
    let refuse = |reason: String| FlashError::Refused {
        device: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.file_type().is_block_device() {
        return Err(refuse(
            "not a block device (to write an image file, use `kiln export --format disk`)".into(),
        ));
    }
    let majmin = dev_string(meta.rdev());
    let name = std::fs::canonicalize(format!("/sys/dev/block/{majmin}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| refuse(format!("no /sys/dev/block/{majmin} entry")))?;
    if std::path::Path::new(&format!("/sys/class/block/{name}/partition")).exists() {
        return Err(refuse(format!(
            "{name} is a partition; give the whole disk (/dev/{})",
            disk_of(&majmin).unwrap_or_else(|| "…".into())
        )));
    }
    let names = names_with_partitions(&name);
    let devs: Vec<(String, String)> = names
        .iter()
        .filter_map(|n| sys_dev(n).map(|d| (d, n.clone())))
        .collect();

    // The running system: the disk under / (and /boot, /usr if separate).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        let (dev, mount_point) = (f[2], f[4]);
        if ["/", "/boot", "/usr"].contains(&mount_point)
            && disk_of(dev).as_deref() == Some(name.as_str())
        {
            return Err(refuse(format!(
                "it holds the running system ({mount_point} is on it)"
            )));
        }
    }
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        if let Some((_, part)) = devs.iter().find(|(d, _)| d == f[2]) {
            return Err(refuse(format!(
                "/dev/{part} is mounted at {}; unmount it first",
                f[4].replace("\\040", " ")
            )));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for part in &names {
        if swaps
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&format!("/dev/{part}")))
        {
            return Err(refuse(format!("/dev/{part} is in use as swap")));
        }
        let holders = std::fs::read_dir(format!("/sys/class/block/{part}/holders"))
            .map(|d| d.count())
            .unwrap_or(0);
        if holders > 0 {
            return Err(refuse(format!(
                "/dev/{part} is held by device-mapper (LVM, dm-crypt); release it first"
            )));
        }
    }

    let size = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .ok_or_else(|| refuse("cannot read its size".into()))?;
    if size < image_size {
        return Err(refuse(format!(
            "it holds {} MiB, the image needs {} MiB",
            size >> 20,
            image_size.div_ceil(1 << 20)
        )));
    }
    if let Some(max) = limits.max_device_size {
        if size > max && !limits.force {
            return Err(refuse(format!(
                "it holds {} MiB, more than the board's max-device-size {} MiB: is it really the \
                 robot's card? (--force writes anyway)",
                size >> 20,
                max >> 20
            )));
        }
    }
    Ok(Device {
        path: path.to_path_buf(),
        name,
        size,
    })
}

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct Flashed {
    /// Bytes written (mapped blocks only).
    pub written: u64,
    /// Size of the image.
    pub image_size: u64,
}

fn bar(total: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what:6} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Writes the mapped blocks of `image` onto the checked `device`, then reads them back and
/// compares. The device is opened exclusively (the kernel refuses if anything mounts it).
pub fn flash(image: &Path, device: &Device, progress: bool) -> Result<Flashed, FlashError> {
    let mut src = File::open(image).map_err(io_err(image))?;
    let image_size = src.metadata().map_err(io_err(image))?.len();
    let ranges: Vec<Range> = data_ranges(&src).map_err(io_err(image))?;
    let total: u64 = ranges.iter().map(|r| r.len(image_size)).sum();
    let path = &device.path;
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(|e| FlashError::Refused {
            device: path.clone(),
            reason: format!("cannot open it exclusively ({e}); is it in use?"),
        })?;
    let mut buf = vec![0u8; 4 << 20];
    let mut hashes = Vec::with_capacity(ranges.len());
    let writing = bar(total, "write", progress);
    for r in &ranges {
        let (start, len) = (r.offset(), r.len(image_size));
        src.seek(SeekFrom::Start(start)).map_err(io_err(image))?;
        dev.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        let mut h = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            src.read_exact(&mut buf[..n]).map_err(io_err(image))?;
            h.update(&buf[..n]);
            dev.write_all(&buf[..n]).map_err(io_err(path))?;
            left -= n as u64;
            writing.inc(n as u64);
        }
        hashes.push(h.finalize());
    }
    dev.sync_all().map_err(io_err(path))?;
    writing.finish_and_clear();
    drop_cache(&dev);
    let verifying = bar(total, "verify", progress);
    for (r, expected) in ranges.iter().zip(hashes) {
        let (start, len) = (r.offset(), r.len(image_size));
        dev.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        let mut h = Sha256::new();
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            dev.read_exact(&mut buf[..n]).map_err(io_err(path))?;
            h.update(&buf[..n]);
            left -= n as u64;
            verifying.inc(n as u64);
        }
        if h.finalize() != expected {
            return Err(FlashError::Mismatch {
                device: path.clone(),
                offset: start,
                end: start + len,
            });
        }
    }
    verifying.finish_and_clear();
    Ok(Flashed {
        written: total,
        image_size,
    })
}

/// Drops the device's cached pages so the read-back comes from the medium.
fn drop_cache(dev: &File) {
    // BLKFLSBUF = _IO(0x12, 97): flush and invalidate the buffer cache of a block device.
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: ioctl and fadvise on an open descriptor; failures only mean a cached read-back.
    unsafe {
        libc::ioctl(dev.as_raw_fd(), BLKFLSBUF as _, 0);
        libc::posix_fadvise(dev.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}
