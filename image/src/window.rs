//! A byte window of a larger stream: a partition inside a disk image, seen from position 0.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// `inner[start .. start + len]` as its own `Read + Write + Seek` stream. Reads stop at the
/// end; writes past the end fail, so a filesystem writer cannot spill into the next partition.
#[derive(Debug)]
pub struct Window<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Window<T> {
    pub fn new(mut inner: T, start: u64, len: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(start))?;
        Ok(Self {
            inner,
            start,
            len,
            pos: 0,
        })
    }
    pub fn into_inner(self) -> T {
        self.inner
    }
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<T: Read + Seek> Read for Window<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left()).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<T: Write + Seek> Write for Window<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left()).unwrap_or(usize::MAX));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let w = self.inner.write(&buf[..n])?;
        self.pos += w as u64;
        Ok(w)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Window<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )
        })?;
        self.inner.seek(SeekFrom::Start(self.start + new))?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn bounded() {
        let mut w = Window::new(Cursor::new(vec![0u8; 16]), 4, 8).unwrap();
        assert_eq!(w.write(&[1; 10]).unwrap(), 8);
        assert!(w.write(&[1]).is_err());
        w.seek(SeekFrom::End(-2)).unwrap();
        let mut b = Vec::new();
        w.read_to_end(&mut b).unwrap();
        assert_eq!(b, [1, 1]);
        let v = w.into_inner().into_inner();
        assert_eq!(&v[..4], &[0; 4]);
        assert_eq!(&v[4..12], &[1; 8]);
        assert_eq!(&v[12..], &[0; 4]);
    }
}
