//! The factory disk image: the board's partition table (GPT or MBR, written by util-linux's
//! sfdisk with identifiers derived from the image digest), each partition's file system copied
//! in at its offset without filling holes, and the bmap of the result.
//!
//! Partition types follow the Discoverable Partitions Specification on GPT (the root type of
//! the board's architecture for both A/B slots, so either can be found as a root), and the
//! classic ids on MBR (0x0c FAT32 LBA, bootable, for boot; 0x83 for the rest).

use super::layout::{Content, FlashLayout, TableKind};
use super::rootfs::Staging;
use super::{bmap, fsimage, io_err, run_tool, ExportError, SourceImage};
use crate::arch::DebianArch;
use std::path::Path;
use std::process::Command;

/// GPT type of a FAT data partition (Microsoft basic data).
const GPT_FAT: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// GPT type of a generic Linux file system.
const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The Discoverable Partitions Specification's root partition type for an architecture.
fn gpt_root_type(arch: DebianArch) -> &'static str {
    match arch {
        DebianArch::Arm64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        DebianArch::Armhf | DebianArch::Armel => "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
        DebianArch::Amd64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    }
}

/// The sfdisk script of the layout.
pub fn sfdisk_script(image: &SourceImage, layout: &FlashLayout, arch: DebianArch) -> String {
    let mut s = String::new();
    match layout.table {
        TableKind::Gpt => {
            s.push_str("label: gpt\n");
            s.push_str(&format!(
                "label-id: {}\n",
                image.derived_uuid("gpt-disk").to_uppercase()
            ));
        }
        TableKind::Mbr => {
            s.push_str("label: dos\n");
            s.push_str(&format!(
                "label-id: 0x{}\n",
                &image.derived_uuid("mbr-disk")[..8]
            ));
        }
    }
    s.push_str("unit: sectors\nsector-size: 512\n\n");
    for (offset, p) in layout.placed() {
        let start = offset / 512;
        let size = p.size / 512;
        match layout.table {
            TableKind::Gpt => {
                let ty = match p.content {
                    Content::Boot => GPT_FAT,
                    Content::Rootfs => gpt_root_type(arch),
                    Content::Empty if p.name.starts_with("rootfs") => gpt_root_type(arch),
                    Content::Empty | Content::Ext4 => GPT_LINUX,
                };
                s.push_str(&format!(
                    "start={start}, size={size}, type={ty}, uuid={}, name=\"{}\"\n",
                    image
                        .derived_uuid(&format!("gpt-partition {}", p.name))
                        .to_uppercase(),
                    p.name
                ));
            }
            TableKind::Mbr => {
                let ty = if p.content == Content::Boot {
                    "c, bootable"
                } else {
                    "83"
                };
                s.push_str(&format!("start={start}, size={size}, type={ty}\n"));
            }
        }
    }
    s
}

/// Writes the disk image to `out` and its bmap to `bmap_out`.
pub fn write_disk(
    image: &SourceImage,
    layout: &FlashLayout,
    arch: DebianArch,
    staging: &Staging,
    out: &Path,
    bmap_out: &Path,
) -> Result<(), ExportError> {
    let mut parts = Vec::new();
    for (offset, p) in layout.placed() {
        let file = staging.path().join(format!("part-{}", p.name));
        match p.content {
            Content::Boot => {
                let label: String = p.name.to_uppercase().chars().take(11).collect();
                fsimage::boot_vfat(image, staging.path(), &file, p.size, &label)?;
            }
            Content::Rootfs => {
                let dir = staging.materialise(image)?;
                fsimage::ext4(
                    image,
                    &dir,
                    &file,
                    Some(p.size),
                    &fsimage::Ext4Ids::for_slot(image, &p.name),
                )?;
            }
            Content::Ext4 => fsimage::empty_ext4(
                &file,
                p.size,
                &fsimage::Ext4Ids::for_slot(image, &p.name),
                image.created,
            )?,
            Content::Empty => continue,
        }
        parts.push((offset, file));
    }
    let disk = std::fs::File::create(out).map_err(io_err(out))?;
    disk.set_len(layout.disk_size()).map_err(io_err(out))?;
    drop(disk);
    run_tool(
        Command::new("sfdisk")
            .args([
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                "--wipe",
                "never",
            ])
            .arg(out),
        Some(sfdisk_script(image, layout, arch).as_bytes()),
    )?;
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(io_err(out))?;
    for (offset, file) in parts {
        bmap::copy_sparse(&file, &disk, offset)?;
        let _ = std::fs::remove_file(&file);
    }
    disk.sync_all().map_err(io_err(out))?;
    bmap::write_bmap(out, bmap_out)?;
    Ok(())
}
