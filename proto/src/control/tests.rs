use super::*;
use crate::client_id::ClientId;
use proptest::prelude::*;
use std::io::{BufReader, Cursor};

fn sample_lease() -> LeaseRecord {
    LeaseRecord {
        address: Ipv4Addr::new(10, 0, 0, 5),
        state: LeaseState::Leased,
        hwaddr: Some("02:00:00:00:00:01".parse().unwrap()),
        client_id: Some("01020000000001".parse().unwrap()),
        expires: 1_764_000_000,
        subnet: Some("10.0.0.0/8".into()),
        hostname: None,
    }
}

#[test]
fn requests_have_the_documented_wire_shape() {
    let cases = [
        (Command::Status, r#"{"v":1,"cmd":"status"}"#),
        (Command::Stats, r#"{"v":1,"cmd":"stats"}"#),
        (
            Command::Lease {
                address: Ipv4Addr::new(10, 0, 0, 5),
            },
            r#"{"v":1,"cmd":"lease","address":"10.0.0.5"}"#,
        ),
        (
            Command::LeasesByMac {
                mac: "02:00:00:00:00:01".parse().unwrap(),
            },
            r#"{"v":1,"cmd":"leases_by_mac","mac":"02:00:00:00:00:01"}"#,
        ),
        (Command::Export, r#"{"v":1,"cmd":"export"}"#),
        (Command::HaStatus, r#"{"v":1,"cmd":"ha_status"}"#),
    ];
    for (cmd, expected) in cases {
        let line = encode_request(&Request::new(cmd.clone())).unwrap();
        assert_eq!(line, format!("{expected}\n"));
        assert_eq!(parse_request(&line).unwrap(), Request::new(cmd));
    }
}

#[test]
fn import_request_round_trips() {
    let req = Request::new(Command::Import {
        leases: vec![sample_lease(), sample_lease()],
        force: false,
    });
    let line = encode_request(&req).unwrap();
    assert!(line.starts_with(r#"{"v":1,"cmd":"import","leases":[{"address":"10.0.0.5""#));
    assert_eq!(line.matches('\n').count(), 1);
    assert_eq!(parse_request(&line).unwrap(), req);
}

#[test]
fn wrong_version_is_refused_with_a_clear_message() {
    let err = parse_request(r#"{"v":2,"cmd":"status"}"#).unwrap_err();
    assert_eq!(err, ProtoError::UnsupportedVersion(2));
    assert_eq!(
        err.to_string(),
        "unsupported control protocol version 2 (this daemon speaks 1)"
    );
    // Version is checked before the command: an unknown v2 command still reports the version.
    assert_eq!(
        parse_request(r#"{"v":2,"cmd":"frobnicate"}"#).unwrap_err(),
        ProtoError::UnsupportedVersion(2)
    );
    assert_eq!(
        parse_request(r#"{"cmd":"status"}"#).unwrap_err(),
        ProtoError::MissingVersion
    );
    assert!(matches!(
        parse_request(r#"{"v":"1","cmd":"status"}"#),
        Err(ProtoError::InvalidRequest(_))
    ));
    assert!(matches!(
        parse_request(r#"{"v":-1,"cmd":"status"}"#),
        Err(ProtoError::InvalidRequest(_))
    ));
}

#[test]
fn bad_requests_are_errors_not_panics() {
    assert!(matches!(
        parse_request("not json"),
        Err(ProtoError::Malformed(_))
    ));
    assert!(matches!(
        parse_request("[1]"),
        Err(ProtoError::Malformed(_))
    ));
    assert!(matches!(
        parse_request(r#"{"v":1,"cmd":"frobnicate"}"#),
        Err(ProtoError::InvalidRequest(_))
    ));
    assert!(matches!(
        parse_request(r#"{"v":1,"cmd":"lease","address":"10.0.0.256"}"#),
        Err(ProtoError::InvalidRequest(_))
    ));
    assert!(matches!(
        parse_request(r#"{"v":1}"#),
        Err(ProtoError::InvalidRequest(_))
    ));
}

#[test]
fn responses_round_trip() {
    let ok = Response::ok(&ExportDone { count: 3 }).unwrap();
    let line = encode_response(&ok).unwrap();
    assert_eq!(line, "{\"ok\":true,\"data\":{\"count\":3}}\n");
    assert_eq!(parse_response(&line).unwrap(), ok);
    let done: ExportDone = parse_response(&line).unwrap().into_data().unwrap();
    assert_eq!(done.count, 3);

    let err = Response::error("no lease for 10.0.0.5");
    let line = encode_response(&err).unwrap();
    assert_eq!(line, "{\"ok\":false,\"error\":\"no lease for 10.0.0.5\"}\n");
    assert_eq!(parse_response(&line).unwrap(), err);
    assert_eq!(
        parse_response(&line)
            .unwrap()
            .into_data::<ExportDone>()
            .unwrap_err(),
        ProtoError::Failed("no lease for 10.0.0.5".into())
    );
    assert!(parse_response(r#"{"data":1}"#).is_err());
}

#[test]
fn export_frames_parse() {
    let line = encode_export_lease(&sample_lease()).unwrap();
    assert!(line.starts_with("{\"lease\":{"));
    assert_eq!(
        parse_export_frame(&line).unwrap(),
        ExportFrame::Lease(sample_lease())
    );
    let done = encode_response(&Response::ok(&ExportDone { count: 1 }).unwrap()).unwrap();
    assert!(matches!(
        parse_export_frame(&done).unwrap(),
        ExportFrame::Done(Response::Ok(_))
    ));
}

#[test]
fn status_and_stats_match_the_cli_contract() {
    let status = r#"{"pid": 123, "state": "running", "config_generation": 1, "uptime_secs": 5,
        "last_reload": {"ok": true, "message": "loaded"},
        "workers": [{"id": 0, "pid": 124, "state": "running", "restarts": 0}],
        "table": {"path": "/var/lib/prodhcp/leases.table", "slots": 254, "clean_start": true}}"#;
    let s: StatusData = serde_json::from_str(status).unwrap();
    assert_eq!(s.workers[0].pid, Some(124));
    assert_eq!(s.table.slots, 254);

    let stats = r#"{"total": {"received": 9, "discover": 1, "request": 1, "decline": 0, "release": 0,
        "inform": 0, "offer": 1, "ack": 1, "nak": 0, "dropped": 2, "drops": {"too_short": 2}},
        "workers": [{"id": 0, "received": 9, "discover": 1, "request": 1, "decline": 0, "release": 0,
        "inform": 0, "offer": 1, "ack": 1, "nak": 0, "dropped": 2, "drops": {"too_short": 2}}],
        "pools": [{"first": "10.0.0.100", "last": "10.0.0.200", "size": 101, "free": 100,
        "offered": 0, "leased": 1, "declined": 0, "reserved": 0}]}"#;
    let st: StatsData = serde_json::from_str(stats).unwrap();
    assert_eq!(st.workers[0].counters.packet("received"), 9);
    assert_eq!(st.total.packet("ack"), 1);
    assert!(st.total.events.is_empty());
    assert_eq!(st.total.drops.get("too_short"), Some(&2));
    let re = serde_json::to_value(&st).unwrap();
    assert_eq!(re["workers"][0]["id"], 0);
    assert_eq!(re["workers"][0]["dropped"], 2);
    assert_eq!(re["pools"][0]["first"], "10.0.0.100");
}

#[test]
fn lease_record_json_shape() {
    let v = serde_json::to_value(sample_lease()).unwrap();
    assert_eq!(v["address"], "10.0.0.5");
    assert_eq!(v["state"], "leased");
    assert_eq!(v["expires"], 1_764_000_000u64);
    assert!(v.get("hostname").is_none());
    let mut l = sample_lease();
    l.client_id = None;
    let v = serde_json::to_value(&l).unwrap();
    assert!(v["client_id"].is_null());
}

#[test]
fn read_line_bounded_behaviour() {
    let mut r = BufReader::with_capacity(4, Cursor::new(b"abc\r\ndefgh\nlast".to_vec()));
    assert_eq!(
        read_line_bounded(&mut r, 10).unwrap().as_deref(),
        Some("abc")
    );
    assert_eq!(
        read_line_bounded(&mut r, 10).unwrap().as_deref(),
        Some("defgh")
    );
    assert_eq!(
        read_line_bounded(&mut r, 10).unwrap().as_deref(),
        Some("last")
    );
    assert!(read_line_bounded(&mut r, 10).unwrap().is_none());

    let mut r = BufReader::with_capacity(4, Cursor::new(b"0123456789A\n".to_vec()));
    assert!(matches!(
        read_line_bounded(&mut r, 10),
        Err(ReadLineError::TooLong { max: 10 })
    ));
    // Exactly at the limit, with CRLF, is fine.
    let mut r = BufReader::with_capacity(3, Cursor::new(b"0123456789\r\n".to_vec()));
    assert_eq!(
        read_line_bounded(&mut r, 10).unwrap().as_deref(),
        Some("0123456789")
    );
    let mut r = Cursor::new(b"\xff\xfe\n".to_vec());
    assert!(matches!(
        read_line_bounded(&mut r, 10),
        Err(ReadLineError::NotUtf8)
    ));
}

fn arb_lease() -> impl Strategy<Value = LeaseRecord> {
    (
        any::<u32>(),
        prop::sample::select(vec![
            LeaseState::Leased,
            LeaseState::Declined,
            LeaseState::Expired,
            LeaseState::Released,
        ]),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..=16)),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..=20)),
        any::<u64>(),
        prop::option::of(".{0,20}"),
    )
        .prop_map(
            |(a, state, hwaddr, client_id, expires, hostname)| LeaseRecord {
                address: Ipv4Addr::from(a),
                state,
                hwaddr: hwaddr.map(|h| HwAddr::new(&h).unwrap()),
                client_id: client_id.and_then(|c| ClientId::new(&c)),
                expires,
                subnet: None,
                hostname,
            },
        )
}

proptest! {
    #[test]
    fn import_requests_round_trip(leases in prop::collection::vec(arb_lease(), 0..20)) {
        let req = Request::new(Command::Import {
            leases,
            force: false,
        });
        let line = encode_request(&req).unwrap();
        prop_assert_eq!(line.matches('\n').count(), 1);
        prop_assert_eq!(parse_request(&line).unwrap(), req);
    }

    #[test]
    fn parsing_arbitrary_lines_never_panics(s in ".{0,200}") {
        let _ = parse_request(&s);
        let _ = parse_response(&s);
        let _ = parse_export_frame(&s);
    }
}
