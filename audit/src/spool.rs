//! The audit spool: an on-disk, bounded, append-only log of sequence-numbered records that the
//! audit process writes before it advances its ring cursor, and that each syslog transport
//! reads from its own [`SpoolCursor`].
//!
//! # Layout
//!
//! A directory of segment files `seg-<seq, 20 digits>.log`. A segment's name is the seq of its
//! first entry (an empty segment's name is a lower bound: the next seq it may take); every
//! entry of a segment is below the next segment's name. Each entry is one frame:
//!
//! ```text
//! u32 payload length LE | u32 crc32 LE (crc32fast over seq LE + payload) | u64 seq LE | payload
//! ```
//!
//! Appends go to the newest segment; past `segment_bytes` a new segment is started.
//! [`Spool::trim`] and [`Spool::drop_oldest`] delete whole segments, never part of one.
//!
//! # Crash safety
//!
//! [`Spool::open`] scans the newest segment fully and cuts a torn or corrupt tail (a crash in
//! the middle of a write, a zero-filled block), reporting the bytes cut. Older segments are
//! not scanned at open (their name and size are enough); damage in one is an error when it is
//! read, naming the file and offset. An entry is durable after [`Spool::sync`]; before it, it
//! is already visible to [`Spool::read`] on the same `Spool`.
//!
//! One process owns a spool directory; the spool takes no lock (the supervisor runs one audit
//! process).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The largest payload [`Spool::append`] takes: 64 KiB.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// Bytes of frame header before each payload (length, crc, seq).
pub const FRAME_HEADER: usize = 16;

/// How much a scan (open, seek) asks the kernel for at once.
const SCAN_CHUNK: usize = 256 << 10;

/// The least a [`Spool::read`] asks the kernel for at once.
const MIN_READ_CHUNK: usize = 4 << 10;

/// Segment ids, unique in the process, so a cursor from another `Spool` never matches.
static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What went wrong in the spool.
#[derive(thiserror::Error, Debug)]
pub enum SpoolError {
    /// A file system call failed.
    #[error("audit spool: {op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `fdatasync`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`Spool::append`] with a seq not above the last one.
    #[error("audit spool: seq {seq} is not above the last seq {last}")]
    SeqNotIncreasing {
        /// The seq offered.
        seq: u64,
        /// The spool's last seq.
        last: u64,
    },
    /// [`Spool::append`] with a payload over [`MAX_PAYLOAD`].
    #[error("audit spool: payload of {len} bytes is over the limit of {max}")]
    PayloadTooBig {
        /// The payload's length.
        len: usize,
        /// [`MAX_PAYLOAD`].
        max: usize,
    },
    /// A damaged frame in a segment other than the newest one's tail.
    #[error("audit spool: corrupt segment {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad frame in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOpened {
    /// The highest seq appended so far, 0 when none ever was. After everything was dropped
    /// (an empty newest segment) it is the seq before that segment's name, so seq numbers
    /// stay increasing across a restart.
    pub last_seq: u64,
    /// The oldest entry's seq, `None` when the spool holds no entry.
    pub first_seq: Option<u64>,
    /// Entries held: the newest segment's counted, each older one's taken as its seq span
    /// (the next segment's name − its own), exact when seq numbers have no gaps.
    pub entries: u64,
    /// Bytes cut from the newest segment's torn or corrupt tail (0 after a clean stop).
    pub truncated_bytes: u64,
}

/// A reader's position in the spool: after some seq. Kept by the reader between
/// [`Spool::read`] calls; made by [`Spool::cursor_after`].
#[derive(Debug, Clone)]
pub struct SpoolCursor {
    /// The last seq read (or the seq the cursor was made after).
    after: u64,
    /// The segment the offset is in, by id; `None` or unknown = re-seek by `after`.
    segment: Option<u64>,
    /// Byte offset of the next frame in that segment.
    offset: u64,
    /// That segment, open for reading.
    file: Option<Arc<File>>,
}

impl SpoolCursor {
    /// The seq this cursor is after: the last one read, or the one it was made after.
    pub fn after_seq(&self) -> u64 {
        self.after
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    id: u64,
    /// Its first entry's seq (a lower bound while empty).
    first: u64,
    /// Its last entry's seq, when known (not for older segments found at open).
    last: Option<u64>,
    /// Bytes of whole frames in it.
    size: u64,
    path: PathBuf,
}

/// The spool: see the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; never empty; the last one is the newest, open in `file`.
    segments: Vec<Segment>,
    file: File,
    last_seq: u64,
    bytes: u64,
    /// `file` was written since the last sync.
    dirty: bool,
    /// Segments were made, renamed or deleted since the last sync.
    dir_dirty: bool,
    frame: Vec<u8>,
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn frame_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A bad frame met while reading a segment.
enum FrameFault {
    /// The frame is damaged or cut short.
    Bad { offset: u64, reason: String },
    /// The read itself failed.
    Io(SpoolError),
}

/// One frame as read: (its offset, seq, payload).
type Frame<'b> = (u64, u64, &'b [u8]);

/// Reads frames of one segment from an offset up to a known end, in chunks.
struct FrameReader<'a> {
    file: &'a File,
    path: &'a Path,
    /// Offset of the next frame.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    /// How much to read at once (more when a frame needs it).
    chunk: usize,
}

impl<'a> FrameReader<'a> {
    fn new(file: &'a File, path: &'a Path, pos: u64, end: u64, chunk: usize) -> Self {
        FrameReader {
            file,
            path,
            pos,
            end,
            buf: Vec::new(),
            buf_at: pos,
            chunk,
        }
    }

    /// Makes `buf` hold `[pos, pos + n)`; false when the segment ends first.
    fn fill(&mut self, n: usize) -> Result<bool, FrameFault> {
        let have_from = self.pos - self.buf_at;
        let have = (self.buf.len() as u64).saturating_sub(have_from);
        if have >= n as u64 {
            return Ok(true);
        }
        if self.pos + n as u64 > self.end {
            return Ok(false);
        }
        let want = (n.max(self.chunk) as u64).min(self.end - self.pos) as usize;
        self.buf.clear();
        self.buf.resize(want, 0);
        self.buf_at = self.pos;
        match self.file.read_exact_at(&mut self.buf, self.pos) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.buf.clear();
                Ok(false)
            }
            Err(e) => Err(FrameFault::Io(io_err("read", self.path)(e))),
        }
    }

    /// The next frame as (offset, seq, payload), `None` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameFault> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let offset = self.pos;
        let cut = |what: &str| FrameFault::Bad {
            offset,
            reason: format!("{what} cut short"),
        };
        if !self.fill(FRAME_HEADER)? {
            return Err(cut("frame header"));
        }
        let h = (self.pos - self.buf_at) as usize;
        let word = |i: usize| {
            u32::from_le_bytes([
                self.buf[h + i],
                self.buf[h + i + 1],
                self.buf[h + i + 2],
                self.buf[h + i + 3],
            ])
        };
        let len = word(0) as usize;
        let crc = word(4);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&self.buf[h + 8..h + 16]);
        let seq = u64::from_le_bytes(seq_bytes);
        if len > MAX_PAYLOAD {
            return Err(FrameFault::Bad {
                offset,
                reason: format!("frame length {len} is over {MAX_PAYLOAD}"),
            });
        }
        if !self.fill(FRAME_HEADER + len)? {
            return Err(cut("payload"));
        }
        let p = (self.pos - self.buf_at) as usize + FRAME_HEADER;
        let payload = &self.buf[p..p + len];
        if frame_crc(seq, payload) != crc {
            return Err(FrameFault::Bad {
                offset,
                reason: format!("crc mismatch (seq field {seq})"),
            });
        }
        self.pos += (FRAME_HEADER + len) as u64;
        Ok(Some((offset, seq, payload)))
    }
}

fn bad_to_err(path: &Path, fault: FrameFault) -> SpoolError {
    match fault {
        FrameFault::Io(e) => e,
        FrameFault::Bad { offset, reason } => SpoolError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        },
    }
}

fn open_segment_file(path: &Path, create: bool) -> Result<File, SpoolError> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).mode(0o640);
    if create {
        o.create_new(true);
    }
    o.open(path).map_err(io_err("open", path))
}

impl Spool {
    /// The segment size used when the configuration says nothing: 16 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

    /// Opens (or makes, mode 0750) the spool in `dir`, holding at most `max_bytes` (see
    /// [`Spool::is_full`]) in segments of about `segment_bytes`. Cuts a torn tail of the
    /// newest segment; says what it found.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<(Spool, SpoolOpened), SpoolError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
        let mut found = Vec::new();
        for ent in std::fs::read_dir(dir).map_err(io_err("read directory", dir))? {
            let ent = ent.map_err(io_err("read directory", dir))?;
            let Some(first) = ent.file_name().to_str().and_then(parse_segment_name) else {
                continue;
            };
            let path = ent.path();
            let size = ent.metadata().map_err(io_err("stat", &path))?.len();
            found.push(Segment {
                id: next_id(),
                first,
                last: None,
                size,
                path,
            });
        }
        found.sort_by_key(|s| s.first);
        let mut dir_dirty = false;
        if found.is_empty() {
            let path = dir.join(segment_name(1));
            open_segment_file(&path, true)?;
            dir_dirty = true;
            found.push(Segment {
                id: next_id(),
                first: 1,
                last: None,
                size: 0,
                path,
            });
        }
        let newest = found.last_mut().expect("at least one segment");
        let file = open_segment_file(&newest.path, false)?;
        let disk_size = file.metadata().map_err(io_err("stat", &newest.path))?.len();
        let (mut valid_end, mut count, mut first, mut last) = (0u64, 0u64, None, None);
        {
            let mut r = FrameReader::new(&file, &newest.path, 0, disk_size, SCAN_CHUNK);
            loop {
                match r.next_frame() {
                    Ok(Some((_, seq, _))) => {
                        let in_order =
                            seq != 0 && seq >= newest.first && last.is_none_or(|l: u64| seq > l);
                        if !in_order {
                            break;
                        }
                        first.get_or_insert(seq);
                        last = Some(seq);
                        count += 1;
                        valid_end = r.pos;
                    }
                    Ok(None) | Err(FrameFault::Bad { .. }) => break,
                    Err(FrameFault::Io(e)) => return Err(e),
                }
            }
        }
        let truncated_bytes = disk_size - valid_end;
        if truncated_bytes > 0 {
            file.set_len(valid_end)
                .map_err(io_err("truncate", &newest.path))?;
            file.sync_data()
                .map_err(io_err("fdatasync", &newest.path))?;
        }
        newest.size = valid_end;
        newest.last = last;
        if let Some(f) = first {
            newest.first = f;
        }
        let last_seq = last.unwrap_or(newest.first.saturating_sub(1));
        let mut entries = count;
        for w in found.windows(2) {
            entries += w[1].first.saturating_sub(w[0].first);
        }
        let bytes = found.iter().map(|s| s.size).sum();
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            segments: found,
            file,
            last_seq,
            bytes,
            dirty: false,
            dir_dirty,
            frame: Vec::new(),
        };
        let opened = SpoolOpened {
            last_seq,
            first_seq: spool.first_seq(),
            entries,
            truncated_bytes,
        };
        Ok((spool, opened))
    }

    fn newest(&self) -> &Segment {
        self.segments.last().expect("a spool always has a segment")
    }

    fn newest_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a spool always has a segment")
    }

    /// Starts a new, empty newest segment named `first`. With `sync_old`, the old newest
    /// segment is made durable first, so that a segment with a successor never has a torn
    /// tail after a crash (open only repairs the newest).
    fn rotate(&mut self, first: u64, sync_old: bool) -> Result<(), SpoolError> {
        if sync_old && self.dirty {
            let path = &self.newest().path;
            self.file.sync_data().map_err(io_err("fdatasync", path))?;
        }
        let path = self.dir.join(segment_name(first));
        self.file = open_segment_file(&path, true)?;
        self.dirty = false;
        self.dir_dirty = true;
        self.segments.push(Segment {
            id: next_id(),
            first,
            last: None,
            size: 0,
            path,
        });
        Ok(())
    }

    /// Appends one entry. `seq` must be above [`Spool::last_seq`] (gaps are allowed) and the
    /// payload at most [`MAX_PAYLOAD`]; past `segment_bytes` a new segment is started (after
    /// an fdatasync of the full one). One `pwrite` per entry. Not durable until [`Spool::sync`]; the caller checks [`Spool::is_full`] first (append
    /// itself does not refuse a full spool).
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), SpoolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::PayloadTooBig {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if seq <= self.last_seq {
            return Err(SpoolError::SeqNotIncreasing {
                seq,
                last: self.last_seq,
            });
        }
        let frame_len = (FRAME_HEADER + payload.len()) as u64;
        let newest = self.newest();
        if newest.size > 0 && newest.size + frame_len > self.segment_bytes {
            self.rotate(seq, true)?;
        } else if newest.size == 0 && newest.first != seq {
            // An empty segment is named by a lower bound; name it by its first entry.
            let to = self.dir.join(segment_name(seq));
            std::fs::rename(&newest.path, &to).map_err(io_err("rename", &newest.path))?;
            self.dir_dirty = true;
            let n = self.newest_mut();
            n.path = to;
            n.first = seq;
        }
        self.frame.clear();
        self.frame
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.frame
            .extend_from_slice(&frame_crc(seq, payload).to_le_bytes());
        self.frame.extend_from_slice(&seq.to_le_bytes());
        self.frame.extend_from_slice(payload);
        let at = self.newest().size;
        if let Err(e) = self.file.write_all_at(&self.frame, at) {
            // Best effort: leave no partial frame behind (open would cut it anyway).
            let _ = self.file.set_len(at);
            return Err(io_err("write", &self.newest().path)(e));
        }
        self.dirty = true;
        let n = self.newest_mut();
        n.size += frame_len;
        n.last = Some(seq);
        self.bytes += frame_len;
        self.last_seq = seq;
        Ok(())
    }

    /// Makes every appended entry durable: fdatasync of the newest segment when written since
    /// the last sync (a segment is synced when a new one is started), and fsync of the directory after segments were made, renamed or deleted. Does nothing
    /// when nothing changed.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            let path = &self.segments.last().expect("a segment").path;
            self.file.sync_data().map_err(io_err("fdatasync", path))?;
            self.dirty = false;
        }
        if self.dir_dirty {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", &self.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// The highest seq appended (see [`SpoolOpened::last_seq`]); 0 when none ever was.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The oldest entry's seq, `None` when the spool holds no entry.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments.iter().find(|s| s.size > 0).map(|s| s.first)
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The bound given to [`Spool::open`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether appending a payload of `next_payload_len` bytes would take the spool over
    /// [`Spool::max_bytes`].
    pub fn is_full(&self, next_payload_len: usize) -> bool {
        self.bytes
            .saturating_add((FRAME_HEADER + next_payload_len) as u64)
            > self.max_bytes
    }

    fn remove_segment(&mut self, idx: usize) -> Result<u64, SpoolError> {
        let seg = &self.segments[idx];
        match std::fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &seg.path)(e)),
        }
        let seg = self.segments.remove(idx);
        self.bytes -= seg.size;
        self.dir_dirty = true;
        Ok(seg.size)
    }

    /// Deletes the oldest segments whose entries are all at or below `upto` (what every
    /// reliable target has acknowledged), never the newest segment. Returns the bytes freed.
    pub fn trim(&mut self, upto: u64) -> Result<u64, SpoolError> {
        let mut freed = 0;
        while self.segments.len() > 1 && self.segments[1].first <= upto.saturating_add(1) {
            freed += self.remove_segment(0)?;
        }
        Ok(freed)
    }

    /// Deletes the oldest segment (when it is the only one, a new empty segment is started
    /// first) and returns the seq range (first, last) of the entries lost; `None` when the
    /// spool holds no entry.
    pub fn drop_oldest(&mut self) -> Result<Option<(u64, u64)>, SpoolError> {
        loop {
            if self.segments.len() == 1 {
                if self.newest().size == 0 {
                    return Ok(None);
                }
                // The old segment is deleted next: no need to sync it.
                self.rotate(self.last_seq.saturating_add(1), false)?;
            }
            let seg = &self.segments[0];
            if seg.size == 0 {
                // An empty older segment (only from outside meddling): nothing to lose.
                self.remove_segment(0)?;
                continue;
            }
            let first = seg.first;
            let last = match seg.last {
                Some(l) => l,
                None => self.scan_last(0),
            };
            self.remove_segment(0)?;
            return Ok(Some((first, last)));
        }
    }

    /// The last seq of older segment `idx` by scanning it; on damage, the seq before the next
    /// segment's name (the widest range it could have held).
    fn scan_last(&self, idx: usize) -> u64 {
        let seg = &self.segments[idx];
        let bound = self.segments[idx + 1].first.saturating_sub(1);
        let Ok(file) = File::open(&seg.path) else {
            return bound;
        };
        let mut r = FrameReader::new(&file, &seg.path, 0, seg.size, SCAN_CHUNK);
        let mut last = None;
        loop {
            match r.next_frame() {
                Ok(Some((_, seq, _))) => last = Some(seq),
                Ok(None) => return last.unwrap_or(bound).min(bound),
                Err(_) => return bound,
            }
        }
    }

    /// A cursor at the first entry with a seq above `seq` (0: the oldest entry).
    pub fn cursor_after(&self, seq: u64) -> Result<SpoolCursor, SpoolError> {
        let mut cur = SpoolCursor {
            after: seq,
            segment: None,
            offset: 0,
            file: None,
        };
        self.seek(&mut cur)?;
        Ok(cur)
    }

    /// Positions `cur` at the first entry above `cur.after`; returns its segment index.
    fn seek(&self, cur: &mut SpoolCursor) -> Result<usize, SpoolError> {
        cur.file = None;
        if cur.after >= self.last_seq {
            let idx = self.segments.len() - 1;
            cur.segment = Some(self.segments[idx].id);
            cur.offset = self.segments[idx].size;
            return Ok(idx);
        }
        let want = cur.after.saturating_add(1);
        let idx = self
            .segments
            .iter()
            .rposition(|s| s.first <= want)
            .unwrap_or(0);
        let seg = &self.segments[idx];
        cur.segment = Some(seg.id);
        cur.offset = 0;
        if seg.first > cur.after {
            return Ok(idx);
        }
        let file = Arc::new(File::open(&seg.path).map_err(io_err("open", &seg.path))?);
        let mut r = FrameReader::new(&file, &seg.path, 0, seg.size, SCAN_CHUNK);
        loop {
            match r.next_frame() {
                Ok(Some((offset, seq, _))) => {
                    if seq > cur.after {
                        cur.offset = offset;
                        break;
                    }
                }
                Ok(None) => {
                    cur.offset = seg.size;
                    break;
                }
                Err(f) => return Err(bad_to_err(&seg.path, f)),
            }
        }
        cur.file = Some(file);
        Ok(idx)
    }

    /// Appends to `out` the entries after `cur`, in seq order, at most `max_entries` of them
    /// and at most `max_bytes` of payload (but at least one entry when there is one), and
    /// advances `cur`. When `cur`'s segment was trimmed or dropped, it re-seeks to the oldest
    /// entry above the last seq it read: the caller sees the gap in the seqs. A damaged frame
    /// is [`SpoolError::Corrupt`] (after the good entries before it were returned by an
    /// earlier call); the cursor stays before it.
    pub fn read(
        &self,
        cur: &mut SpoolCursor,
        max_entries: usize,
        max_bytes: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), SpoolError> {
        if max_entries == 0 {
            return Ok(());
        }
        let mut idx = match cur
            .segment
            .and_then(|id| self.segments.iter().position(|s| s.id == id))
        {
            Some(i) => i,
            None => self.seek(cur)?,
        };
        let (mut n, mut bytes) = (0usize, 0usize);
        let chunk = max_bytes
            .saturating_add(max_entries.saturating_mul(FRAME_HEADER))
            .clamp(MIN_READ_CHUNK, SCAN_CHUNK);
        loop {
            let seg = &self.segments[idx];
            if cur.offset >= seg.size {
                if idx + 1 == self.segments.len() {
                    return Ok(());
                }
                idx += 1;
                cur.segment = Some(self.segments[idx].id);
                cur.offset = 0;
                cur.file = None;
                continue;
            }
            if cur.file.is_none() {
                let f = File::open(&seg.path).map_err(io_err("open", &seg.path))?;
                cur.file = Some(Arc::new(f));
            }
            let file = Arc::clone(cur.file.as_ref().expect("just opened"));
            let mut r = FrameReader::new(&file, &seg.path, cur.offset, seg.size, chunk);
            loop {
                match r.next_frame() {
                    Ok(Some((offset, seq, payload))) => {
                        if n > 0 && bytes + payload.len() > max_bytes {
                            return Ok(());
                        }
                        if seq <= cur.after {
                            if n > 0 {
                                return Ok(());
                            }
                            return Err(SpoolError::Corrupt {
                                path: seg.path.clone(),
                                offset,
                                reason: format!(
                                    "seq {seq} is not above the previous seq {}",
                                    cur.after
                                ),
                            });
                        }
                        out.push((seq, payload.to_vec()));
                        n += 1;
                        bytes += payload.len();
                        cur.after = seq;
                        cur.offset = r.pos;
                        if n >= max_entries {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(f) => {
                        if n > 0 {
                            return Ok(());
                        }
                        return Err(bad_to_err(&seg.path, f));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn payload(seq: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq},\"event\":\"commit\"}}").into_bytes()
    }

    fn frame_len(seq: u64) -> u64 {
        (FRAME_HEADER + payload(seq).len()) as u64
    }

    fn read_all(s: &Spool, after: u64) -> Vec<(u64, Vec<u8>)> {
        let mut cur = s.cursor_after(after).unwrap();
        let mut out = Vec::new();
        loop {
            let before = out.len();
            s.read(&mut cur, 7, 1 << 20, &mut out).unwrap();
            if out.len() == before {
                return out;
            }
        }
    }

    fn seqs(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
        v.iter().map(|e| e.0).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, o) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        assert_eq!(
            o,
            SpoolOpened {
                last_seq: 0,
                first_seq: None,
                entries: 0,
                truncated_bytes: 0
            }
        );
        for seq in 1..=50 {
            s.append(seq, &payload(seq)).unwrap();
        }
        // Seen before sync, by the same object.
        let got = read_all(&s, 0);
        assert_eq!(seqs(&got), (1..=50).collect::<Vec<_>>());
        for (seq, p) in &got {
            assert_eq!(p, &payload(*seq));
        }
        s.sync().unwrap();
        let files = segment_files(dir.path());
        assert!(files.len() > 5, "{files:?}");
        assert!(files[0].ends_with("seg-00000000000000000001.log"));
        let bytes = s.bytes();
        assert_eq!(bytes, (1..=50).map(frame_len).sum::<u64>());
        drop(s);
        let (s, o) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        assert_eq!(o.last_seq, 50);
        assert_eq!(o.first_seq, Some(1));
        assert_eq!(o.entries, 50);
        assert_eq!(o.truncated_bytes, 0);
        assert_eq!(s.bytes(), bytes);
        assert_eq!(seqs(&read_all(&s, 0)), (1..=50).collect::<Vec<_>>());
        assert_eq!(seqs(&read_all(&s, 33)), (34..=50).collect::<Vec<_>>());
        assert!(read_all(&s, 50).is_empty());
    }

    #[test]
    fn read_limits_and_kept_cursor_sees_new_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 300).unwrap();
        let mut cur = s.cursor_after(0).unwrap();
        let mut out = Vec::new();
        s.read(&mut cur, 10, 1000, &mut out).unwrap();
        assert!(out.is_empty());
        for seq in 1..=20 {
            s.append(seq, &payload(seq)).unwrap();
        }
        s.read(&mut cur, 3, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        // max_bytes: one entry at least, then only while it fits.
        out.clear();
        s.read(&mut cur, 100, 1, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![4]);
        out.clear();
        let two = payload(5).len() + payload(6).len();
        s.read(&mut cur, 100, two, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![5, 6]);
        assert_eq!(cur.after_seq(), 6);
        out.clear();
        s.read(&mut cur, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), (7..=20).collect::<Vec<_>>());
        // Gaps are allowed; the kept cursor picks up the new entries.
        s.append(25, &payload(25)).unwrap();
        s.append(30, &payload(30)).unwrap();
        out.clear();
        s.read(&mut cur, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![25, 30]);
    }

    #[test]
    fn seq_not_increasing_and_payload_too_big_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 1 << 16).unwrap();
        assert!(matches!(
            s.append(0, b"x"),
            Err(SpoolError::SeqNotIncreasing { seq: 0, last: 0 })
        ));
        s.append(5, b"x").unwrap();
        assert!(matches!(
            s.append(5, b"y"),
            Err(SpoolError::SeqNotIncreasing { seq: 5, last: 5 })
        ));
        assert!(matches!(
            s.append(4, b"y"),
            Err(SpoolError::SeqNotIncreasing { .. })
        ));
        assert!(matches!(
            s.append(6, &vec![0u8; MAX_PAYLOAD + 1]),
            Err(SpoolError::PayloadTooBig { .. })
        ));
        s.append(6, &vec![7u8; MAX_PAYLOAD]).unwrap();
        assert_eq!(s.last_seq(), 6);
        assert_eq!(s.first_seq(), Some(5));
        let got = read_all(&s, 0);
        assert_eq!(seqs(&got), vec![5, 6]);
        assert_eq!(got[1].1.len(), MAX_PAYLOAD);
        // The first entry renamed the empty segment after itself.
        assert!(dir.path().join(segment_name(5)).exists());
    }

    #[test]
    fn torn_tail_is_cut_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 1 << 16).unwrap();
        for seq in 1..=10 {
            s.append(seq, &payload(seq)).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        let file = segment_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let (mut s, o) = Spool::open(dir.path(), 1 << 20, 1 << 16).unwrap();
        assert_eq!(o.truncated_bytes, frame_len(10) - 3);
        assert_eq!(o.last_seq, 9);
        assert_eq!(o.entries, 9);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len - frame_len(10));
        s.append(10, &payload(10)).unwrap();
        s.append(11, &payload(11)).unwrap();
        s.sync().unwrap();
        drop(s);
        // Garbage after the last frame.
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        io::Write::write_all(&mut f, &[0xa5; 37]).unwrap();
        drop(f);
        let (s, o) = Spool::open(dir.path(), 1 << 20, 1 << 16).unwrap();
        assert_eq!(o.truncated_bytes, 37);
        assert_eq!(o.last_seq, 11);
        assert_eq!(seqs(&read_all(&s, 0)), (1..=11).collect::<Vec<_>>());
        drop(s);
        // A zero-filled tail (a crash after the size grew) is cut too.
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        io::Write::write_all(&mut f, &[0; 4096]).unwrap();
        drop(f);
        let (_, o) = Spool::open(dir.path(), 1 << 20, 1 << 16).unwrap();
        assert_eq!(o.truncated_bytes, 4096);
        assert_eq!(o.last_seq, 11);
    }

    #[test]
    fn corruption_in_an_older_segment_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        for seq in 1..=30 {
            s.append(seq, &payload(seq)).unwrap();
        }
        drop(s);
        let first = segment_files(dir.path()).remove(0);
        // Flip a payload byte of the second frame.
        let mut bytes = std::fs::read(&first).unwrap();
        let off = frame_len(1) as usize;
        bytes[off + FRAME_HEADER + 2] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let (s, o) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        assert_eq!(o.truncated_bytes, 0);
        let mut cur = s.cursor_after(0).unwrap();
        let mut out = Vec::new();
        s.read(&mut cur, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1]);
        let e = s.read(&mut cur, 100, 1 << 20, &mut out).unwrap_err();
        match &e {
            SpoolError::Corrupt { path, offset, .. } => {
                assert_eq!(path, &first);
                assert_eq!(*offset, off as u64);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("seg-00000000000000000001.log"));
        // Seeking past it also names it.
        assert!(matches!(s.cursor_after(1), Err(SpoolError::Corrupt { .. })));
        // Past that segment all is well.
        let later = s.segments[1].first;
        assert_eq!(
            seqs(&read_all(&s, later - 1)),
            (later..=30).collect::<Vec<_>>()
        );
    }

    #[test]
    fn trim_keeps_the_newest_segment_and_frees_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        for seq in 1..=40 {
            s.append(seq, &payload(seq)).unwrap();
        }
        let nsegs = segment_files(dir.path()).len();
        let before = s.bytes();
        assert_eq!(s.trim(0).unwrap(), 0);
        let second = s.segments[1].first;
        // Everything in the first segment acknowledged except its last entry: nothing goes.
        assert_eq!(s.trim(second - 2).unwrap(), 0);
        let freed = s.trim(second - 1).unwrap();
        assert!(freed > 0);
        assert_eq!(s.bytes(), before - freed);
        assert_eq!(s.first_seq(), Some(second));
        assert_eq!(segment_files(dir.path()).len(), nsegs - 1);
        // All acknowledged: only the newest segment stays.
        let freed2 = s.trim(40).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(s.bytes(), before - freed - freed2);
        assert_eq!(s.last_seq(), 40);
        let rest = seqs(&read_all(&s, 0));
        assert_eq!(rest.last(), Some(&40));
        assert_eq!(rest.first().copied(), s.first_seq());
        assert_eq!(s.bytes(), rest.iter().map(|&q| frame_len(q)).sum::<u64>());
        s.sync().unwrap();
    }

    #[test]
    fn drop_oldest_returns_the_range_and_reopen_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        for seq in 1..=30 {
            s.append(seq, &payload(seq)).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        // After a reopen the older segments' last seqs are not known: found by scanning.
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        let second = s.segments[1].first;
        let before = s.bytes();
        assert_eq!(s.drop_oldest().unwrap(), Some((1, second - 1)));
        assert!(s.bytes() < before);
        assert_eq!(s.first_seq(), Some(second));
        let third = s.segments[1].first;
        assert_eq!(s.drop_oldest().unwrap(), Some((second, third - 1)));
        s.sync().unwrap();
        let bytes = s.bytes();
        drop(s);
        let (mut s, o) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        assert_eq!(o.last_seq, 30);
        assert_eq!(o.first_seq, Some(third));
        assert_eq!(o.entries, 30 - third + 1);
        assert_eq!(s.bytes(), bytes);
        // Down to the last segment: it is rotated away, the spool is empty, seqs go on.
        while s.segments.len() > 1 {
            s.drop_oldest().unwrap().unwrap();
        }
        let last_first = s.first_seq().unwrap();
        assert_eq!(s.drop_oldest().unwrap(), Some((last_first, 30)));
        assert_eq!(s.bytes(), 0);
        assert_eq!(s.first_seq(), None);
        assert_eq!(s.drop_oldest().unwrap(), None);
        assert!(read_all(&s, 0).is_empty());
        s.sync().unwrap();
        drop(s);
        let (mut s, o) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        assert_eq!(
            o,
            SpoolOpened {
                last_seq: 30,
                first_seq: None,
                entries: 0,
                truncated_bytes: 0
            }
        );
        assert!(matches!(
            s.append(30, b"x"),
            Err(SpoolError::SeqNotIncreasing { .. })
        ));
        s.append(31, b"x").unwrap();
        assert_eq!(seqs(&read_all(&s, 0)), vec![31]);
    }

    #[test]
    fn cursor_reseeks_after_its_segment_is_trimmed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        for seq in 1..=40 {
            s.append(seq, &payload(seq)).unwrap();
        }
        let mut slow = s.cursor_after(0).unwrap();
        let mut out = Vec::new();
        s.read(&mut slow, 2, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2]);
        let third = s.segments[2].first;
        s.trim(third - 1).unwrap();
        out.clear();
        s.read(&mut slow, 3, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![third, third + 1, third + 2]);
        // The cursor is now in the oldest segment; drop it: the next read jumps the gap.
        let (_, lost_last) = s.drop_oldest().unwrap().unwrap();
        out.clear();
        s.read(&mut slow, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), ((lost_last + 1)..=40).collect::<Vec<_>>());
        // A cursor from another Spool object (before a reopen) re-seeks by its seq.
        s.sync().unwrap();
        let mut old = s.cursor_after(35).unwrap();
        drop(s);
        let (s, _) = Spool::open(dir.path(), 1 << 20, 200).unwrap();
        out.clear();
        s.read(&mut old, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(seqs(&out), (36..=40).collect::<Vec<_>>());
    }

    #[test]
    fn is_full_counts_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 100, 1 << 20).unwrap();
        assert_eq!(s.max_bytes(), 100);
        assert!(!s.is_full(100 - FRAME_HEADER));
        assert!(s.is_full(100 - FRAME_HEADER + 1));
        s.append(1, &[0; 50]).unwrap();
        assert!(!s.is_full(100 - 66 - FRAME_HEADER));
        assert!(s.is_full(100 - 66 - FRAME_HEADER + 1));
    }

    #[test]
    fn directory_is_made_0750() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("a/spool");
        Spool::open(&sp, 1 << 20, 1 << 16).unwrap();
        let mode = std::fs::metadata(&sp).unwrap().permissions().mode() & 0o777;
        // The umask may take bits away, never add them.
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        assert_eq!(segment_files(&sp).len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append { n: u8, gap: u8, len: u8 },
        Reopen,
        Trim(u8),
        Drop,
        Read(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..20, 0u8..3, 0u8..120).prop_map(|(n, gap, len)| Op::Append { n, gap, len }),
            1 => Just(Op::Reopen),
            1 => any::<u8>().prop_map(Op::Trim),
            1 => Just(Op::Drop),
            2 => (1u8..30).prop_map(Op::Read),
        ]
    }

    fn body(seq: u64, len: u8) -> Vec<u8> {
        (0..len).map(|i| (seq as u8).wrapping_add(i)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_ops_keep_the_invariants(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, _) = Spool::open(dir.path(), 1 << 30, 300).unwrap();
            // What the spool should hold, and everything ever appended.
            let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut ever: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut next = 1u64;
            let mut reader = s.cursor_after(0).unwrap();
            for op in ops {
                match op {
                    Op::Append { n, gap, len } => {
                        for _ in 0..n {
                            next += u64::from(gap);
                            let p = body(next, len);
                            s.append(next, &p).unwrap();
                            model.insert(next, p.clone());
                            ever.insert(next, p);
                            next += 1;
                        }
                    }
                    Op::Reopen => {
                        s.sync().unwrap();
                        drop(s);
                        let (s2, o) = Spool::open(dir.path(), 1 << 30, 300).unwrap();
                        s = s2;
                        prop_assert_eq!(o.truncated_bytes, 0);
                        prop_assert_eq!(o.first_seq, model.keys().next().copied());
                        prop_assert!(o.entries >= model.len() as u64);
                    }
                    Op::Trim(frac) => {
                        let upto = (next * u64::from(frac)) / 255;
                        let newest = ever.keys().next_back().copied().filter(|q| model.contains_key(q));
                        s.trim(upto).unwrap();
                        let first = s.first_seq();
                        let gone: Vec<u64> = model
                            .keys()
                            .copied()
                            .filter(|&q| first.is_none_or(|f| q < f))
                            .collect();
                        for q in gone {
                            prop_assert!(q <= upto, "trimmed {} above {}", q, upto);
                            model.remove(&q);
                        }
                        if let Some(q) = newest {
                            prop_assert!(model.contains_key(&q), "newest entry trimmed");
                        }
                    }
                    Op::Drop => {
                        match s.drop_oldest().unwrap() {
                            None => prop_assert!(model.is_empty()),
                            Some((a, b)) => {
                                prop_assert_eq!(Some(a), model.keys().next().copied());
                                prop_assert!(model.contains_key(&b));
                                model.retain(|&q, _| q > b);
                                prop_assert_eq!(s.first_seq(), model.keys().next().copied());
                            }
                        }
                    }
                    Op::Read(n) => {
                        let from = reader.after_seq();
                        let mut out = Vec::new();
                        s.read(&mut reader, n as usize, 1 << 20, &mut out).unwrap();
                        let mut prev = from;
                        for (q, p) in &out {
                            prop_assert!(*q > prev);
                            prev = *q;
                            prop_assert_eq!(Some(p), ever.get(q));
                            prop_assert!(model.contains_key(q));
                        }
                        // It read the oldest entries above where it was, none skipped.
                        let expect: Vec<u64> =
                            model.range(from + 1..).take(out.len()).map(|(q, _)| *q).collect();
                        prop_assert_eq!(seqs(&out), expect);
                    }
                }
                let all = read_all(&s, 0);
                prop_assert_eq!(
                    all.iter().map(|(q, p)| (*q, p.clone())).collect::<BTreeMap<_, _>>(),
                    model.clone()
                );
                prop_assert_eq!(seqs(&all), model.keys().copied().collect::<Vec<_>>());
                prop_assert_eq!(
                    s.bytes(),
                    model.values().map(|p| (FRAME_HEADER + p.len()) as u64).sum::<u64>()
                );
                prop_assert_eq!(s.last_seq(), next - 1);
            }
        }
    }
}
