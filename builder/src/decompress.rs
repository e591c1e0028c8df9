//! Stream decompression by file-name suffix, for the compressions Debian archives use:
//! Packages indices (`.xz`, `.gz`, `.bz2`) and .deb members (`.gz`, `.xz`, `.zst`, `.bz2`, none).

use std::io::{self, Read};

/// A compression a Debian archive uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// xz (LZMA2).
    Xz,
    /// Zstandard (Ubuntu and recent Debian tooling).
    Zstd,
    /// bzip2, found in old archives.
    Bzip2,
}

impl Compression {
    /// Detects the compression from a member or file name suffix; None when unknown.
    pub fn from_name(name: &str) -> Option<Compression> {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        Some(match ext {
            "gz" => Compression::Gzip,
            "xz" => Compression::Xz,
            "zst" => Compression::Zstd,
            "bz2" => Compression::Bzip2,
            "tar" | "" => Compression::None,
            _ if !name.contains('.') => Compression::None,
            _ => return None,
        })
    }

    /// Wraps a reader with the matching decoder.
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn roundtrips_every_codec() {
        let data = b"Package: x\nVersion: 1\n".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        for (name, bytes) in [
            ("a.gz", gz),
            ("a.xz", xz),
            ("a.zst", zst),
            ("a.bz2", bz),
            ("a.tar", data.clone()),
        ] {
            let c = Compression::from_name(name).unwrap();
            let mut out = Vec::new();
            c.decoder(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{name}");
        }
        assert_eq!(Compression::from_name("data.tar.lz4"), None);
    }
}
