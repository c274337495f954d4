//! The supervisor's messages to systemd (sd_notify(3), `Type=notify` units): `READY=1` once
//! the first worker serves, `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1`,
//! `STATUS=` lines, and `WATCHDOG=1` from the poll loop every half `WATCHDOG_USEC`, so a loop
//! that hangs stops feeding the watchdog.
//!
//! Only the supervisor notifies: its children are started without `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` and `WATCHDOG_PID` ([`CHILD_ENV_REMOVED`], `crate::sys::spawn_worker`).
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::warn;

/// Variables of the service manager's protocol that no child inherits.
pub const CHILD_ENV_REMOVED: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// What the supervisor has told the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// Half the watchdog timeout, when the service manager enabled the watchdog for us.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
    reloading: bool,
    /// A send failure was logged (logged once).
    failed: bool,
}

impl Notifier {
    /// Reads the watchdog setting (`WATCHDOG_USEC`, for this process when `WATCHDOG_PID` is
    /// set) from the environment.
    pub fn from_env() -> Notifier {
        Notifier {
            ping_every: sd_notify::watchdog_enabled()
                .filter(|d| !d.is_zero())
                .map(|d| d / 2),
            last_ping: None,
            ready: false,
            reloading: false,
            failed: false,
        }
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.failed {
                warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
                self.failed = true;
            }
        }
    }

    /// Whether `READY=1` was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// `READY=1` with `status`, the first time a worker serves.
    pub fn ready(&mut self, status: &str) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC`) when a reload starts after `READY=1`.
    pub fn reloading(&mut self) {
        if !self.ready || self.reloading {
            return;
        }
        self.reloading = true;
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// `READY=1` with `status` when a reload ends (applied, failed or refused).
    pub fn reloaded(&mut self, status: &str) {
        if !self.reloading {
            return;
        }
        self.reloading = false;
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// How long until the next `WATCHDOG=1` is due (`None`: no watchdog).
    pub fn watchdog_in(&self, now: Instant) -> Option<Duration> {
        let every = self.ping_every?;
        Some(match self.last_ping {
            None => Duration::ZERO,
            Some(at) => (at + every).saturating_duration_since(now),
        })
    }

    /// Sends `WATCHDOG=1` when due; called once per turn of the poll loop.
    pub fn watchdog(&mut self, now: Instant) {
        if self.watchdog_in(now) == Some(Duration::ZERO) {
            self.last_ping = Some(now);
            self.send(&[NotifyState::Watchdog]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_every_half_timeout_and_reloads_only_after_ready() {
        let t0 = Instant::now();
        let mut n = Notifier {
            ping_every: Some(Duration::from_millis(500)),
            last_ping: None,
            ready: false,
            reloading: false,
            failed: false,
        };
        assert_eq!(n.watchdog_in(t0), Some(Duration::ZERO));
        n.watchdog(t0);
        assert_eq!(n.watchdog_in(t0), Some(Duration::from_millis(500)));
        let later = t0 + Duration::from_millis(200);
        assert_eq!(n.watchdog_in(later), Some(Duration::from_millis(300)));
        n.watchdog(later);
        assert_eq!(n.last_ping, Some(t0), "not due yet");
        n.watchdog(t0 + Duration::from_millis(600));
        assert_eq!(n.last_ping, Some(t0 + Duration::from_millis(600)));
        // No RELOADING before READY; RELOADING then READY once.
        n.reloading();
        assert!(!n.reloading);
        n.ready("serving");
        n.reloading();
        assert!(n.reloading);
        n.reloaded("reloaded");
        assert!(!n.reloading);
        let off = Notifier {
            ping_every: None,
            ..n
        };
        assert_eq!(off.watchdog_in(t0), None);
    }
}
