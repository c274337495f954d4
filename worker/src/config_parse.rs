//! Parsing a new configuration off the loop thread (issue 10): a carrier-size file (100,000
//! subnets, 28 MB) takes about half a second to parse and validate; parsed on the loop thread,
//! every request waited that long (and the kernel dropped what overflowed the socket buffer).
//! The text goes to a short-lived thread; the loop keeps serving with the configuration in
//! force and applies the new one when the thread wakes it (a `mio::Waker`). Frames are parsed
//! one at a time and answered in the order they came, as the supervisor counts on.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use prodhcp_config::Config;

/// The result of parsing one configuration frame.
pub(crate) type Parsed = Result<Config, String>;

/// Configuration frames waiting to be parsed, and the one being parsed.
pub(crate) struct BackgroundParse {
    waker: Arc<mio::Waker>,
    queue: VecDeque<Vec<u8>>,
    in_flight: Option<Receiver<Parsed>>,
}

impl BackgroundParse {
    /// A parser that wakes the loop through `waker` when a result is ready.
    pub(crate) fn new(waker: Arc<mio::Waker>) -> BackgroundParse {
        BackgroundParse {
            waker,
            queue: VecDeque::new(),
            in_flight: None,
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
        let spawned = std::thread::Builder::new()
            .name("config-parse".into())
            .spawn(move || {
                let _ = tx.send(parse_config(&text));
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

    /// The next finished result, in submission order, if one is ready.
    pub(crate) fn take_done(&mut self) -> Option<Parsed> {
        let rx = self.in_flight.as_ref()?;
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                Err("the parse thread ended without a result".into())
            }
        };
        self.in_flight = None;
        self.start_next();
        Some(result)
    }
}

/// Parses and validates a configuration frame's text.
pub(crate) fn parse_config(text: &[u8]) -> Parsed {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    prodhcp_config::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = r#"(
        state_dir: "/tmp/x",
        subnets: [ (network: "10.0.0.0/24", pools: ["10.0.0.10-10.0.0.20"]) ],
    )"#;

    fn wait(p: &mut BackgroundParse) -> Parsed {
        for _ in 0..500 {
            if let Some(r) = p.take_done() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no parse result within 5 s");
    }

    #[test]
    fn frames_are_parsed_off_the_caller_and_answered_in_order() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).unwrap());
        let mut p = BackgroundParse::new(waker);
        assert!(p.take_done().is_none());
        p.submit(MINIMAL.as_bytes().to_vec());
        p.submit(b"not a configuration".to_vec());
        p.submit(MINIMAL.replace("10.0.0.20", "10.0.0.30").into_bytes());
        assert!(p.busy());
        // The waker fires when a result is ready.
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(9)));
        let first = wait(&mut p).expect("the first frame parses");
        assert_eq!(first.subnets[0].pools[0].last.octets()[3], 20);
        assert!(wait(&mut p).is_err(), "the second frame is refused");
        let third = wait(&mut p).expect("the third frame parses");
        assert_eq!(third.subnets[0].pools[0].last.octets()[3], 30);
        assert!(!p.busy());
        assert!(p.take_done().is_none());
    }
}
