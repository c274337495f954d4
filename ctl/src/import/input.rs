//! Buffered byte input with a consumed-bytes count.

use std::io::{self, Read};

/// Bytes read from the input at once.
const READ_BUFFER: usize = 256 << 10;

/// A reader's bytes through a fixed buffer, counting what was consumed.
pub(super) struct ByteReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// Bytes consumed so far.
    pub(super) consumed: u64,
}

/// What [`ByteReader::read_line`] found.
pub(super) enum LineStatus {
    /// End of input: no line.
    Eof,
    /// A line (without its `\n` and a `\r` before it).
    Line,
    /// A line longer than the limit: consumed and dropped.
    TooLong,
}

impl<R: Read> ByteReader<R> {
    pub(super) fn new(inner: R) -> Self {
        ByteReader {
            inner,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
            consumed: 0,
        }
    }

    /// Make at least one byte available; false at end of input.
    #[inline]
    pub(super) fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    #[inline]
    pub(super) fn available(&self) -> &[u8] {
        self.buf.get(self.pos..self.len).unwrap_or(&[])
    }

    #[inline]
    pub(super) fn advance(&mut self, n: usize) {
        let n = n.min(self.len - self.pos);
        self.pos += n;
        self.consumed += n as u64;
    }

    #[inline]
    pub(super) fn peek(&mut self) -> io::Result<Option<u8>> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(self.available().first().copied())
    }

    /// Read one line (without '\n') into `out`, keeping at most `max` bytes; the rest of an
    /// over-long line is consumed and dropped.
    pub(super) fn read_line(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<LineStatus> {
        out.clear();
        let mut any = false;
        let mut too_long = false;
        loop {
            if !self.fill()? {
                break;
            }
            any = true;
            let avail = self.available();
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if !too_long {
                        if out.len() + i > max + 1 {
                            too_long = true;
                        } else {
                            out.extend_from_slice(&avail[..i]);
                        }
                    }
                    self.advance(i + 1);
                    break;
                }
                None => {
                    let n = avail.len();
                    if !too_long {
                        if out.len() + n > max + 1 {
                            too_long = true;
                        } else {
                            out.extend_from_slice(avail);
                        }
                    }
                    self.advance(n);
                }
            }
        }
        if !any {
            return Ok(LineStatus::Eof);
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        if too_long || out.len() > max {
            out.clear();
            return Ok(LineStatus::TooLong);
        }
        Ok(LineStatus::Line)
    }
}
