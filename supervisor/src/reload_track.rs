//! Following a configuration reload until every worker has answered it.
//!
//! A reload is *done* only when every worker that was running when it was sent has applied the
//! new configuration (a worker started meanwhile gets the new text at start, and one that dies
//! is restarted with it, so neither is waited for). It *fails* as soon as one worker refuses it,
//! or when some worker has not answered within [`RELOAD_DEADLINE`]; the supervisor then puts
//! the previous configuration back everywhere so that no two workers serve different ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long workers may take to answer a reload.
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// Where a reload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadProgress {
    /// Some workers have not answered yet.
    Waiting,
    /// Every worker applied it, this long after the reload began.
    Applied(Duration),
    /// A worker refused it (worker id, its message), or did not answer in time.
    Failed(String),
}

/// One reload in flight.
#[derive(Debug, Clone)]
pub struct ReloadTracker {
    /// The generation the reload will have once applied.
    pub generation: u64,
    started: Instant,
    waiting: BTreeSet<usize>,
    failure: Option<String>,
}

impl ReloadTracker {
    /// A reload of `generation` sent to `workers` at `started`.
    pub fn new(
        generation: u64,
        started: Instant,
        workers: impl IntoIterator<Item = usize>,
    ) -> Self {
        ReloadTracker {
            generation,
            started,
            waiting: workers.into_iter().collect(),
            failure: None,
        }
    }

    /// Worker `id` applied it.
    pub fn applied(&mut self, id: usize) {
        self.waiting.remove(&id);
    }

    /// Worker `id` refused it with `message`.
    pub fn refused(&mut self, id: usize, message: &str) {
        self.waiting.remove(&id);
        if self.failure.is_none() {
            self.failure = Some(format!("worker {id} refused the configuration: {message}"));
        }
    }

    /// Worker `id` died; it is restarted with the new configuration, so it is not waited for.
    pub fn gone(&mut self, id: usize) {
        self.waiting.remove(&id);
    }

    /// Where the reload stands at `now`.
    pub fn progress(&self, now: Instant) -> ReloadProgress {
        if let Some(f) = &self.failure {
            return ReloadProgress::Failed(f.clone());
        }
        if self.waiting.is_empty() {
            return ReloadProgress::Applied(now.saturating_duration_since(self.started));
        }
        if now.saturating_duration_since(self.started) >= RELOAD_DEADLINE {
            let ids: Vec<String> = self.waiting.iter().map(ToString::to_string).collect();
            return ReloadProgress::Failed(format!(
                "worker(s) {} did not answer within {} s",
                ids.join(", "),
                RELOAD_DEADLINE.as_secs()
            ));
        }
        ReloadProgress::Waiting
    }

    /// The workers not heard from yet.
    pub fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_only_when_every_worker_applied() {
        let t0 = Instant::now();
        let mut r = ReloadTracker::new(3, t0, [0, 1, 2]);
        assert_eq!(r.progress(t0), ReloadProgress::Waiting);
        r.applied(0);
        r.applied(2);
        assert_eq!(r.progress(t0), ReloadProgress::Waiting);
        assert_eq!(r.waiting().collect::<Vec<_>>(), vec![1]);
        r.applied(1);
        let later = t0 + Duration::from_millis(7);
        assert_eq!(
            r.progress(later),
            ReloadProgress::Applied(Duration::from_millis(7))
        );
    }

    #[test]
    fn one_refusal_fails_the_reload() {
        let t0 = Instant::now();
        let mut r = ReloadTracker::new(3, t0, [0, 1]);
        r.applied(0);
        r.refused(1, "bad subnet");
        match r.progress(t0) {
            ReloadProgress::Failed(m) => {
                assert!(m.contains("worker 1") && m.contains("bad subnet"), "{m}")
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_dead_worker_is_not_waited_for_but_a_silent_one_times_out() {
        let t0 = Instant::now();
        let mut r = ReloadTracker::new(2, t0, [0, 1]);
        r.gone(1);
        r.applied(0);
        assert!(matches!(r.progress(t0), ReloadProgress::Applied(_)));
        let r = ReloadTracker::new(2, t0, [0, 1]);
        match r.progress(t0 + RELOAD_DEADLINE) {
            ReloadProgress::Failed(m) => assert!(m.contains("0, 1"), "{m}"),
            p => panic!("{p:?}"),
        }
    }
}
