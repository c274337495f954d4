//! Fixtures shared by the table's unit tests.

use super::*;
use crate::layout::LayoutSpec;
use crate::ring::{ChangeReason, Ring};
use crate::slot::{ClientKey, LeaseState};

pub(super) fn spec() -> LayoutSpec {
    LayoutSpec {
        ranges: vec![
            RangeSpec {
                first: 0x0a00_0064,
                last: 0x0a00_00c7,
                in_pool: true,
            }, // 10.0.0.100-199
            RangeSpec {
                first: 0x0a00_0105,
                last: 0x0a00_0105,
                in_pool: false,
            }, // 10.0.1.5 (reservation outside the pool)
            RangeSpec {
                first: 0x0b00_0000,
                last: 0x0b00_03ff,
                in_pool: true,
            }, // 11.0.0.0-11.0.3.255
        ],
    }
}

pub(super) struct Fixture {
    pub(super) _dir: tempfile::TempDir,
    pub(super) table: Table,
    pub(super) ring: Ring,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create(&dir.path().join("leases.table"), &spec()).unwrap();
    let ring = Ring::open_or_create(&dir.path().join("ring-1"), 1, 1024).unwrap();
    Fixture {
        _dir: dir,
        table,
        ring,
    }
}

pub(super) fn ctx() -> ChangeContext<'static> {
    ChangeContext {
        reason: ChangeReason::Commit,
        time_ms: 1,
        context: b"",
    }
}

pub(super) fn lease(mac: u8) -> SlotImage {
    let mut i = SlotImage {
        state: LeaseState::Leased,
        expires: 2_000_000_000,
        key: ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, mac]),
        ..SlotImage::PRISTINE
    };
    i.set_hwaddr(1, &[2, 0, 0, 0, 0, mac]);
    i
}

pub(super) fn key(id: &str) -> ClientKey {
    ClientKey::from_client_id(id.as_bytes())
}

pub(super) fn holding(k: ClientKey) -> SlotImage {
    SlotImage { key: k, ..lease(0) }
}
