//! The workers' replication doorbells, syncd's side: one eventfd per worker, inherited from
//! the supervisor (`prodhcp_proto::launch::syncd_doorbell`: worker i's at descriptor 5 + i).
//!
//! Protocol: syncd first publishes the new replicated position in the worker's ring
//! (`shm_layout::Ring::publish_replicated`, release ordering) or changes its hold
//! (`Ring::set_hold`), then calls [`Doorbells::wake`] with the ring's owner id. The worker,
//! woken in its event loop, reads `replicated()` and sends every held reply it covers. Writes
//! coalesce (the eventfd is a counter), so waking once per published position, or once per
//! group commit, is enough; a wake never blocks (the descriptors are non-blocking).

use std::io;
use std::os::fd::OwnedFd;

use prodhcp_proto::launch::syncd_doorbell;
use shm_layout::worker_owner;

/// Every worker's doorbell, in worker order.
#[derive(Debug)]
pub struct Doorbells {
    fds: Vec<OwnedFd>,
}

impl Doorbells {
    /// Takes the `workers` doorbells the supervisor placed at exec (the configuration's
    /// effective worker count); an error naming the first one missing.
    pub fn from_inherited(workers: usize) -> Result<Doorbells, io::Error> {
        let fds = (0..workers)
            .map(|i| {
                let d = syncd_doorbell(i);
                prodhcp_proto::launch::take_inherited(d)
                    .map_err(|e| io::Error::new(e.kind(), format!("{} {i}: {e}", d.name)))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Doorbells { fds })
    }

    /// Doorbells over given descriptors (tests; worker i's at index i).
    pub fn from_fds(fds: Vec<OwnedFd>) -> Doorbells {
        Doorbells { fds }
    }

    /// How many workers have a doorbell.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Wakes the worker whose ring has owner id `owner` (`shm_layout::worker_owner(id)`).
    /// Never blocks; an owner without a doorbell (not a worker's) is ignored. A full counter
    /// (EAGAIN) means a wake is pending already.
    pub fn wake(&self, owner: u8) {
        let Some(fd) = (0..self.fds.len())
            .find(|&i| worker_owner(i) == owner)
            .and_then(|i| self.fds.get(i))
        else {
            return;
        };
        match nix::unistd::write(fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => tracing::warn!(owner, error = %e, "cannot ring a worker's doorbell"),
        }
    }

    /// Wakes every worker.
    pub fn wake_all(&self) {
        for i in 0..self.fds.len() {
            self.wake(worker_owner(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    #[test]
    fn wake_writes_the_doorbell_of_the_owner_only() {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let a = EventFd::from_flags(flags).expect("eventfd");
        let b = EventFd::from_flags(flags).expect("eventfd");
        let dup = |e: &EventFd| {
            use std::os::fd::AsFd;
            e.as_fd().try_clone_to_owned().expect("dup")
        };
        let bells = Doorbells::from_fds(vec![dup(&a), dup(&b)]);
        bells.wake(worker_owner(1));
        bells.wake(worker_owner(1));
        bells.wake(200); // no such worker
        assert_eq!(b.read().expect("b was woken"), 2, "two wakes coalesce");
        assert_eq!(
            a.read().expect_err("a was not woken"),
            nix::errno::Errno::EAGAIN
        );
        bells.wake_all();
        assert_eq!(a.read().expect("woken"), 1);
        assert_eq!(b.read().expect("woken"), 1);
    }
}
