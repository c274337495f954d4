//! Table setup at start: load the configuration, open (create, migrate) and lock the lease
//! table, open the change rings, end writers left from a previous supervisor and recover their
//! owners, repair after an unclean shutdown on an earlier boot, mark the table open.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prodhcp_config::Config;
use shm_layout::{
    worker_owner, ChangeContext, ChangeReason, LayoutSpec, Recovery, Ring, SlotImage, Table,
    TableOpenError, IMPORT_OWNER, SUPERVISOR_OWNER,
};
use tracing::{info, warn};

use crate::error::StartError;
use crate::leases;

/// The lease table and its rings, recovered and ready for workers.
pub(super) struct PreparedTable {
    /// The table, locked by this process and marked open.
    pub(super) table: Table,
    /// Whether the table was cleanly closed (or left on this boot: nothing to repair).
    pub(super) clean: bool,
    /// The supervisor's own ring.
    pub(super) sup_ring: Ring,
    /// The importer's ring.
    pub(super) import_ring: Ring,
    /// One ring per worker, by worker id.
    pub(super) worker_rings: Vec<Ring>,
}

/// Opens the table and every ring, ends writers that outlived their supervisor, recovers every
/// owner, repairs after power loss, marks the table open and applies the reservations.
pub(super) fn prepare_table(config: &Config) -> Result<PreparedTable, StartError> {
    let (table, clean) = open_table(config)?;
    let cap = u64::from(config.ring_capacity);
    let open_ring = |owner: u8| Ring::open_or_create(&config.ring_file(owner), owner, cap);
    let sup_ring = open_ring(SUPERVISOR_OWNER)?;
    let import_ring = open_ring(IMPORT_OWNER)?;
    let n = config.effective_workers();
    let mut rings = Vec::with_capacity(n);
    for id in 0..n {
        rings.push(open_ring(worker_owner(id))?);
    }
    // End every previous writer that still runs (an orphaned worker), then finish or undo
    // their changes: we hold the lock, so no other supervisor starts new ones.
    crate::owners::end_live_writers(&table).map_err(StartError::LiveWriter)?;
    for owner in 1..=127u8 {
        let ring = if owner == SUPERVISOR_OWNER {
            Some(&sup_ring)
        } else if owner == IMPORT_OWNER {
            Some(&import_ring)
        } else {
            (1..=n as u8)
                .contains(&owner)
                .then(|| &rings[usize::from(owner) - 1])
        };
        recover(&table, owner, ring);
    }
    let (was_clean, same_boot) = table.shutdown_state();
    if !was_clean && !same_boot {
        // Power loss or a reboot without a clean stop: pages may be torn. Check everything.
        let t = Instant::now();
        let rep = table.repair(SUPERVISOR_OWNER, &sup_ring);
        warn!(
            corrupt = rep.corrupt.len(),
            locked = rep.locked.len(),
            bitmap_fixed = rep.bitmap_mismatch.len(),
            ms = t.elapsed().as_millis() as u64,
            "unclean shutdown on an earlier boot: checked every slot"
        );
    }
    table.mark_open();
    // On disk before any worker writes: after a power cut the next start must see
    // "unclean, another boot" and repair (see shm_layout::durable).
    if let Err(e) = table.sync_header() {
        warn!(error = %e, "could not write the lease table header to disk");
    }
    let (reserved, _) =
        leases::apply_reservations(&table, &sup_ring, SUPERVISOR_OWNER, config, None);
    if reserved > 0 {
        info!(reserved, "marked reserved addresses");
    }
    Ok(PreparedTable {
        table,
        clean,
        sup_ring,
        import_ring,
        worker_rings: rings,
    })
}

/// Reads and validates a configuration file (exit code 2 on failure).
pub fn load_config(path: &Path) -> Result<(Config, String), StartError> {
    use std::io::Read as _;
    let read_error = |source| StartError::ReadConfig {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |source| StartError::InvalidConfig {
        path: path.to_path_buf(),
        source,
    };
    // Never more than the limit (plus one byte, to see that it is exceeded) is read: a huge
    // file is refused by its size, not after filling memory with it.
    let limit = prodhcp_config::MAX_FILE_SIZE;
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > limit {
        return Err(invalid(prodhcp_config::ConfigError::TooLarge {
            size,
            limit,
        }));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let config = prodhcp_config::parse_bytes(&bytes).map_err(invalid)?;
    // parse_bytes accepted it, so it is UTF-8.
    let text = String::from_utf8(bytes)
        .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    // syncd loads the key again when it starts; checking it here makes a bad key file a
    // configuration error at start, at `--check-config` and on reload, not a restart loop.
    if let Some(cluster) = &config.cluster {
        prodhcp_syncd::key::load(&cluster.key_file)?;
    }
    // `--check-config` says so when the user to drop to does not exist.
    if let Some(user) = &config.user {
        crate::privileges::ServiceUser::lookup(user).map_err(|source| StartError::User {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok((config, text))
}

/// The lease table layout `config` needs: its runs ([`Config::table_layout`]) in the table's
/// form. The worker builds it the same way (its `run::table_spec`); the fingerprint of this
/// layout is what every table on disk was created with (test below).
pub fn table_spec(config: &Config) -> LayoutSpec {
    LayoutSpec::from_ranges(
        config
            .table_layout()
            .iter()
            .map(|t| (t.range.first, t.range.last, t.in_pool)),
    )
}

/// Opens the table the configuration needs: creates it when missing, migrates it when it was
/// built for another pool layout. Returns the table and whether it was cleanly closed.
pub fn open_table(config: &Config) -> Result<(Table, bool), StartError> {
    let path = &config.table_file;
    let spec = table_spec(config);
    let t0 = Instant::now();
    // In a cluster the peers replicate slots by position: both tables must be built the same
    // way whatever their history, so a table whose directory is not exactly the configuration's
    // (in address order) is migrated, never changed in place.
    let clustered = config.cluster.is_some();
    let table = match Table::open(path) {
        Ok(t) if clustered && t.fingerprint() == spec.fingerprint() => t,
        Ok(t) if clustered => {
            warn!("pool layout differs from the table's (or it was changed in place): migrating to the layout every appliance of the cluster builds");
            drop(t);
            migrate(config, &spec)?
        }
        Ok(t) if t.serves(&spec) => t,
        Ok(mut t) => match t.plan_layout(&spec) {
            // The table has room for the change: made in place, no lease moves.
            Ok(plan) => {
                lock_with_retry(&t)?;
                crate::owners::end_live_writers(&t).map_err(StartError::LiveWriter)?;
                let busy = t.apply_layout(&plan, SUPERVISOR_OWNER);
                info!(
                    added = plan.added,
                    into_pool = plan.into_pool,
                    out_of_pool = plan.out_of_pool,
                    retired = plan.retired,
                    busy_slots_left_to_scrub = busy,
                    ms = t0.elapsed().as_millis() as u64,
                    "pool layout changed: table directory updated in place, no lease moved"
                );
                t
            }
            Err(e) => {
                warn!(error = %e, "pool layout change does not fit the table: migrating");
                drop(t);
                migrate(config, &spec)?
            }
        },
        Err(TableOpenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let t = create_with_room(path, &spec)?;
            info!(
                path = %path.display(),
                slots = t.slot_count(),
                capacity = t.geometry().slot_capacity,
                bytes = t.geometry().file_bytes(),
                ms = t0.elapsed().as_millis() as u64,
                "created lease table"
            );
            t
        }
        Err(e) => return Err(e.into()),
    };
    lock_with_retry(&table)?;
    let (clean, same_boot) = table.shutdown_state();
    Ok((table, clean || same_boot))
}

fn lock_with_retry(table: &Table) -> Result<(), StartError> {
    // Workers of a previous supervisor do not hold the lock (they get SIGKILL from the kernel
    // when it goes, and `owners::end_live_writers` ends any that outlived it); another live
    // supervisor does.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match table.lock_exclusive() {
            Ok(()) => return Ok(()),
            Err(e @ TableOpenError::Locked { .. }) if Instant::now() >= deadline => {
                return Err(e.into())
            }
            Err(TableOpenError::Locked { .. }) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Builds a table for the new layout and carries every lease whose address still exists into
/// it; the old file is kept as `<table>.prev`.
fn migrate(config: &Config, spec: &shm_layout::LayoutSpec) -> Result<Table, StartError> {
    let path = &config.table_file;
    let old = Table::open(path)?;
    lock_with_retry(&old)?;
    crate::owners::end_live_writers(&old).map_err(StartError::LiveWriter)?;
    let tmp = with_suffix(path, ".migrating");
    let _ = std::fs::remove_file(&tmp);
    let new = create_with_room(&tmp, spec)?;
    let ring = Ring::open_or_create(
        &config.ring_file(SUPERVISOR_OWNER),
        SUPERVISOR_OWNER,
        u64::from(config.ring_capacity),
    )?;
    let (mut kept, mut dropped) = (0u64, 0u64);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for slot in 0..old.slot_count() {
        let Ok(img) = old.read(slot) else { continue };
        if !leases::exported(&img) {
            continue;
        }
        let Some(addr) = old.addr_of_slot(slot) else {
            continue;
        };
        let Some(ns) = new.slot_of_addr(addr) else {
            dropped += 1;
            continue;
        };
        let ok = shm_layout::Writer::new(&new, SUPERVISOR_OWNER, &ring).update(
            ns,
            &SlotImage::PRISTINE,
            &img,
            &ChangeContext {
                reason: ChangeReason::Migrate,
                time_ms: now_ms,
                context: b"",
            },
        );
        if ok.is_ok() {
            kept += 1;
        }
    }
    new.mark_clean().map_err(StartError::TableWrite)?;
    drop(new);
    let prev = with_suffix(path, ".prev");
    std::fs::rename(path, &prev).map_err(|source| StartError::TableRename {
        what: "keeping old table",
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| StartError::TableRename {
        what: "installing new table",
        source,
    })?;
    warn!(kept, dropped, previous = %prev.display(), "pool layout changed: migrated the lease table");
    drop(old);
    Ok(Table::open_for(path, spec)?)
}

/// A new table for `spec` with room for live pool changes (`shm_layout::default_capacity`).
fn create_with_room(path: &Path, spec: &LayoutSpec) -> Result<Table, TableOpenError> {
    let (slots, ranges) = shm_layout::default_capacity(spec);
    Table::create_with_capacity(path, spec, slots, ranges)
}

/// `path` with `suffix` appended to its file name (`leases.table` → `leases.table.prev`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn recover(table: &Table, owner: u8, ring: Option<&Ring>) {
    match table.recover_owner(owner, ring) {
        Recovery::Nothing | Recovery::IntentCleared => {}
        r => warn!(owner, outcome = ?r, "recovered a change left half done by a dead writer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::RangeSpec;

    /// Two subnets, adjacent pools (merged into one run), a reservation inside a pool (no run of
    /// its own), adjacent reservations outside every pool (one reservation-only run) and one
    /// below its subnet's pool.
    const CFG: &str = r#"(
        state_dir: "/tmp/unused",
        control_socket: "/tmp/unused/ctl.sock",
        interfaces: [],
        workers: 1,
        subnets: [
            (
                network: "10.0.0.0/24",
                pools: ["10.0.0.10-10.0.0.12", "10.0.0.13-10.0.0.20"],
                lease_time: 3600,
                reservations: [
                    (mac: "02:00:00:00:00:99", address: "10.0.0.11"),
                    (mac: "02:00:00:00:00:98", address: "10.0.0.200"),
                    (mac: "02:00:00:00:00:97", address: "10.0.0.201"),
                ],
            ),
            (
                network: "10.1.0.0/16",
                pools: ["10.1.0.10-10.1.0.200"],
                lease_time: 600,
                reservations: [(mac: "02:00:00:00:00:96", address: "10.1.0.5")],
            ),
        ],
    )"#;

    /// The layout as the worker's `run::layout_of` built it before the one definition
    /// ([`table_spec`]): every table on disk was created with this mapping.
    fn layout_as_before(config: &Config) -> LayoutSpec {
        LayoutSpec {
            ranges: config
                .table_layout()
                .into_iter()
                .map(|t| RangeSpec {
                    first: u32::from(t.range.first),
                    last: u32::from(t.range.last),
                    in_pool: t.in_pool,
                })
                .collect(),
        }
    }

    #[test]
    fn the_layout_and_its_fingerprint_are_those_tables_were_built_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = CFG.replace("/tmp/unused", dir.path().to_str().expect("utf-8 path"));
        let config = prodhcp_config::parse(&text).expect("valid configuration");
        let before = layout_as_before(&config);
        let now = table_spec(&config);
        assert_eq!(now, before);
        assert_eq!(now.fingerprint(), before.fingerprint());
        assert_eq!(
            now.ranges
                .iter()
                .map(|r| (r.first, r.last, r.in_pool))
                .collect::<Vec<_>>(),
            [
                (0x0a00_000a, 0x0a00_0014, true),
                (0x0a00_00c8, 0x0a00_00c9, false),
                (0x0a01_0005, 0x0a01_0005, false),
                (0x0a01_000a, 0x0a01_00c8, true),
            ]
        );
        // The value a table built for this configuration holds in its header (computed with
        // the mapping above before the change): it must never move, or existing tables would
        // be taken for another layout and migrated.
        assert_eq!(now.fingerprint(), PINNED_FINGERPRINT);

        // A table created the old way opens for the configuration the new way, and the
        // start-up path keeps it (no migration: no `.prev` file appears).
        Table::create(&config.table_file, &before).expect("create");
        Table::open_for(&config.table_file, &now).expect("same layout");
        let (table, _clean) = open_table(&config).expect("open at start");
        assert_eq!(u64::from(table.slot_count()), before.slot_count());
        assert!(
            !with_suffix(&config.table_file, ".prev").exists(),
            "migrated"
        );
    }

    /// `CFG`'s layout fingerprint, as computed by the mapping tables were built with.
    const PINNED_FINGERPRINT: u64 = 0x9aaedef8e8b1087b;
}
