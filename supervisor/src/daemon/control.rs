//! Control-socket handling: accepting `prodhcpctl` connections, answering their commands
//! (status, stats, leases, import, consumers) and streaming an export from a forked child.

use std::io;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use prodhcp_proto::{
    self as proto, Command, CounterWords, ImportResult, IndexStatus, Response, StatsData,
    StatusData, TableStatus, WorkerCounters, WorkerStatus,
};
use shm_layout::{worker_owner, IMPORT_OWNER};
use tracing::warn;

use super::{Supervisor, CONN_BASE};
use crate::consumers;
use crate::control_server::{self, ConnEvent, Connection};
use crate::leases;
use crate::sys;

impl Supervisor {
    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= control_server::MAX_CONNECTIONS {
                        drop(stream);
                        continue;
                    }
                    let Ok(conn) = Connection::new(stream) else {
                        continue;
                    };
                    let key = self.next_conn;
                    self.next_conn = self.next_conn.wrapping_add(1) % 1_000_000;
                    let fd = conn.stream.as_raw_fd();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut SourceFd(&fd),
                            Token(CONN_BASE + key),
                            Interest::READABLE,
                        )
                        .is_ok()
                    {
                        self.conns.insert(key, conn);
                        self.serve_conn(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    return;
                }
            }
        }
    }

    pub(super) fn close_conn(&mut self, key: usize) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    pub(super) fn serve_conn(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            match conn.poll() {
                ConnEvent::Pending => return,
                ConnEvent::Closed => return self.close_conn(key),
                ConnEvent::Error(msg) => {
                    let _ = conn.respond(&Response::error(msg));
                    return self.close_conn(key);
                }
                ConnEvent::Request(req) => {
                    let peer = conn.peer_uid;
                    if control_server::is_mutating(&req.command)
                        && !matches!(peer, Some(0))
                        && peer != Some(nix::unistd::geteuid().as_raw())
                    {
                        let conn = self.conns.get_mut(&key);
                        if let Some(c) = conn {
                            let _ = c.respond(&Response::error(
                                "permission denied: importing leases needs root or the daemon's user",
                            ));
                        }
                        continue;
                    }
                    if matches!(req.command, Command::Export) {
                        self.export(key);
                        return;
                    }
                    let resp = self.answer(req.command);
                    let ok = self
                        .conns
                        .get_mut(&key)
                        .map(|c| c.respond(&resp).is_ok())
                        .unwrap_or(false);
                    if !ok {
                        return self.close_conn(key);
                    }
                }
            }
        }
    }

    pub(super) fn export(&mut self, key: usize) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        let fd = conn.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let table = &self.table;
        let config = &self.config;
        let lookup = &self.subnet_lookup;
        let mut stream = conn.stream;
        let _ = stream.set_nonblocking(false);
        let child = sys::fork_child(|| {
            let leases = (0..table.slot_count()).filter_map(|slot| {
                let img = table.read(slot).ok()?;
                if !leases::exported(&img) {
                    return None;
                }
                leases::record_of(table, config, lookup, slot, &img)
            });
            match control_server::write_export(&mut stream, leases) {
                Ok(_) => 0,
                Err(_) => 1,
            }
        });
        match child {
            Ok(pid) => self.export_children.push(pid),
            Err(e) => warn!(error = %e, "cannot fork the export writer"),
        }
    }

    pub(super) fn answer(&mut self, cmd: Command) -> Response {
        let ok = |r: Result<Response, proto::ProtoError>| {
            r.unwrap_or_else(|e| Response::error(e.to_string()))
        };
        match cmd {
            Command::Status => ok(Response::ok(&self.status())),
            Command::HaStatus => ok(Response::ok(&self.ha_status())),
            Command::AuditStatus => ok(Response::ok(&self.audit_status())),
            Command::Alarms => ok(Response::ok(&self.alarms_data())),
            Command::Ha { command } => match self.ha_command(command) {
                Ok(accepted) => ok(Response::ok(&accepted)),
                Err(e) => Response::error(e),
            },
            Command::Stats => ok(Response::ok(&self.stats())),
            Command::Lease { address } => {
                let Some(slot) = self.table.slot_of_addr(u32::from(address)) else {
                    return Response::error(format!(
                        "{address} is in no configured pool or reservation"
                    ));
                };
                match self.table.read(slot) {
                    Ok(img) => match leases::record_of(
                        &self.table,
                        &self.config,
                        &self.subnet_lookup,
                        slot,
                        &img,
                    ) {
                        Some(r) => ok(Response::ok(&r)),
                        None => Response::error("no such slot"),
                    },
                    Err(e) => Response::error(format!("{address}: {e}")),
                }
            }
            Command::LeasesByMac { mac } => ok(Response::ok(&leases::leases_by_mac(
                &self.table,
                &self.config,
                &self.subnet_lookup,
                mac.as_bytes(),
            ))),
            Command::Import { leases, force } => {
                let head = self.import_ring.head();
                let r: ImportResult = leases::import_batch(
                    &self.table,
                    &self.import_ring,
                    IMPORT_OWNER,
                    &leases,
                    force,
                );
                self.sync_import(head);
                ok(Response::ok(&r))
            }
            Command::Export => Response::error("export is streamed"),
            Command::Consumers => ok(Response::ok(&consumers::list(&self.named_rings()))),
            Command::ConsumerDrop { ring, id } => {
                match consumers::drop_consumer(&self.named_rings(), &ring, id) {
                    Ok(d) => ok(Response::ok(&d)),
                    Err(e) => Response::error(e),
                }
            }
        }
    }

    /// With `durability: "power"`, writes what an import batch changed to disk before it is
    /// acknowledged (see `shm_layout::durable`).
    pub(super) fn sync_import(&self, head_before: u64) {
        if self.config.durability == prodhcp_config::Durability::Power {
            if let Err(e) =
                shm_layout::durable::sync_changes(&self.table, &self.import_ring, head_before)
            {
                warn!(error = %e, "could not write imported leases to disk");
            }
        }
    }

    pub(super) fn status(&self) -> StatusData {
        StatusData {
            pid: std::process::id(),
            state: if self.stopping { "stopping" } else { "running" }.into(),
            config_generation: self.generation,
            uptime_secs: self.started.elapsed().as_secs(),
            last_reload: self.last_reload.clone(),
            workers: self
                .workers
                .iter()
                .map(|w| WorkerStatus {
                    id: w.id as u32,
                    pid: w.child.as_ref().map(|c| c.id()),
                    state: w.life.state.name().into(),
                    restarts: w.life.restarts,
                })
                .collect(),
            table: TableStatus {
                path: self.table.path().display().to_string(),
                slots: u64::from(self.table.slot_count()),
                slot_capacity: self.table.geometry().slot_capacity,
                clean_start: self.clean_start,
                index: IndexStatus {
                    occupied: self.table.index_occupied(),
                    capacity: self.table.index_capacity() as u64,
                    give_ups: self.table.index_give_ups(),
                },
            },
            scrub: self.scrub.status(&self.table),
        }
    }

    pub(super) fn stats(&self) -> StatsData {
        let mut total = proto::Counters::default();
        let mut per = Vec::new();
        for w in &self.workers {
            let view = CounterWords::new(self.table.counters(worker_owner(w.id)));
            let c = proto::Counters::from_catalogue(|counter| view.get(counter));
            total.add(&c);
            per.push(WorkerCounters {
                id: w.id as u32,
                counters: c,
            });
        }
        StatsData {
            total,
            workers: per,
            pools: leases::pool_stats(&self.table, &self.config),
        }
    }
}
