//! Test helpers shared by the format modules.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use crate::event::{AuditEvent, EventKind, Origin};

pub(crate) fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

prop_compose! {
    pub(crate) fn any_event()(
        kind in proptest::sample::select(EventKind::ALL.to_vec()),
        seq in any::<u64>(),
        time_ms in 0u64..253_402_300_799_000,
        server in any::<String>(),
        node in any::<String>(),
        ip in proptest::option::of(any::<u32>()),
        mac in opt_text(),
        hostname in opt_text(),
        circuit_id in opt_text(),
        finding in opt_text(),
        cause in opt_text(),
        lease in proptest::option::of((0u64..253_402_300_799, 0u64..1_000_000)),
        generation in proptest::option::of(any::<u64>()),
    ) -> AuditEvent {
        let mut ev = AuditEvent::bare(kind, &Origin { server, node, seq }, time_ms);
        ev.ip = ip.map(Ipv4Addr::from);
        ev.mac = mac;
        ev.hostname = hostname;
        ev.circuit_id = circuit_id;
        ev.finding = finding;
        ev.cause = cause;
        if let Some((start, secs)) = lease {
            ev.lease_start = Some(start);
            ev.lease_end = Some((start + secs).min(253_402_300_799));
            ev.lease_seconds = Some(secs);
        }
        ev.generation = generation;
        ev
    }
}
