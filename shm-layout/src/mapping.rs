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
///
/// Each stretch of 256 MiB (`DROP_EVERY`) is then written to disk and dropped from the page cache
/// (`fdatasync`, `POSIX_FADV_DONTNEED`), so the mapping later faults the pages in afresh. Left
/// in the cache, the pages would stay in the large folios (up to 2 MiB) that buffered `write`
/// builds on file systems with large-folio support (ext4 since Linux 6.16, XFS): a store
/// through the mapping dirties the whole folio, and `durability: "power"`'s msync of one slot
/// page then writes all of it (measured on Linux 6.18, ext4: one-page msync wrote 2,052 KiB
/// and took 4.6 ms p50, against 8 KiB and 0.6 ms for pages faulted in through a mapping).
pub fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 4 << 20];
    let mut done = 0u64;
    let mut written_since_drop = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
        written_since_drop += n as u64;
        if written_since_drop >= DROP_EVERY || done == len {
            drop_from_cache(file, offset + done - written_since_drop, written_since_drop)?;
            written_since_drop = 0;
        }
    }
    Ok(())
}

/// Bytes of zeros [`write_zeros`] writes between two drops from the page cache: bounds the
/// dirty memory a large file's creation builds up.
const DROP_EVERY: u64 = 256 << 20;

/// Writes `len` bytes of `file` from `offset` to disk and drops them from the page cache.
fn drop_from_cache(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    file.sync_data()?;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file too large",
        ));
    };
    posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(io::Error::from)
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

/// Whether the page of `file` holding byte `offset` is dirty in the page cache (written in
/// memory, not yet on disk). A diagnostic for tests of the durability modes; needs root
/// (`/proc/self/pagemap` hides frame numbers from others, `/proc/kpageflags` is root-only).
/// When the page cache holds the file in large folios, the answer is the folio's: a write
/// anywhere in the folio makes every page of it "dirty" (and writeback cleans it whole).
pub fn page_is_dirty(file: &File, offset: u64) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: u64 = 4096;
    const KPF_DIRTY: u64 = 1 << 4;
    const PM_PRESENT: u64 = 1 << 63;
    const PM_PFN_MASK: u64 = (1 << 55) - 1;
    let page_off = offset / PAGE * PAGE;
    let map = MmapOptions::new()
        .offset(page_off)
        .len(PAGE as usize)
        .map_raw_read_only(file)?;
    // SAFETY: the pointer is the start of a live, readable one-page mapping owned by `map`;
    // a volatile read of one byte faults the page in so that pagemap reports its frame.
    let _ = unsafe { std::ptr::read_volatile(map.as_ptr()) };
    let vaddr = map.as_ptr() as u64;
    let read_u64 = |path: &str, index: u64| -> io::Result<u64> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(index * 8))?;
        let mut b = [0u8; 8];
        f.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    };
    let entry = read_u64("/proc/self/pagemap", vaddr / PAGE)?;
    let pfn = entry & PM_PFN_MASK;
    if entry & PM_PRESENT == 0 || pfn == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no page frame number in /proc/self/pagemap (needs root)",
        ));
    }
    let flags = read_u64("/proc/kpageflags", pfn)?;
    drop(map);
    Ok(flags & KPF_DIRTY != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this test can read page flags (root); if not, it may skip only when the run
    /// says so (`PRODHCP_SKIP_SYSTEM_TESTS=1`).
    fn can_read_page_flags() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("PRODHCP_SKIP_SYSTEM_TESTS").is_some_and(|v| v == "1"),
            "page_is_dirty needs root; run as root or set PRODHCP_SKIP_SYSTEM_TESTS=1"
        );
        eprintln!("SKIPPED: page_is_dirty needs root (PRODHCP_SKIP_SYSTEM_TESTS=1)");
        false
    }

    #[test]
    fn a_written_page_is_dirty_until_flushed() {
        if !can_read_page_flags() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("file");
        file.set_len(3 * 4096).expect("len");
        let m = WordMapping::map(&file, 3 * 4096).expect("map");
        m.flush().expect("flush");
        m.words()[512].store(7, std::sync::atomic::Ordering::Relaxed); // page 1
        assert!(page_is_dirty(&file, 4096).expect("flags"));
        assert!(!page_is_dirty(&file, 2 * 4096).expect("flags"));
        m.flush_range(4096 + 8, 8).expect("flush range");
        assert!(!page_is_dirty(&file, 4096).expect("flags"));
    }

    /// A store through the mapping into a file made by `write_zeros` dirties its page, not the
    /// megabytes around it: without the drop from the page cache the pages stay in the large
    /// folios buffered `write` built (2 MiB on Linux 6.18 ext4), and a store anywhere in one
    /// dirties all of it (so `durability: "power"`'s msync of one slot wrote 2 MiB).
    #[test]
    fn a_store_into_written_zeros_dirties_its_page_not_the_folio_of_the_write() {
        if !can_read_page_flags() {
            return;
        }
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let fs = nix::sys::statfs::statfs(dir.path()).expect("statfs");
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("SKIPPED: /var/tmp is tmpfs: no disk behind the page cache to write to");
            return;
        }
        const MIB: u64 = 1 << 20;
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("file");
        preallocate(&file, 8 * MIB).expect("preallocate");
        write_zeros(&file, 0, 8 * MIB).expect("zeros");
        let m = WordMapping::map(&file, 8 * MIB as usize).expect("map");
        // A page in the middle of the 2 MiB-aligned stretch 4–6 MiB; its neighbours 512 KiB
        // away are in the same stretch (the same folio, had `write` left one there).
        let page = 5 * MIB;
        m.words()[(page / 8) as usize].store(7, std::sync::atomic::Ordering::Relaxed);
        assert!(page_is_dirty(&file, page).expect("flags"));
        for other in [page - MIB / 2, page + MIB / 2] {
            assert!(
                !page_is_dirty(&file, other).expect("flags"),
                "the page at {other} is dirty too: the store dirtied a large folio"
            );
        }
    }
}
