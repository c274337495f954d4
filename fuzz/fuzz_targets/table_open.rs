//! The lease-table loader on an arbitrary file: opening never panics, and a table that opens can
//! be read and checked slot by slot without panicking (header, range directory and slots all
//! come from the file).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::PermissionsExt;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("leases.table");
    // A valid header is 4 KiB; pad short inputs so the fuzzer can reach past the size check.
    let mut bytes = data.to_vec();
    if bytes.len() < 8192 {
        bytes.resize(8192, 0);
    }
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    if let Ok(t) = shm_layout::Table::open(&path) {
        let n = t.slot_count().min(4096);
        for slot in 0..n {
            let _ = t.read(slot);
        }
        let _ = t.check();
    }
});
