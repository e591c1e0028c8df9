//! SHA-256 helpers shared by every stage: lower-case hex digests and a writer that hashes what
//! passes through it (so a file is hashed while it is written, not read twice).

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// Lower-case hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 and length of everything a reader yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finish())
}

/// Passes writes through to `inner` while hashing and counting them.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The hex digest and byte count of everything written.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.len)
    }

    /// The hex digest, the count and the inner writer back.
    pub fn into_parts(self) -> (String, u64, W) {
        (hex::encode(self.hasher.finalize()), self.len, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through from `inner` while hashing and counting them (a blob is verified while
/// it is streamed, not read twice).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads what is left, then gives the hex digest and byte count of everything.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.len))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The hex part of a `sha256:` digest of 64 lower-case hex digits (the OCI spec's form), None
/// for anything else: a digest from an untrusted manifest never becomes a path or a URL part
/// unchecked.
pub fn sha256_digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_reader(&b"abc"[..]).unwrap().1, 3);
    }
}
