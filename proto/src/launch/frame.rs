//! The supervisor↔worker channel: length-prefixed frames over a Unix stream socketpair
//! ([`super::CHANNEL`]).
//!
//! Frame: `u32` little-endian length of what follows, one kind byte, payload. The supervisor
//! sends [`FrameKind::Config`] (the validated configuration's RON text) first and on every
//! reload, and [`FrameKind::Stop`] to stop; the worker answers each config with
//! [`FrameKind::Applied`] or [`FrameKind::Rejected`] (payload: a message). syncd sends
//! [`FrameKind::PeerReport`] after link events.

use std::io::{self, Read, Write};

/// Largest frame accepted: a configuration text (limited to 256 MiB by `prodhcp_config`'s
/// `MAX_FILE_SIZE`; the supervisor asserts at compile time that it fits) plus the kind byte.
pub const MAX_FRAME: usize = (256 << 20) + 1;

/// Kinds of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Supervisor → worker: configuration text.
    Config = 1,
    /// Supervisor → worker: stop now.
    Stop = 2,
    /// Worker → supervisor: configuration applied.
    Applied = 3,
    /// Worker → supervisor: configuration refused (message).
    Rejected = 4,
    /// syncd → supervisor: the state of every configured peer after a link event (payload:
    /// a JSON `super::SyncdReport`).
    PeerReport = 5,
    /// Supervisor → syncd: an operator's HA command (payload: a JSON
    /// `super::HaCommandFrame`).
    HaCommand = 6,
    /// Audit process → supervisor: its state (payload: a JSON `crate::control::AuditReport`).
    AuditReport = 7,
    /// Supervisor → audit process: an appliance event to audit (payload: a JSON
    /// `super::ApplianceEventFrame`).
    AuditEvent = 8,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<FrameKind> {
        match v {
            1 => Some(FrameKind::Config),
            2 => Some(FrameKind::Stop),
            3 => Some(FrameKind::Applied),
            4 => Some(FrameKind::Rejected),
            5 => Some(FrameKind::PeerReport),
            6 => Some(FrameKind::HaCommand),
            7 => Some(FrameKind::AuditReport),
            8 => Some(FrameKind::AuditEvent),
            _ => None,
        }
    }
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len() + 1)
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(payload.len() + 5);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Incremental frame reader for a non-blocking stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

/// What reading produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A complete frame.
    Frame(FrameKind, Vec<u8>),
    /// Need more bytes (would block).
    Pending,
    /// The peer closed the stream.
    Closed,
}

impl FrameReader {
    /// Reads what is available and returns the next complete frame, if any.
    pub fn poll(&mut self, r: &mut impl Read) -> io::Result<ReadOutcome> {
        loop {
            if let Some(f) = self.take_frame()? {
                return Ok(f);
            }
            let mut chunk = [0u8; 65536];
            match r.read(&mut chunk) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn take_frame(&mut self) -> io::Result<Option<ReadOutcome>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad frame length",
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let kind = FrameKind::from_u8(self.buf[4])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad frame kind"))?;
        let payload = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(ReadOutcome::Frame(kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces_and_garbage_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Config, b"(config)").unwrap();
        write_frame(&mut wire, FrameKind::Stop, b"").unwrap();
        let mut r = FrameReader::default();
        // Feed one byte at a time.
        let mut got = Vec::new();
        for b in wire {
            let mut one: &[u8] = &[b];
            if let ReadOutcome::Frame(k, p) = r.poll(&mut one).unwrap() {
                got.push((k, p));
            }
        }
        assert_eq!(
            got,
            vec![
                (FrameKind::Config, b"(config)".to_vec()),
                (FrameKind::Stop, vec![])
            ]
        );
        let mut r = FrameReader::default();
        let mut bad: &[u8] = &[1, 0, 0, 0, 99];
        assert!(r.poll(&mut bad).is_err());
        let mut r = FrameReader::default();
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1];
        assert!(r.poll(&mut huge).is_err());
    }
}
