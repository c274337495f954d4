//! The `--record` file: one JSON object per line for every ACK received and every RELEASE
//! sent, so `dhcpperf verify` can tell what each client was told.
//!
//! ```text
//! {"event":"ack","seq":41,"t_ms":1764000000123,"mac":"02:01:00:00:00:05","client_id":null,"address":"10.0.0.7","lease_end":1764003600,"server_id":"198.18.0.1"}
//! {"event":"release","seq":57,"t_ms":1764000000456,"mac":"02:01:00:00:00:05","client_id":null,"address":"10.0.0.7"}
//! ```
//!
//! Lines are written in batches by several threads (the receiver buffers a batch of ACKs while
//! the sender may already release one of those clients), so the file order is not the order of
//! events. `seq` is: it comes from one counter ([`Recorder::next_seq`]), taken for an ACK before
//! the client can be released and for a RELEASE after it was decided, and [`read_records`]
//! returns the events sorted by it. Files without `seq` (older ones) keep their line order.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of a record file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum RecordEvent {
    /// The server ACKed a lease.
    Ack {
        /// Causal order of the event (see the module docs); 0 in files written without it.
        #[serde(default)]
        seq: u64,
        /// Unix time in milliseconds when the ACK arrived.
        t_ms: u64,
        /// Client hardware address (`aa:bb:..`).
        mac: String,
        /// Client identifier sent (hex), if any.
        client_id: Option<String>,
        /// The leased address.
        address: Ipv4Addr,
        /// Lease end, unix seconds (arrival + option 51).
        lease_end: u64,
        /// Server identifier of the ACK.
        server_id: Option<Ipv4Addr>,
    },
    /// The client released its lease.
    Release {
        /// Causal order of the event (see the module docs); 0 in files written without it.
        #[serde(default)]
        seq: u64,
        /// Unix time in milliseconds when the RELEASE was sent.
        t_ms: u64,
        /// Client hardware address.
        mac: String,
        /// Client identifier sent (hex), if any.
        client_id: Option<String>,
        /// The released address.
        address: Ipv4Addr,
    },
}

impl RecordEvent {
    /// The event's sequence number (0 when the file has none).
    pub fn seq(&self) -> u64 {
        match self {
            RecordEvent::Ack { seq, .. } | RecordEvent::Release { seq, .. } => *seq,
        }
    }
}

/// Errors of reading or writing a record file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be opened or created.
    #[error("cannot open record file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("record file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A line is not a record.
    #[error("record file {path} line {line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
}

/// A record file being written by several threads.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    written: AtomicU64,
    errors: AtomicU64,
    seq: AtomicU64,
}

impl Recorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, RecordError> {
        let f = File::create(path).map_err(|source| RecordError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::with_capacity(1 << 20, f)),
            written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        })
    }

    /// The next sequence number (1, 2, ...), shared by every thread. Take it for an ACK before
    /// the client becomes releasable, for a RELEASE after the release was decided: then the
    /// numbers order each client's events causally, whatever order the lines are written in.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends `events` (one lock for the whole batch). Write errors are counted, not fatal.
    pub fn write_all(&self, events: &[RecordEvent]) {
        if events.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            let ok = serde_json::to_writer(&mut *out, ev).is_ok() && out.write_all(b"\n").is_ok();
            if ok {
                self.written.fetch_add(1, Ordering::Relaxed);
            } else {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Events that could not be written.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Flushes buffered lines to the file.
    pub fn flush(&self) -> Result<(), RecordError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.flush().map_err(|source| RecordError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads every event of a record file (empty lines are skipped), in `seq` order (a stable sort,
/// so events without `seq` keep their line order).
pub fn read_records(path: &Path) -> Result<Vec<RecordEvent>, RecordError> {
    let f = File::open(path).map_err(|source| RecordError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = serde_json::from_str(&line).map_err(|source| RecordError::Parse {
            path: path.to_path_buf(),
            line: n + 1,
            source,
        })?;
        out.push(ev);
    }
    out.sort_by_key(RecordEvent::seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = std::env::temp_dir().join(format!("dhcpperf-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let r = Recorder::create(&path).unwrap();
        let evs = vec![
            RecordEvent::Ack {
                seq: 1,
                t_ms: 1,
                mac: "02:01:00:00:00:01".into(),
                client_id: Some("0102010000000001".into()),
                address: Ipv4Addr::new(10, 0, 0, 1),
                lease_end: 100,
                server_id: Some(Ipv4Addr::new(198, 18, 0, 1)),
            },
            RecordEvent::Release {
                seq: 2,
                t_ms: 2,
                mac: "02:01:00:00:00:01".into(),
                client_id: None,
                address: Ipv4Addr::new(10, 0, 0, 1),
            },
        ];
        r.write_all(&evs);
        r.flush().unwrap();
        assert_eq!(r.written(), 2);
        assert_eq!(read_records(&path).unwrap(), evs);
        std::fs::write(&path, "{\"event\":\"ack\"}\n").unwrap();
        assert!(matches!(
            read_records(&path),
            Err(RecordError::Parse { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The receiver writes its batch of ACKs after the sender already wrote the RELEASE of one
    /// of those clients: the file holds the RELEASE first, and the events must come back in
    /// causal order (before `seq`, verify saw a RELEASE of an unknown lease, then a live ACK).
    #[test]
    fn events_written_out_of_order_are_read_in_causal_order() {
        let dir = std::env::temp_dir().join(format!("dhcpperf-rec-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"event":"release","seq":2,"t_ms":10,"mac":"02:01:00:00:00:01","client_id":null,"address":"10.0.0.1"}"#,
                "\n",
                r#"{"event":"ack","seq":1,"t_ms":10,"mac":"02:01:00:00:00:01","client_id":null,"address":"10.0.0.1","lease_end":4000000000,"server_id":null}"#,
                "\n",
            ),
        )
        .unwrap();
        let evs = read_records(&path).unwrap();
        assert_eq!(evs.iter().map(RecordEvent::seq).collect::<Vec<_>>(), [1, 2]);
        assert!(matches!(evs[0], RecordEvent::Ack { .. }), "{evs:?}");
        let rep = crate::verify::verify(&evs, &[], 1_000_000, 0);
        assert!(rep.passed(), "{rep:?}");
        assert_eq!((rep.ignored_released, rep.checked), (1, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sequence_numbers_are_unique_across_threads() {
        let dir = std::env::temp_dir().join(format!("dhcpperf-rec-seq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Recorder::create(&dir.join("r.jsonl")).unwrap();
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).map(|_| r.next_seq()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        all.sort_unstable();
        assert_eq!(all, (1..=4000).collect::<Vec<u64>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
