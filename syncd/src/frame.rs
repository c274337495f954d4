//! Framing on the TCP stream: `u16 big-endian length · body`, where the body is one Noise
//! message (or, before the handshake, the clear-text preamble).
//!
//! There is no separate checksum: after the handshake every body is an AES-256-GCM sealed
//! Noise transport message, and its 16-byte authentication tag is the frame's integrity check
//! — stronger than a CRC (it also detects deliberate changes, and with the implicit nonce
//! counter, replayed, dropped and reordered frames). A body that fails it drops the
//! connection.

use std::io::{self, Read};

/// Longest frame body accepted or sent (32 KiB): room for 120 change records per message.
/// A longer length field is an `oversize` drop.
pub const MAX_FRAME_LEN: usize = 32 * 1024;
/// Bytes buffered from the socket before frames are taken out (the reader never holds much
/// more than this plus one partial frame).
const READ_CHUNK: usize = 64 * 1024;

/// A frame that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the limit of the current phase.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversize {
        /// The length field.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame with no body.
    #[error("empty frame")]
    Empty,
}

/// What one [`FrameReader::fill`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The socket has nothing more for now.
    WouldBlock,
    /// The peer closed its side (frames already buffered are still to be taken).
    Eof,
    /// The buffer took a chunk; take the frames, then fill again.
    More,
}

/// Bytes read from the socket and not yet taken as frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Reads one chunk (up to 64 KiB) from `src`. Call it until it returns
    /// [`Fill::WouldBlock`] or [`Fill::Eof`], taking the frames after each call.
    pub fn fill(&mut self, src: &mut impl Read) -> io::Result<Fill> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let result = loop {
            match src.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                self.buf.truncate(old);
                Ok(Fill::Eof)
            }
            Ok(n) => {
                self.buf.truncate(old + n);
                Ok(Fill::More)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.buf.truncate(old);
                Ok(Fill::WouldBlock)
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(e)
            }
        }
    }

    /// Adds bytes as if read (tests, proxies).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, if one is buffered. A length above `max` or of zero is an
    /// error at once (the body is not awaited).
    pub fn next_frame(&mut self, max: usize) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > max {
            return Err(FrameError::Oversize { len, max });
        }
        if pending.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
        self.start += 2 + len;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Appends a frame holding `body` to `out`. `body` must be at most [`MAX_FRAME_LEN`] bytes.
pub fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    debug_assert!(body.len() <= MAX_FRAME_LEN);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut wire = Vec::new();
        push_frame(&mut wire, b"one");
        push_frame(&mut wire, &[7u8; 300]);
        push_frame(&mut wire, b"x");
        for split in 0..wire.len() {
            let mut r = FrameReader::new();
            r.push(&wire[..split]);
            let mut got: Vec<Vec<u8>> = Vec::new();
            while let Some(f) = r.next_frame(MAX_FRAME_LEN).unwrap() {
                got.push(f.to_vec());
            }
            r.push(&wire[split..]);
            while let Some(f) = r.next_frame(MAX_FRAME_LEN).unwrap() {
                got.push(f.to_vec());
            }
            assert_eq!(got, vec![b"one".to_vec(), vec![7u8; 300], b"x".to_vec()]);
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn oversize_and_empty_frames_are_refused_from_the_header_alone() {
        let mut r = FrameReader::new();
        r.push(&[0x80, 0x01]);
        assert_eq!(
            r.next_frame(MAX_FRAME_LEN),
            Err(FrameError::Oversize {
                len: 0x8001,
                max: MAX_FRAME_LEN
            })
        );
        let mut r = FrameReader::new();
        r.push(&[0, 0, 1]);
        assert_eq!(r.next_frame(MAX_FRAME_LEN), Err(FrameError::Empty));
    }

    #[test]
    fn fill_reads_until_eof_and_keeps_frames_read_before_it() {
        let mut wire = Vec::new();
        push_frame(&mut wire, b"last words");
        let mut src = &wire[..];
        let mut r = FrameReader::new();
        assert_eq!(r.fill(&mut src).unwrap(), Fill::More);
        assert_eq!(r.fill(&mut src).unwrap(), Fill::Eof);
        assert_eq!(r.next_frame(64).unwrap(), Some(&b"last words"[..]));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), max in 1usize..70_000) {
            let mut r = FrameReader::new();
            r.push(&bytes);
            while let Ok(Some(_)) = r.next_frame(max) {}
        }
    }
}
