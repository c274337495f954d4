//! The cluster key: 32 random bytes shared by every appliance of a cluster, stored as 64 hex
//! characters (and an optional newline) in `cluster.key_file`.
//!
//! It is the Noise pre-shared key (`psk0`) of every peer connection: only a holder of the key
//! completes a handshake, and every frame after it is sealed with keys derived from it. It must
//! be random, not a passphrase: one recorded handshake message lets anyone test guesses offline.
//! So loading refuses anything but exactly 32 bytes of hex, and — as ssh does with private
//! keys — a file that group or others may read or write.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Bytes in a cluster key.
pub const KEY_LEN: usize = 32;
/// Characters of its text form (hex).
pub const KEY_HEX_LEN: usize = 2 * KEY_LEN;

/// A cluster key. Its `Debug` form does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be opened, read or written.
    #[error("cluster key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file may be read or written by group or others.
    #[error(
        "cluster key {}: the file is accessible by group or others (mode {mode:04o}); \
         it must be readable only by its owner: chmod 600 {}",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is not 64 hex characters.
    #[error("cluster key {}: {message}", path.display())]
    Format {
        /// The key file (empty when parsing a string).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The system's random source failed.
    #[error("cannot read random bytes for a cluster key: {0}")]
    Random(String),
}

impl ClusterKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// The key's bytes (the Noise PSK).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The text form: 64 lowercase hex characters, no newline.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the text form: exactly 64 hex characters (either case), optionally followed by
    /// one newline (`\n` or `\r\n`).
    pub fn parse_hex(text: &str) -> Result<ClusterKey, String> {
        let body = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if let Some((at, c)) = body.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(format!(
                "character {c:?} at offset {at} is not a hex digit; a cluster key is exactly \
                 {KEY_HEX_LEN} hex characters ({KEY_LEN} random bytes)"
            ));
        }
        if body.len() != KEY_HEX_LEN {
            return Err(format!(
                "{} hex characters; a cluster key is exactly {KEY_HEX_LEN} ({KEY_LEN} random bytes)",
                body.len()
            ));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = body.get(2 * i..2 * i + 2).unwrap_or("");
            *byte = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
        }
        Ok(ClusterKey(bytes))
    }
}

/// A new random key from the operating system's random source (getrandom(2)).
/// `prodhcpctl ha keygen` is meant to print [`ClusterKey::to_hex`] of one.
pub fn generate() -> Result<ClusterKey, KeyError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(ClusterKey(bytes))
}

/// Loads the key in `path`, refusing a file accessible by group or others, and any text but
/// 64 hex characters with an optional newline.
pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    // Far more than a key: a wrong file is reported by its length, not read whole.
    let mut text = Vec::with_capacity(KEY_HEX_LEN + 2);
    file.take(4096).read_to_end(&mut text).map_err(io)?;
    let format = |message| KeyError::Format {
        path: path.to_path_buf(),
        message,
    };
    let text = std::str::from_utf8(&text)
        .map_err(|_| format("the file is not text; a cluster key is 64 hex characters".into()))?;
    ClusterKey::parse_hex(text).map_err(format)
}

/// Writes `key` to a new file `path` (mode 0600, refusing to overwrite), as 64 hex
/// characters and a newline.
pub fn write_new(path: &Path, key: &ClusterKey) -> Result<(), KeyError> {
    use std::io::Write as _;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn generated_keys_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b, "two generated keys are equal");
        assert_eq!(a.to_hex().len(), 64);
        let path = dir.path().join("cluster.key");
        write_new(&path, &a).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), a);
        // write_new never overwrites.
        assert!(matches!(write_new(&path, &b), Err(KeyError::Io { .. })));
        assert_eq!(format!("{a:?}"), "ClusterKey(..)");
    }

    #[test]
    fn accepts_exactly_64_hex_characters_and_an_optional_newline() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        for (i, text) in [hex.to_string(), format!("{hex}\n"), format!("{hex}\r\n")]
            .iter()
            .enumerate()
        {
            let path = write(dir.path(), &format!("k{i}"), text.as_bytes(), 0o600);
            let key = load(&path).unwrap();
            assert_eq!(key.as_bytes()[1], 0x11);
            assert_eq!(key.as_bytes()[16], 0xff);
            assert_eq!(key.to_hex(), hex.to_lowercase());
        }
        let path = write(dir.path(), "ro", hex.as_bytes(), 0o400);
        assert!(load(&path).is_ok());
    }

    #[test]
    fn refuses_wrong_length_non_hex_and_open_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let (long, two_newlines, leading_space) =
            (format!("{hex}00"), format!("{hex}\n\n"), format!(" {hex}"));
        let cases: &[(&[u8], &str)] = &[
            (
                &hex.as_bytes()[..62],
                "62 hex characters; a cluster key is exactly 64 (32 random bytes)",
            ),
            (
                long.as_bytes(),
                "66 hex characters; a cluster key is exactly 64",
            ),
            (b"", "0 hex characters"),
            (
                two_newlines.as_bytes(),
                "character '\\n' at offset 64 is not a hex digit",
            ),
            (
                b"correct horse battery staple",
                "character 'o' at offset 1 is not a hex digit",
            ),
            (
                leading_space.as_bytes(),
                "character ' ' at offset 0 is not a hex digit",
            ),
            (&[0xff, 0xfe, 0x00], "the file is not text"),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let path = write(dir.path(), &format!("bad{i}"), text, 0o600);
            let err = load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Format { .. }), "{err}");
            let shown = err.to_string();
            assert!(shown.contains(needle), "`{needle}` not in: {shown}");
            assert!(shown.starts_with(&format!("cluster key {}: ", path.display())));
        }
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o660] {
            let path = write(dir.path(), "open", hex.as_bytes(), mode);
            let err = load(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "cluster key {p}: the file is accessible by group or others (mode {mode:04o}); \
                     it must be readable only by its owner: chmod 600 {p}",
                    p = path.display()
                )
            );
        }
        let missing = dir.path().join("missing");
        let err = load(&missing).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
