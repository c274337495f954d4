//! The RON configuration parser on arbitrary bytes: never panics, and an accepted configuration
//! has a table layout the lease table accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = prodhcp_config::parse_bytes(data) {
        let ranges = cfg.table_ranges();
        for w in ranges.windows(2) {
            assert!(w[0].last < w[1].first, "table ranges overlap or are unsorted");
        }
    }
});
