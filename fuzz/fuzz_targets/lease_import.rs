//! Both lease-file importers (Kea memfile CSV, ISC dhcpd.leases) on arbitrary bytes: never
//! panic and always terminate (every item consumes input).
#![no_main]
use libfuzzer_sys::fuzz_target;
use prodhcp_ctl::import::{lease_source, ImportFormat};

fuzz_target!(|data: &[u8]| {
    for format in [ImportFormat::KeaCsv, ImportFormat::Isc] {
        let mut src = lease_source(format, data);
        for _ in 0..=data.len() + 2 {
            match src.next_item() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
