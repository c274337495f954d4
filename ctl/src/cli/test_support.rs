//! Helpers of the command tests: run a command line, fake daemons, canned answers.

use std::io::{BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use prodhcp_proto::{
    encode_response, parse_request, read_line_bounded, ClientId, Command, Counters, HwAddr,
    IndexStatus, LeaseRecord, LeaseState, PoolStats, ReloadStatus, Request, Response, StatsData,
    StatusData, TableStatus, WorkerCounters, WorkerStatus,
};

use super::{run, Cli, ExitStatus, Output};

pub(super) struct Captured {
    pub(super) status: ExitStatus,
    pub(super) out: String,
    pub(super) err: String,
}

pub(super) fn run_args(args: &[&str]) -> Captured {
    let cli = Cli::try_parse_from(args).expect("valid command line");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = run(
        &cli,
        &mut Output {
            out: &mut out,
            err: &mut err,
            stderr_is_tty: false,
        },
    );
    Captured {
        status,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// A fake daemon on a socket in `dir`: accepts one connection and runs `serve` on it.
pub(super) fn fake_daemon<F>(dir: &Path, serve: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(&mut BufReader<UnixStream>, &mut UnixStream) + Send + 'static,
{
    let path = dir.join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        serve(&mut reader, &mut writer);
    });
    (path.to_str().unwrap().to_string(), handle)
}

pub(super) fn read_request(r: &mut BufReader<UnixStream>) -> Request {
    let line = read_line_bounded(r, 16 << 20).unwrap().unwrap();
    parse_request(&line).unwrap()
}

pub(super) fn answer(w: &mut UnixStream, resp: &Response) {
    w.write_all(encode_response(resp).unwrap().as_bytes())
        .unwrap();
}

/// Answer one request with `resp`, asserting its command.
pub(super) fn canned(dir: &Path, expect: Command, resp: Response) -> (String, JoinHandle<()>) {
    fake_daemon(dir, move |r, w| {
        assert_eq!(read_request(r).command, expect);
        answer(w, &resp);
    })
}

pub(super) fn lease(n: u8) -> LeaseRecord {
    LeaseRecord {
        address: Ipv4Addr::new(10, 0, 0, n),
        state: LeaseState::Leased,
        hwaddr: Some(HwAddr::new(&[2, 0, 0, 0, 0, n]).unwrap()),
        client_id: if n & 1 == 0 {
            None
        } else {
            ClientId::new(&[1, 2, 0, 0, 0, 0, n])
        },
        expires: 1_764_000_000,
        subnet: Some("10.0.0.0/8".into()),
        hostname: None,
    }
}

pub(super) fn status_data() -> StatusData {
    StatusData {
        pid: 123,
        state: "running".into(),
        config_generation: 2,
        uptime_secs: 3725,
        last_reload: ReloadStatus {
            ok: true,
            message: "reloaded etc/prodhcp.ron".into(),
            ..ReloadStatus::default()
        },
        workers: vec![
            WorkerStatus {
                id: 0,
                pid: Some(124),
                state: "running".into(),
                restarts: 0,
            },
            WorkerStatus {
                id: 1,
                pid: None,
                state: "restarting".into(),
                restarts: 3,
            },
        ],
        table: TableStatus {
            path: "/var/lib/prodhcp/leases.table".into(),
            slots: 254,
            slot_capacity: 262_398,
            clean_start: true,
            index: IndexStatus {
                occupied: 30,
                capacity: 1024,
                give_ups: 2,
            },
        },
        scrub: Default::default(),
    }
}

pub(super) fn stats_data() -> StatsData {
    let c = |r| Counters {
        packets: [
            ("received", r),
            ("discover", 10),
            ("request", 10),
            ("ack", 10),
            ("dropped", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        drops: [("too_short".to_string(), 1)].into_iter().collect(),
        ..Counters::default()
    };
    StatsData {
        total: c(2000),
        workers: vec![
            WorkerCounters {
                id: 0,
                counters: c(1000),
            },
            WorkerCounters {
                id: 1,
                counters: c(1000),
            },
        ],
        pools: vec![PoolStats {
            first: Ipv4Addr::new(10, 0, 0, 100),
            last: Ipv4Addr::new(10, 0, 0, 199),
            size: 100,
            free: 75,
            offered: 5,
            leased: 18,
            declined: 1,
            reserved: 1,
        }],
    }
}
