//! Writing a download so that its zero blocks stay holes: a root partition's ext4 is
//! mostly holes in the store (1.7 GiB, ~1 GiB of data), and it must not fill in on the way
//! through a registry. The bytes are the same; only the disk use differs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The granularity of holes (the file systems' block).
const BLOCK: u64 = 4096;

/// Writes a stream of bytes into `file` from `offset` on, skipping all-zero blocks.
#[derive(Debug)]
pub(crate) struct SparseWriter<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> SparseWriter<'a> {
    pub(crate) fn at(file: &'a File, offset: u64) -> Self {
        Self { file, offset }
    }

    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // Up to the next block boundary, so that a zero block is seen whole.
            let room = BLOCK - self.offset % BLOCK;
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let (piece, rest) = data.split_at(n);
            if piece.iter().any(|&b| b != 0) {
                self.file.write_all_at(piece, self.offset)?;
            }
            self.offset += n as u64;
            data = rest;
        }
        Ok(())
    }

    /// Sets the length (a trailing run of zeros is a hole too) and syncs.
    pub(crate) fn finish(self) -> io::Result<u64> {
        self.file.set_len(self.offset)?;
        self.file.sync_all()?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_stay_holes_and_the_bytes_are_the_same() -> io::Result<()> {
        let mut data = vec![0u8; 1 << 20];
        data[5000] = 1;
        data[(1 << 20) - 1] = 2;
        let file = tempfile::tempfile()?;
        let mut w = SparseWriter::at(&file, 0);
        // Odd chunk sizes: boundaries fall mid-block.
        for chunk in data.chunks(3001) {
            w.write(chunk)?;
        }
        assert_eq!(w.finish()?, 1 << 20);
        let mut back = Vec::new();
        (&file).read_to_end(&mut back)?;
        assert!(back == data, "the bytes differ");
        assert!(file.metadata()?.blocks() * 512 <= 64 * 1024, "filled in");
        // Resumed from a length: what follows is appended.
        let w = SparseWriter::at(&file, 1 << 20);
        assert_eq!(w.finish()?, 1 << 20);
        Ok(())
    }
}
