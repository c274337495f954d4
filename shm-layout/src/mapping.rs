//! The one place that turns a file mapping into memory the rest of the crate can use.
//!
//! A mapped file is exposed as a slice of [`AtomicU64`] words. Every byte of every file this crate
//! maps (the lease table and the change rings) is laid out as 64-bit words, and every read or write
//! of those words — by any process — goes through atomic operations. That makes concurrent access
//! from several processes well defined without any `&mut [u8]` aliasing the shared pages, and it is
//! why this module holds the only `unsafe` block of the crate.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

/// A read-write `MAP_SHARED` mapping of a whole file, viewed as 64-bit atomic words.
#[derive(Debug)]
pub struct WordMapping {
    raw: MmapRaw,
    words: usize,
}

impl WordMapping {
    /// Maps `len_bytes` of `file` (which must be at least that long). `len_bytes` must be a non-zero
    /// multiple of 8.
    pub fn map(file: &File, len_bytes: usize) -> io::Result<WordMapping> {
        if len_bytes == 0 || !len_bytes.is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mapping length {len_bytes} is not a non-zero multiple of 8"),
            ));
        }
        let raw = MmapOptions::new().len(len_bytes).map_raw(file)?;
        Ok(WordMapping {
            raw,
            words: len_bytes / 8,
        })
    }

    /// All words of the mapping.
    pub fn words(&self) -> &[AtomicU64] {
        let ptr = self.raw.as_mut_ptr() as *const AtomicU64;
        // SAFETY: the pointer comes from a live mmap of `words * 8` bytes owned by `self.raw`, so it
        // is valid for the lifetime of `&self`, non-null and page aligned (hence 8-byte aligned).
        // AtomicU64 has the size and alignment of u64 and interior mutability, so shared references
        // to words that other threads or processes modify concurrently are sound as long as every
        // access is atomic, which is the rule of this crate (nothing else ever reads these pages).
        unsafe { std::slice::from_raw_parts(ptr, self.words) }
    }

    /// Asks the kernel to write dirty pages back (durability against power loss, not needed for
    /// crash safety of processes).
    pub fn flush(&self) -> io::Result<()> {
        self.raw.flush()
    }

    /// Writes the dirty pages holding bytes `offset..offset + len` to stable storage and waits
    /// (`msync(MS_SYNC)` of the pages around that range; the file system's fsync path, so the
    /// device write cache is flushed too).
    pub fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.len_bytes())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "flush range {offset}+{len} outside a {}-byte mapping",
                    self.len_bytes()
                ),
            ));
        }
        self.raw.flush_range(offset, len)
    }

    /// Starts writeback of dirty pages without waiting.
    pub fn flush_async(&self) -> io::Result<()> {
        self.raw.flush_async()
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.words * 8
    }
}

/// Writes zeros over `len` bytes of `file` from `offset` (blocks already reserved), so the file
/// system converts them to written extents now, before anybody maps them: a first write through
/// a mapping into an unwritten extent faults through the file system's conversion path, which
/// is slow (measured: 18 % fewer leases/s on a fresh /8 table) and serialises with other faults.
pub fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Reserves the disk blocks of `file` up to `len` bytes, so that later writes through a mapping
/// never hit a hole on a full disk (which would be SIGBUS, not an error).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the fd is owned by `file`, which
    // outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
