//! Preparing a new configuration off the loop thread (issue 10): with 100,000 subnets decoding
//! the supervisor's binary form takes ~0.1 s and building the hot-path view (`ServeConfig`:
//! slot spans, reservation maps, subnet lookup) ~0.2 s (parsing the RON text, as the worker
//! did before, ~0.5 s more); done on the loop thread, every request waited that long (and the
//! kernel dropped what overflowed the socket buffer). A short-lived thread decodes the frame,
//! maps the lease table itself for the slot spans (the supervisor changed its directory, if
//! the configuration needed that, before sending it) and builds the view; the loop keeps
//! serving with the configuration in force and swaps the new one in when the thread wakes it
//! (a `mio::Waker`). Frames are handled one at a time and answered in the order they came, as
//! the supervisor counts on.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prodhcp_config::Config;
use shm_layout::Table;

use crate::serve_config::ServeConfig;

/// The result of preparing one configuration frame: the hot-path view, configuration inside.
pub(crate) type Parsed = Result<ServeConfig, String>;

/// Configuration frames waiting to be parsed, and the one being parsed.
pub(crate) struct BackgroundParse {
    waker: Arc<mio::Waker>,
    queue: VecDeque<Vec<u8>>,
    in_flight: Option<Receiver<Parsed>>,
    /// When the frame being parsed was handed to its thread.
    started: Instant,
}

impl BackgroundParse {
    /// A parser that wakes the loop through `waker` when a result is ready.
    pub(crate) fn new(waker: Arc<mio::Waker>) -> BackgroundParse {
        BackgroundParse {
            waker,
            queue: VecDeque::new(),
            in_flight: None,
            started: Instant::now(),
        }
    }

    /// Queues a configuration frame's text; parsing starts now if none is under way.
    pub(crate) fn submit(&mut self, text: Vec<u8>) {
        self.queue.push_back(text);
        self.start_next();
    }

    /// Whether a frame is being parsed or waits.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queue.is_empty()
    }

    fn start_next(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(text) = self.queue.pop_front() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let waker = Arc::clone(&self.waker);
        self.started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("config-parse".into())
            .spawn(move || {
                let _ = tx.send(prepare(&text));
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => self.in_flight = Some(rx),
            Err(e) => {
                // No thread (resource limits): the frame is answered as refused, the
                // supervisor then puts the previous configuration back everywhere.
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(Err(format!("cannot start the parse thread: {e}")));
                self.in_flight = Some(rx);
            }
        }
    }

    /// The next finished result, in submission order, if one is ready, with the time from
    /// handing it to its thread until now.
    pub(crate) fn take_done(&mut self) -> Option<(Parsed, Duration)> {
        let rx = self.in_flight.as_ref()?;
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                Err("the parse thread ended without a result".into())
            }
        };
        let took = self.started.elapsed();
        self.in_flight = None;
        self.start_next();
        Some((result, took))
    }
}

/// A configuration frame's configuration: the supervisor's binary form decoded, or RON text
/// parsed and validated (`prodhcp_config::handoff`).
pub(crate) fn parse_config(bytes: &[u8]) -> Result<Config, String> {
    prodhcp_config::handoff::decode(bytes)
}

/// A configuration frame made ready to swap in: decoded, checked against the lease table as it
/// is now (mapped here for the purpose, dropped after: the supervisor changes the table's
/// directory, if the configuration needs that, before sending it), and its view built.
fn prepare(bytes: &[u8]) -> Parsed {
    let config = parse_config(bytes)?;
    let table = Table::open(&config.table_file)
        .map_err(|e| format!("lease table for the new configuration: {e}"))?;
    if !table.serves(&crate::run::table_spec(&config)) {
        return Err("the lease table does not hold this configuration's pool layout".into());
    }
    Ok(ServeConfig::build(config, &table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(dir: &std::path::Path, last: u8) -> String {
        format!(
            r#"(
            state_dir: "{}",
            subnets: [ (network: "10.0.0.0/24", pools: ["10.0.0.10-10.0.0.{last}"]) ],
        )"#,
            dir.display()
        )
    }

    fn wait(p: &mut BackgroundParse) -> Parsed {
        for _ in 0..500 {
            if let Some((r, _)) = p.take_done() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no parse result within 5 s");
    }

    #[test]
    fn frames_are_prepared_off_the_caller_and_answered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // The table holds exactly the 21 addresses .10-.30.
        let wide = prodhcp_config::parse(&minimal(dir.path(), 30)).unwrap();
        let spec = crate::run::table_spec(&wide);
        drop(Table::create(&wide.table_file, &spec).unwrap());
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).unwrap());
        let mut p = BackgroundParse::new(waker);
        assert!(p.take_done().is_none());
        p.submit(minimal(dir.path(), 30).into_bytes());
        p.submit(b"not a configuration".to_vec());
        p.submit(prodhcp_config::handoff::encode(&wide));
        assert!(p.busy());
        // The waker fires when a result is ready.
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(9)));
        let first = wait(&mut p).expect("the first frame (RON text) is prepared");
        assert_eq!(first.config.subnets[0].pools[0].last.octets()[3], 30);
        // Spans cover the network's slots in the table: the 21 addresses .10-.30.
        assert_eq!(first.subnets[0].slot_total(), 21);
        assert!(wait(&mut p).is_err(), "the second frame is refused");
        let third = wait(&mut p).expect("the third frame (binary form) is prepared");
        assert_eq!(third.config, wide);
        // A pool the table has no slots for: refused, the configuration in force stays.
        p.submit(minimal(dir.path(), 40).into_bytes());
        let refused = wait(&mut p).expect_err("a layout the table does not hold");
        assert!(refused.contains("pool layout"), "{refused}");
        assert!(!p.busy());
        assert!(p.take_done().is_none());
    }
}
