//! Block maps: which 4 KiB blocks of a sparse image hold data, and the bmap file (format 2.0,
//! as bmap-tools' `bmaptool copy` reads it) that lets a flasher write only those blocks.
//!
//! The data blocks are the file's allocated extents (`SEEK_DATA`/`SEEK_HOLE`), exactly as
//! `bmaptool create` finds them: the blocks the file-system tools wrote. Zero-filled blocks a
//! tool wrote stay mapped (a zeroed inode table must reach the device as zeros); holes are
//! skipped.

use super::{io_err, ExportError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The block size of the maps.
pub const BLOCK: u64 = 4096;

/// A run of mapped blocks, `first..=last` (block numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
}

impl Range {
    /// Byte offset of the range.
    pub fn offset(&self) -> u64 {
        self.first * BLOCK
    }

    /// Byte length of the range within an image of `image_size` bytes.
    pub fn len(&self, image_size: u64) -> u64 {
        ((self.last + 1) * BLOCK).min(image_size) - self.offset()
    }
}

/// The byte ranges of `file` that hold data, rounded out to whole blocks and merged.
pub fn data_ranges(file: &File) -> std::io::Result<Vec<Range>> {
    let size = file.metadata()?.len();
    let mut ranges: Vec<Range> = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // ENXIO: no data after `pos`.
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        // There is always a hole at the end of the file.
        let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start))?;
        let first = start / BLOCK;
        let last = end.div_ceil(BLOCK).saturating_sub(1);
        match ranges.last_mut() {
            Some(r) if r.last + 1 >= first => r.last = r.last.max(last),
            _ => ranges.push(Range { first, last }),
        }
        pos = end;
    }
    Ok(ranges)
}

/// Copies the data ranges of `src` into `dest` at byte offset `at` (holes stay holes).
pub fn copy_sparse(src: &Path, dest: &File, at: u64) -> Result<(), ExportError> {
    use std::os::unix::fs::FileExt;
    let mut file = File::open(src).map_err(io_err(src))?;
    let size = file.metadata().map_err(io_err(src))?.len();
    let mut buf = vec![0u8; 1 << 20];
    for r in data_ranges(&file).map_err(io_err(src))? {
        let mut off = r.offset();
        let end = off + r.len(size);
        file.seek(SeekFrom::Start(off)).map_err(io_err(src))?;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            file.read_exact(&mut buf[..n]).map_err(io_err(src))?;
            dest.write_all_at(&buf[..n], at + off)
                .map_err(|e| ExportError::Io {
                    path: src.to_path_buf(),
                    reason: format!("copying into the disk image: {e}"),
                })?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Writes the bmap of `image` (its data ranges, each with its sha256) to `out`.
pub fn write_bmap(image: &Path, out: &Path) -> Result<Vec<Range>, ExportError> {
    let mut file = File::open(image).map_err(io_err(image))?;
    let size = file.metadata().map_err(io_err(image))?.len();
    let ranges = data_ranges(&file).map_err(io_err(image))?;
    let mut body = String::new();
    let mut mapped = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for r in &ranges {
        let mut h = Sha256::new();
        let mut left = r.len(size);
        file.seek(SeekFrom::Start(r.offset()))
            .map_err(io_err(image))?;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            file.read_exact(&mut buf[..n]).map_err(io_err(image))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        mapped += r.last - r.first + 1;
        let span = if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        };
        body.push_str(&format!(
            "        <Range chksum=\"{}\"> {span} </Range>\n",
            hex::encode(h.finalize())
        ));
    }
    let zeros = "0".repeat(64);
    let text = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of a kiln disk image: `bmaptool copy IMAGE DEVICE` writes only the\n     mapped blocks and checks each range's sha256. -->\n\
             <bmap version=\"2.0\">\n\
             \x20   <ImageSize> {size} </ImageSize>\n\
             \x20   <BlockSize> {BLOCK} </BlockSize>\n\
             \x20   <BlocksCount> {} </BlocksCount>\n\
             \x20   <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\
             \x20   <ChecksumType> sha256 </ChecksumType>\n\
             \x20   <BmapFileChecksum> {checksum} </BmapFileChecksum>\n\
             \x20   <BlockMap>\n{body}    </BlockMap>\n</bmap>\n",
            size.div_ceil(BLOCK)
        )
    };
    // The file's own checksum is taken with the checksum field all zeros (bmap format 2.0).
    let checksum = hex::encode(Sha256::digest(text(&zeros).as_bytes()));
    std::fs::write(out, text(&checksum)).map_err(io_err(out))?;
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn maps_written_blocks_only_and_merges_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = File::create(&p).unwrap();
        f.set_len(64 * BLOCK).unwrap();
        f.write_all_at(&[1; 10], 0).unwrap();
        f.write_all_at(&[0; 4096], 5 * BLOCK).unwrap(); // written zeros stay mapped
        f.write_all_at(&[2; 8192], 6 * BLOCK).unwrap();
        f.write_all_at(&[3; 1], 63 * BLOCK + 7).unwrap();
        f.sync_all().unwrap();
        let r = data_ranges(&File::open(&p).unwrap()).unwrap();
        // Some file systems (tmpfs) report data at page granularity, others allocate more;
        // what must hold: every written block is mapped, and the big hole is not.
        let mapped = |b: u64| r.iter().any(|x| x.first <= b && b <= x.last);
        for b in [0, 5, 6, 7, 63] {
            assert!(mapped(b), "block {b} in {r:?}");
        }
        assert!(!mapped(30), "{r:?}");
        let bmap = dir.path().join("img.bmap");
        write_bmap(&p, &bmap).unwrap();
        let text = std::fs::read_to_string(&bmap).unwrap();
        assert!(text.contains("<ImageSize> 262144 </ImageSize>"), "{text}");
        assert!(text.contains("<BlocksCount> 64 </BlocksCount>"), "{text}");
    }
}
