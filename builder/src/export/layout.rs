//! The board's flash layout (`[flash]` in the board file), typed: the partition table, the
//! partitions in order with their sizes and what goes into each, and the largest device the
//! board may be flashed onto (a guard against writing to the wrong disk).
//!
//! ```toml
//! [flash]
//! table = "gpt"                 # gpt | mbr
//! max-device-size = 65536       # MiB; `kiln flash` refuses a larger device unless --force
//! partitions = [
//!   { name = "boot", size = 256 },          # FAT with the image's /boot
//!   { name = "rootfs-a", size = 2048 },     # ext4 of the root filesystem
//!   { name = "rootfs-b", size = 2048 },     # left empty: the A/B updater fills it
//!   { name = "data", size = 1024 },         # empty ext4
//! ]
//! ```
//! `content` (boot | rootfs | empty | ext4) overrides what the name implies.

use super::ExportError;
use crate::recipe::Board;
use std::path::PathBuf;

/// The partition table type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR table (at most four primary partitions).
    Mbr,
}

/// What a partition holds in the factory image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// A FAT file system with the image's /boot.
    Boot,
    /// An ext4 file system of the root filesystem.
    Rootfs,
    /// Nothing (not even a file system): the other A/B slot.
    Empty,
    /// An empty ext4 file system (data).
    Ext4,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Name (the GPT partition name and the file-system label).
    pub name: String,
    /// Size in bytes (a whole number of MiB).
    pub size: u64,
    /// What it holds.
    pub content: Content,
}

/// A board's flash layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashLayout {
    /// The board file, for messages.
    pub board: PathBuf,
    /// Partition table type.
    pub table: TableKind,
    /// Largest device (bytes) `kiln flash` writes to without --force.
    pub max_device_size: Option<u64>,
    /// Partitions in order.
    pub partitions: Vec<Partition>,
}

const MIB: u64 = 1 << 20;

impl FlashLayout {
    /// Reads the `[flash]` table of a board.
    pub fn from_board(board: &Board) -> Result<FlashLayout, ExportError> {
        let err = |key: &str, reason: &str| ExportError::Layout {
            board: board.path.clone(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let flash = &board.flash;
        if flash.is_empty() {
            return Err(err("", "the board has no [flash] layout"));
        }
        for key in flash.keys() {
            if !["table", "max-device-size", "partitions"].contains(&key.as_str()) {
                return Err(err(key, "unknown key"));
            }
        }
        let table = match flash.get("table").and_then(|v| v.as_str()) {
            Some("gpt") | None => TableKind::Gpt,
            Some("mbr") => TableKind::Mbr,
            Some(other) => return Err(err("table", &format!("'{other}' is not gpt or mbr"))),
        };
        let max_device_size = match flash.get("max-device-size") {
            None => None,
            Some(v) => match v.as_integer() {
                Some(n) if n > 0 => Some(n as u64 * MIB),
                _ => return Err(err("max-device-size", "must be a positive number of MiB")),
            },
        };
        let list = flash
            .get("partitions")
            .and_then(|v| v.as_array())
            .ok_or_else(|| err("partitions", "missing (a list of { name, size })"))?;
        let mut partitions: Vec<Partition> = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let key = |k: &str| format!("partitions[{i}].{k}");
            let t = item
                .as_table()
                .ok_or_else(|| err(&format!("partitions[{i}]"), "must be { name, size }"))?;
            for k in t.keys() {
                if !["name", "size", "content"].contains(&k.as_str()) {
                    return Err(err(&key(k), "unknown key"));
                }
            }
            let name = t
                .get("name")
                .and_then(|v| v.as_str())
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 16
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| {
                    err(
                        &key("name"),
                        "must be 1-16 characters of a-z, A-Z, 0-9, '-', '_'",
                    )
                })?
                .to_string();
            if partitions.iter().any(|p| p.name == name) {
                return Err(err(&key("name"), &format!("'{name}' appears twice")));
            }
            let size = match t.get("size").and_then(|v| v.as_integer()) {
                Some(n) if n > 0 => n as u64 * MIB,
                _ => return Err(err(&key("size"), "must be a positive number of MiB")),
            };
            let content = match t.get("content").map(|v| v.as_str()) {
                None => match name.as_str() {
                    "boot" => Content::Boot,
                    "rootfs" | "rootfs-a" => Content::Rootfs,
                    "rootfs-b" => Content::Empty,
                    _ => Content::Ext4,
                },
                Some(Some("boot")) => Content::Boot,
                Some(Some("rootfs")) => Content::Rootfs,
                Some(Some("empty")) => Content::Empty,
                Some(Some("ext4")) => Content::Ext4,
                Some(_) => {
                    return Err(err(&key("content"), "must be boot, rootfs, empty or ext4"));
                }
            };
            partitions.push(Partition {
                name,
                size,
                content,
            });
        }
        if partitions.is_empty() {
            return Err(err("partitions", "is empty"));
        }
        if table == TableKind::Mbr && partitions.len() > 4 {
            return Err(err(
                "partitions",
                "an mbr table holds at most 4 partitions (use gpt)",
            ));
        }
        if !partitions.iter().any(|p| p.content == Content::Rootfs) {
            return Err(err(
                "partitions",
                "no partition holds the root filesystem (name one rootfs or rootfs-a)",
            ));
        }
        let layout = FlashLayout {
            board: board.path.clone(),
            table,
            max_device_size,
            partitions,
        };
        if let Some(max) = layout.max_device_size {
            if layout.disk_size() > max {
                return Err(err(
                    "partitions",
                    &format!(
                        "the partitions need {} MiB, more than max-device-size {} MiB",
                        layout.disk_size() / MIB,
                        max / MIB
                    ),
                ));
            }
        }
        Ok(layout)
    }

    /// Size of the root filesystem's partition in bytes.
    pub fn rootfs_size(&self) -> Result<u64, ExportError> {
        self.partitions
            .iter()
            .find(|p| p.content == Content::Rootfs)
            .map(|p| p.size)
            .ok_or_else(|| ExportError::Layout {
                board: self.board.clone(),
                key: "partitions".into(),
                reason: "no rootfs partition".into(),
            })
    }

    /// Offset of the first partition: 1 MiB, the usual alignment (and room for the table).
    pub const FIRST_OFFSET: u64 = MIB;

    /// Size of the whole disk image: 1 MiB before the partitions, 1 MiB after them (room for
    /// GPT's backup table).
    pub fn disk_size(&self) -> u64 {
        Self::FIRST_OFFSET + self.partitions.iter().map(|p| p.size).sum::<u64>() + MIB
    }

    /// Each partition with its byte offset.
    pub fn placed(&self) -> Vec<(u64, &Partition)> {
        let mut at = Self::FIRST_OFFSET;
        self.partitions
            .iter()
            .map(|p| {
                let here = at;
                at += p.size;
                (here, p)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(flash: &str) -> Board {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(dir.path().join("k.gpg"), b"").unwrap();
        std::fs::write(
            &path,
            format!("name = \"b\"\narch = \"arm64\"\ncompatible = [\"x\"]\n[debian]\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\nkeyring = \"k.gpg\"\n{flash}"),
        )
        .unwrap();
        Board::load(&path).unwrap()
    }

    #[test]
    fn reads_the_shipped_layout_shape() {
        let b = board("[flash]\ntable = \"mbr\"\nmax-device-size = 4096\npartitions = [{ name = \"boot\", size = 64 }, { name = \"rootfs-a\", size = 512 }, { name = \"rootfs-b\", size = 512 }, { name = \"data\", size = 128 }]\n");
        let l = FlashLayout::from_board(&b).unwrap();
        assert_eq!(l.table, TableKind::Mbr);
        let contents: Vec<Content> = l.partitions.iter().map(|p| p.content).collect();
        assert_eq!(
            contents,
            [
                Content::Boot,
                Content::Rootfs,
                Content::Empty,
                Content::Ext4
            ]
        );
        assert_eq!(l.rootfs_size().unwrap(), 512 * MIB);
        assert_eq!(l.disk_size(), (1 + 64 + 512 + 512 + 128 + 1) * MIB);
        assert_eq!(l.placed()[1].0, 65 * MIB);
    }

    #[test]
    fn refuses_bad_layouts_naming_the_key() {
        for (flash, key) in [
            ("", "the board has no [flash] layout"),
            ("[flash]\ntable = \"zfs\"\npartitions = []", "table"),
            ("[flash]\npartitions = [{ name = \"rootfs\", size = 0 }]", "partitions[0].size"),
            ("[flash]\npartitions = [{ name = \"a b\", size = 1 }]", "partitions[0].name"),
            ("[flash]\npartitions = [{ name = \"data\", size = 1 }]", "no partition holds"),
            ("[flash]\nmax-device-size = 1\npartitions = [{ name = \"rootfs\", size = 8 }]", "more than max-device-size"),
            ("[flash]\ntable = \"mbr\"\npartitions = [{ name = \"rootfs\", size = 1 }, { name = \"b\", size = 1 }, { name = \"c\", size = 1 }, { name = \"d\", size = 1 }, { name = \"e\", size = 1 }]", "at most 4"),
            ("[flash]\npartitions = [{ name = \"rootfs\", size = 1, fs = \"x\" }]", "partitions[0].fs: unknown key"),
        ] {
            let e = FlashLayout::from_board(&board(flash)).unwrap_err().to_string();
            assert!(e.contains(key), "{flash}: {e}");
            assert!(e.contains("b.toml"), "{e}");
        }
    }
}
