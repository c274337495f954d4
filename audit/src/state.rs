//! The audit process's small persistent state: what each target acknowledged, the losses,
//! and the seq floor, as one JSON file replaced atomically (write a temporary file, fsync,
//! rename, fsync the directory).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many lost ranges [`AuditState::record_loss`] keeps (the newest).
pub const MAX_LOST_RANGES: usize = 64;

/// The persistent audit state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AuditState {
    /// Target (its canonical text) → the last seq it acknowledged.
    pub acked: BTreeMap<String, u64>,
    /// Records lost in all (spool full, oldest segment dropped).
    pub lost_records: u64,
    /// The last [`MAX_LOST_RANGES`] lost seq ranges, (first, last) inclusive, oldest first.
    pub lost_ranges: Vec<(u64, u64)>,
    /// Seq numbers below this were used; a restart numbers from here at least.
    pub next_seq_floor: u64,
}

/// Reading or writing the state file failed.
#[derive(thiserror::Error, Debug)]
pub enum StateError {
    /// A file system call failed.
    #[error("audit state {path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid state.
    #[error("audit state {path}: corrupt: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl AuditState {
    /// Reads the state from `path`; a missing file is the default state.
    pub fn load(path: &Path) -> Result<AuditState, StateError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AuditState::default()),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the state to `path` atomically: `<path>.tmp`, fsync, rename, fsync the directory.
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let text = serde_json::to_vec(self).map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&text).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))?;
        Ok(())
    }

    /// Counts a loss of the seq range `first..=last` and remembers the range (the newest
    /// [`MAX_LOST_RANGES`]).
    pub fn record_loss(&mut self, first: u64, last: u64) {
        self.lost_records = self
            .lost_records
            .saturating_add(last.saturating_sub(first).saturating_add(1));
        self.lost_ranges.push((first, last));
        if self.lost_ranges.len() > MAX_LOST_RANGES {
            let extra = self.lost_ranges.len() - MAX_LOST_RANGES;
            self.lost_ranges.drain(..extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        let mut s = AuditState::default();
        s.acked.insert("tcp://127.0.0.1:514".into(), 41);
        s.acked.insert("unix:/dev/log".into(), 40);
        s.record_loss(10, 19);
        s.next_seq_floor = 42;
        s.store(&path).unwrap();
        assert!(!dir.path().join("audit-state.json.tmp").exists());
        let back = AuditState::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.lost_records, 10);
        // A second store replaces the first.
        s.next_seq_floor = 100;
        s.store(&path).unwrap();
        assert_eq!(AuditState::load(&path).unwrap().next_seq_floor, 100);
    }

    #[test]
    fn missing_file_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuditState::load(&dir.path().join("nope.json")).unwrap();
        assert_eq!(s, AuditState::default());
    }

    #[test]
    fn garbage_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-state.json");
        std::fs::write(&path, b"{\"acked\": {\"x\": \"not a number\"").unwrap();
        let e = AuditState::load(&path).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("audit-state.json"), "{e}");
        std::fs::write(&path, [0xff, 0x00, 0x13]).unwrap();
        assert!(matches!(
            AuditState::load(&path),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn older_file_without_new_fields_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, br#"{"acked":{"t":5}}"#).unwrap();
        let s = AuditState::load(&path).unwrap();
        assert_eq!(s.acked.get("t"), Some(&5));
        assert_eq!(s.lost_records, 0);
    }

    #[test]
    fn lost_ranges_keep_the_newest_64() {
        let mut s = AuditState::default();
        for i in 0..100u64 {
            s.record_loss(i * 10, i * 10 + 4);
        }
        assert_eq!(s.lost_ranges.len(), MAX_LOST_RANGES);
        assert_eq!(s.lost_ranges[0], (360, 364));
        assert_eq!(*s.lost_ranges.last().unwrap(), (990, 994));
        assert_eq!(s.lost_records, 500);
    }
}
