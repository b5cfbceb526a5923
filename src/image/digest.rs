//! Readers that verify sha256 digests while the bytes stream past.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

pub use crate::digest::{BadDigest, Digest};

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left, so that the digest covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// What a verified stream turned out to be, when it was not what it should have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
}

/// Checks a finished stream against the digest and size it should have had.
pub fn verify(actual: (Digest, u64), expected: &Digest, size: Option<u64>) -> Result<(), Mismatch> {
    let (digest, count) = actual;
    if let Some(size) = size
        && size != count
    {
        return Err(Mismatch::Size {
            expected: size,
            actual: count,
        });
    }
    if &digest != expected {
        return Err(Mismatch::Digest {
            expected: expected.clone(),
            actual: digest,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_while_reading() {
        let mut reader = HashingReader::new(&b"hello"[..]);
        let mut first = [0u8; 2];
        reader.read_exact(&mut first).unwrap();
        reader.drain().unwrap();
        let expected = Digest::parse(
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        .unwrap();
        assert_eq!(reader.finish(), (expected.clone(), 5));
        assert_eq!(Digest::of(b"hello"), expected);
        assert!(verify((expected.clone(), 5), &expected, Some(5)).is_ok());
        assert!(matches!(
            verify((expected.clone(), 5), &expected, Some(6)),
            Err(Mismatch::Size { .. })
        ));
        assert!(matches!(
            verify((Digest::of(b"x"), 5), &expected, None),
            Err(Mismatch::Digest { .. })
        ));
    }
}
