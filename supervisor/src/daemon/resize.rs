//! Changing the number of workers on SIGHUP (issue 10).
//!
//! More workers: their rings are opened (or created), their sockets join the SO_REUSEPORT group
//! (the kernel appends them), their doorbells are made, the steering program is attached for
//! the larger group and they start with the new configuration. Fewer workers: the steering
//! program first sends every client to the workers that stay (a client may land on another
//! worker than before: the table is shared, its lease is found wherever it lands), the leaving
//! workers get a moment to answer what was already queued on their sockets, then they are
//! stopped, their owners recovered, their sockets closed. Their rings stay on disk; the audit
//! process reads every worker ring that exists, so nothing they recorded is skipped. Every
//! other worker learns the new count with the configuration (its share of the expiry sweep).
//! Not in a cluster: syncd takes one doorbell per worker at its start (the reload is refused).

use std::io;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use prodhcp_proto::launch::{write_frame, FrameKind};
use shm_layout::{worker_owner, Ring};
use tracing::info;

use super::table_setup::recover;
use super::workers::Worker;
use super::{wait_or_kill, Supervisor, STOP_GRACE};

/// How long leaving workers keep serving what is queued on their sockets after the steering
/// program stopped sending them anything new.
const DRAIN: Duration = Duration::from_millis(100);

impl Supervisor {
    /// Brings the number of workers to `want` (1..=64, as the configuration allows). On an
    /// error nothing changed. Called on reload before the new configuration is sent to the
    /// workers that stay.
    pub(super) fn resize_workers(&mut self, want: usize) -> io::Result<()> {
        let have = self.workers.len();
        if want == have || want == 0 {
            return Ok(());
        }
        let t0 = Instant::now();
        if want > have {
            self.add_workers(have, want)?;
        } else {
            self.remove_workers(have, want)?;
        }
        self.ring_names = (0..want)
            .map(|id| format!("worker-{id}"))
            .chain(["supervisor".into(), "import".into()])
            .collect();
        info!(
            from = have,
            to = want,
            ms = t0.elapsed().as_millis() as u64,
            "number of workers changed live"
        );
        Ok(())
    }

    fn add_workers(&mut self, have: usize, want: usize) -> io::Result<()> {
        let cap = u64::from(self.config.ring_capacity);
        let mut rings = Vec::with_capacity(want - have);
        for id in have..want {
            let owner = worker_owner(id);
            let ring = Ring::open_or_create(&self.config.ring_file(owner), owner, cap)
                .map_err(|e| io::Error::other(format!("ring of worker {id}: {e}")))?;
            // A ring left by an earlier, larger run: its last writer is long gone.
            recover(&self.table, owner, Some(&ring));
            rings.push(ring);
        }
        let mut doorbells = Vec::with_capacity(want - have);
        for _ in have..want {
            doorbells.push(EventFd::from_flags(
                EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
            )?);
        }
        let sockets = crate::sockets::join_group(self.config.listen_port, want - have)?;
        self.sockets.extend(sockets);
        self.doorbells.extend(doorbells);
        if let Err(e) = crate::sockets::steer(&self.sockets[0], want) {
            // Without the program the new sockets would get the kernel's own share (by source
            // address): take them out again.
            self.sockets.truncate(have);
            self.doorbells.truncate(have);
            return Err(e);
        }
        let now = Instant::now();
        for (i, ring) in rings.into_iter().enumerate() {
            self.workers.push(Worker::new(have + i, ring, now));
        }
        for id in have..want {
            self.spawn(id);
        }
        Ok(())
    }

    fn remove_workers(&mut self, have: usize, want: usize) -> io::Result<()> {
        crate::sockets::steer(&self.sockets[0], want)?;
        std::thread::sleep(DRAIN);
        for w in &mut self.workers[want..have] {
            if let Some(ch) = w.channel.as_mut() {
                let _ = ch.set_nonblocking(false);
                let _ = write_frame(ch, FrameKind::Stop, b"");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for w in &mut self.workers[want..have] {
            if let Some(mut c) = w.child.take() {
                wait_or_kill(&mut c, deadline);
            }
            w.channel = None;
            // Stopped in order, it holds no slot; killed at the deadline, it may.
            recover(&self.table, worker_owner(w.id), Some(&w.ring));
        }
        self.workers.truncate(want);
        self.sockets.truncate(want);
        self.doorbells.truncate(want);
        Ok(())
    }
}
