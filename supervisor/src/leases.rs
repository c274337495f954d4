//! Conversions between lease-table slots and the control protocol's lease records, plus the
//! table-wide operations the supervisor runs: export, import, pool statistics, reservations.

use std::net::Ipv4Addr;

use prodhcp_config::{Config, SubnetLookup};
use shm_layout::{
    ChangeContext, ChangeReason, ClientKey, KeyKind, LeaseState, Ring, SlotImage, Table, Writer,
};

use prodhcp_proto::{self as proto, ClientId, HwAddr, ImportResult, LeaseRecord, PoolStats};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Converts a table state to the protocol's: both enums list the same states in the same
/// order (their `ALL`), so the conversion is by position; `states_convert_by_name` checks it.
pub fn proto_state(s: LeaseState) -> proto::LeaseState {
    proto::LeaseState::ALL[s as usize]
}

fn table_state(s: proto::LeaseState) -> LeaseState {
    LeaseState::ALL[s as usize]
}

/// The lease record of a slot (None for pristine/free slots without history). `lookup` is
/// [`SubnetLookup::build`] of `config` (built once per export, not per lease: a linear search
/// of 100,000 subnets per lease made an export of millions of leases take hours).
pub fn record_of(
    table: &Table,
    config: &Config,
    lookup: &SubnetLookup,
    slot: u32,
    img: &SlotImage,
) -> Option<LeaseRecord> {
    let addr = Ipv4Addr::from(table.addr_of_slot(slot)?);
    let client_id = match img.key.kind() {
        KeyKind::ClientId => ClientId::new(img.key.as_bytes()),
        _ => None,
    };
    Some(LeaseRecord {
        address: addr,
        state: proto_state(img.state),
        hwaddr: HwAddr::new(img.hwaddr()).ok(),
        client_id,
        expires: u64::from(img.expires),
        subnet: lookup
            .for_addr(addr)
            .and_then(|i| config.subnets.get(i))
            .map(|s| s.network.to_string()),
        hostname: None,
    })
}

/// Whether export lists a slot: everything except never-used free slots.
pub fn exported(img: &SlotImage) -> bool {
    !(img.state == LeaseState::Free && img.key.is_none() && img.hlen == 0)
}

/// Every exported lease whose hardware address is `mac`.
pub fn leases_by_mac(
    table: &Table,
    config: &Config,
    lookup: &SubnetLookup,
    mac: &[u8],
) -> Vec<LeaseRecord> {
    (0..table.slot_count())
        .filter_map(|slot| {
            let img = table.read(slot).ok()?;
            (img.hwaddr() == mac && img.state != LeaseState::Free)
                .then(|| record_of(table, config, lookup, slot, &img))?
        })
        .collect()
}

/// Usage of every pool.
pub fn pool_stats(table: &Table, config: &Config) -> Vec<PoolStats> {
    let mut out = Vec::new();
    for s in &config.subnets {
        for p in &s.pools {
            // One run of slots, or several when live pool changes grew the pool.
            let spans = table.slot_spans(u32::from(p.first), u32::from(p.last));
            let free = spans.iter().map(|r| table.count_free(r.clone())).sum();
            let mut c = crate::census::StateCounts::default();
            for slot in spans.into_iter().flatten() {
                if let Ok(info) = table.read(slot) {
                    c.add(info.state);
                }
            }
            out.push(PoolStats {
                first: p.first,
                last: p.last,
                size: p.len(),
                free,
                offered: c.offered,
                leased: c.leased,
                declined: c.declined,
                reserved: c.reserved,
            });
        }
    }
    out
}

/// Applies one batch of imported records, in order, as owner `owner` through `ring`.
///
/// Unless `force` is set, a record is skipped (counted, and listed with its position in
/// [`ImportResult::skipped_rows`]) when its address is reserved, or is offered, leased or
/// quarantined for another client whose time has not run out: an import must not take an
/// address from a client that holds it, or from the client it is reserved for.
pub fn import_batch(
    table: &Table,
    ring: &Ring,
    owner: u8,
    records: &[LeaseRecord],
    force: bool,
) -> ImportResult {
    let mut res = ImportResult::default();
    let now = now_secs();
    let writer = Writer::new(table, owner, ring);
    for (index, r) in records.iter().enumerate() {
        match import_one(writer, r, now, force) {
            Ok(None) => res.imported += 1,
            Ok(Some(reason)) => {
                res.skipped += 1;
                res.skipped_rows.push(prodhcp_proto::SkippedRow {
                    index: index as u32,
                    line: None,
                    address: r.address,
                    reason,
                });
            }
            Err(e) => {
                res.rejected += 1;
                if res.errors.len() < 100 {
                    res.errors.push(format!("{}: {e}", r.address));
                }
            }
        }
    }
    res
}

/// Why the current contents of a slot must not be overwritten by an import of `new` (`None`
/// when they may).
fn import_would_clobber(cur: &SlotImage, new: &SlotImage, now: u64) -> Option<String> {
    let running = u64::from(cur.expires) > now;
    match cur.state {
        LeaseState::Reserved => Some("the address is reserved".into()),
        LeaseState::Leased | LeaseState::Offered if running && cur.key != new.key => Some(format!(
            "the address is {} to another client until {}",
            if cur.state == LeaseState::Leased {
                "leased"
            } else {
                "offered"
            },
            cur.expires
        )),
        LeaseState::Declined if running => Some(format!(
            "the address is quarantined (declined) until {}",
            cur.expires
        )),
        _ => None,
    }
}

/// Imports one record; `Ok(Some(reason))` when it was skipped to protect the slot.
fn import_one(
    writer: Writer<'_>,
    r: &LeaseRecord,
    now: u64,
    force: bool,
) -> Result<Option<String>, String> {
    let table = writer.table();
    let slot = table
        .slot_of_addr(u32::from(r.address))
        .ok_or("address is in no configured pool or reservation")?;
    let hw = r.hwaddr.as_ref().map(HwAddr::as_bytes);
    let cid = r.client_id.as_ref().map(ClientId::as_bytes);
    let mut state = table_state(r.state);
    if state == LeaseState::Leased && r.expires <= now {
        state = LeaseState::Expired;
    }
    let mut img = SlotImage {
        state,
        expires: r.expires.min(u64::from(u32::MAX)) as u32,
        updated: now as u32,
        ..SlotImage::PRISTINE
    };
    if let Some(h) = &hw {
        img.set_hwaddr(1, h);
    }
    img.key = match (&cid, &hw) {
        (Some(c), _) => ClientKey::from_client_id(c),
        (None, Some(h)) => ClientKey::from_hwaddr(1, h),
        (None, None) if state == LeaseState::Declined => ClientKey::NONE,
        (None, None) => return Err("neither hwaddr nor client_id".into()),
    };
    if state == LeaseState::Declined {
        img.key = ClientKey::NONE;
    }
    for _ in 0..16 {
        let cur = table.read(slot).map_err(|e| e.to_string())?;
        if !force {
            if let Some(why) = import_would_clobber(&cur, &img, now) {
                return Ok(Some(why));
            }
        }
        let res = writer.update(
            slot,
            &cur,
            &img,
            &ChangeContext {
                reason: ChangeReason::Import,
                time_ms: now * 1000,
                context: b"",
            },
        );
        match res {
            Ok(_) => return Ok(None),
            Err(shm_layout::UpdateError::Conflict) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("slot busy".into())
}

/// Marks the in-pool slots of configured reservations as reserved (so the allocator stops
/// offering them) and returns slots reserved by a previous configuration to the pool.
/// Returns (reserved, released).
pub fn apply_reservations(
    table: &Table,
    ring: &Ring,
    owner: u8,
    config: &Config,
    previous: Option<&Config>,
) -> (u64, u64) {
    let now = now_secs();
    let mut reserved_addrs = std::collections::HashMap::new();
    for s in &config.subnets {
        for r in &s.reservations {
            let keys = ClientKey::reservation_keys(r.client_id.as_deref(), r.mac.as_deref());
            reserved_addrs.insert(u32::from(r.address), keys);
        }
    }
    let writer = Writer::new(table, owner, ring);
    let mut n_res = 0;
    let mut n_rel = 0;
    let ctx = ChangeContext {
        reason: ChangeReason::Reservation,
        time_ms: now * 1000,
        context: b"",
    };
    for (&addr, keys) in &reserved_addrs {
        let Some(slot) = table.slot_of_addr(addr) else {
            continue;
        };
        let Ok(cur) = table.read(slot) else { continue };
        if cur.state.is_allocatable() {
            let new = SlotImage {
                state: LeaseState::Reserved,
                key: keys.first().copied().unwrap_or(ClientKey::NONE),
                updated: now as u32,
                ..cur
            };
            if writer.update(slot, &cur, &new, &ctx).is_ok() {
                n_res += 1;
            }
        }
    }
    // Addresses the previous configuration reserved and this one does not go back to the
    // pool (at start there is no previous configuration: the workers' sweepers do it).
    for old in previous.map(|c| c.subnets.as_slice()).unwrap_or(&[]) {
        for r in &old.reservations {
            let addr = u32::from(r.address);
            if reserved_addrs.contains_key(&addr) {
                continue;
            }
            let Some(slot) = table.slot_of_addr(addr) else {
                continue;
            };
            let Ok(cur) = table.read(slot) else { continue };
            if cur.state != LeaseState::Reserved {
                continue;
            }
            let new = SlotImage {
                state: LeaseState::Free,
                updated: now as u32,
                ..cur
            };
            if writer.update(slot, &cur, &new, &ctx).is_ok() {
                n_rel += 1;
            }
        }
    }
    (n_res, n_rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_convert_by_name() {
        for (i, &s) in LeaseState::ALL.iter().enumerate() {
            assert_eq!(s as usize, i, "table state codes are positions in ALL");
            assert_eq!(proto_state(s).as_str(), s.name());
            assert_eq!(table_state(proto_state(s)), s);
        }
        assert_eq!(proto::LeaseState::ALL.len(), LeaseState::ALL.len());
    }

    #[test]
    fn import_protects_reserved_held_and_quarantined_slots() {
        let now = 1_000_000u64;
        let key = |b: u8| ClientKey::from_hwaddr(1, &[2, 0, 0, 0, 0, b]);
        let new = SlotImage {
            state: LeaseState::Leased,
            key: key(1),
            expires: (now + 100) as u32,
            ..SlotImage::PRISTINE
        };
        let cur = |state, k, expires: u64| SlotImage {
            state,
            key: k,
            expires: expires as u32,
            ..SlotImage::PRISTINE
        };
        let later = now + 50;
        let earlier = now - 50;
        let protected = [
            cur(LeaseState::Reserved, ClientKey::NONE, 0),
            cur(LeaseState::Leased, key(2), later),
            cur(LeaseState::Offered, key(2), later),
            cur(LeaseState::Declined, ClientKey::NONE, later),
        ];
        for c in &protected {
            assert!(
                import_would_clobber(c, &new, now).is_some(),
                "{:?} must be protected",
                c.state
            );
        }
        let free_to_take = [
            SlotImage::PRISTINE,
            cur(LeaseState::Leased, key(2), earlier),
            cur(LeaseState::Leased, key(1), later), // the same client: an update
            cur(LeaseState::Expired, key(2), earlier),
            cur(LeaseState::Released, key(2), later),
            cur(LeaseState::Declined, ClientKey::NONE, earlier),
        ];
        for c in &free_to_take {
            assert_eq!(import_would_clobber(c, &new, now), None, "{:?}", c.state);
        }
    }
}
