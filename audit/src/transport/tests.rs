//! Loopback tests of the senders.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use prodhcp_config::audit::{AuditHost, AuditTarget, Endpoint};

use super::*;

fn local(port: u16) -> Endpoint {
    Endpoint {
        host: AuditHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port,
    }
}

/// The message of seq `n`: varying lengths, the seq readable back.
fn msg(n: u64) -> Vec<u8> {
    let pad = "x".repeat((n % 97) as usize);
    format!("<134>1 2025-12-02T03:00:00.000Z h prodhcp - commit [lease@32473 seq=\"{n}\"] {pad}")
        .into_bytes()
}

fn seq_of(m: &[u8]) -> u64 {
    let s = std::str::from_utf8(m).expect("utf-8");
    let start = s.find("seq=\"").expect("seq") + 5;
    let end = start + s[start..].find('"').expect("quote");
    s[start..end].parse().expect("number")
}

/// Reads octet-counted frames from `r` until one carries seq `last` or the stream ends.
fn read_frames(r: &mut impl Read, last: u64) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // Parse what is buffered.
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp])
                .expect("length digits")
                .parse()
                .expect("length");
            if buf.len() < sp + 1 + len {
                break;
            }
            let frame = buf[sp + 1..sp + 1 + len].to_vec();
            buf.drain(..sp + 1 + len);
            let done = seq_of(&frame) == last;
            frames.push(frame);
            if done {
                return frames;
            }
        }
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return frames,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Polls and sends `first..=last` until `acked() >= last` or `limit` passes.
fn drive(s: &mut Sender, msgs: &[Vec<u8>], last: u64, limit: Duration) {
    let t0 = Instant::now();
    while s.acked() < last && t0.elapsed() < limit {
        let now = Instant::now();
        s.poll(now);
        let from = s.want_after() as usize; // msgs[i] is seq i + 1
        let to = (last as usize).min(msgs.len());
        if from < to {
            let batch: Vec<(u64, &[u8])> = (from..to)
                .map(|i| (i as u64 + 1, msgs[i].as_slice()))
                .collect();
            s.send(&batch, now);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn messages(n: u64) -> Vec<Vec<u8>> {
    (1..=n).map(msg).collect()
}

#[test]
fn tcp_delivers_every_message_once_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        (read_frames(&mut c, 10_000), c)
    });
    let mut s = Sender::new(&AuditTarget::Tcp(local(port)), None);
    assert!(s.reliable());
    assert_eq!(s.target(), format!("tcp://127.0.0.1:{port}"));
    let msgs = messages(10_000);
    drive(&mut s, &msgs, 10_000, Duration::from_secs(30));
    let (frames, _conn) = reader.join().unwrap();
    assert_eq!(frames.len(), 10_000, "{:?}", s.status());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f, &msgs[i], "frame {i}");
    }
    assert_eq!(s.acked(), 10_000);
    let st = s.status();
    assert!(st.connected && st.reliable);
    assert_eq!((st.acked_seq, st.sent_seq), (10_000, 10_000));
    assert_eq!((st.reconnects, st.resent, st.dropped), (0, 0, 0));
}

#[test]
fn tcp_resends_after_a_break_from_the_settled_seq() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The first collector reads up to seq 2000 and then drops the connection.
    let first = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let frames = read_frames(&mut c, 2000);
        drop(c);
        drop(listener);
        frames
    });
    let mut s = Sender::new(&AuditTarget::Tcp(local(port)), None);
    let msgs = messages(3000);
    drive(&mut s, &msgs, 1000, Duration::from_secs(10));
    assert_eq!(s.acked(), 1000);
    // Let 1..=1000 settle (acknowledged more than 2 s ago).
    let t0 = Instant::now();
    while t0.elapsed() < SETTLE + Duration::from_millis(300) {
        s.poll(Instant::now());
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.settled(), 1000);
    drive(&mut s, &msgs, 2000, Duration::from_secs(10));
    let got1 = first.join().unwrap();
    // The close is noticed while idle.
    let t0 = Instant::now();
    while s.connected() && t0.elapsed() < Duration::from_secs(5) {
        s.poll(Instant::now());
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!s.connected());
    assert!(s.status().last_error.is_some());
    assert_eq!(
        s.want_after(),
        1000,
        "resumes after the settled seq, not after acked"
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let second = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        (read_frames(&mut c, 3000), c)
    });
    drive(&mut s, &msgs, 3000, Duration::from_secs(20));
    let (got2, _conn) = second.join().unwrap();
    let seqs1: Vec<u64> = got1.iter().map(|f| seq_of(f)).collect();
    let seqs2: Vec<u64> = got2.iter().map(|f| seq_of(f)).collect();
    assert_eq!(seqs1, (1..=2000).collect::<Vec<_>>());
    assert_eq!(seqs2, (1001..=3000).collect::<Vec<_>>());
    let st = s.status();
    assert_eq!(st.reconnects, 1);
    assert_eq!(st.resent, 1000);
    assert_eq!(st.acked_seq, 3000);
    assert!(st.connected);
}

#[test]
fn tcp_with_nothing_listening_backs_off_and_takes_nothing() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = Sender::new(&AuditTarget::Tcp(local(port)), None);
    let m = msg(1);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        let now = Instant::now();
        s.poll(now);
        assert_eq!(s.send(&[(1, m.as_slice())], now), 0);
        thread::sleep(Duration::from_millis(2));
    }
    assert!(!s.connected());
    assert!(s.status().last_error.is_some());
    let attempts = s.attempts();
    assert!((2..=5).contains(&attempts), "{attempts} attempts in 1 s");
    assert_eq!(s.want_after(), 0);
}

#[test]
fn udp_sends_each_message_as_one_datagram() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let mut s = Sender::new(&AuditTarget::Udp(local(port)), None);
    assert!(!s.reliable());
    let msgs = messages(200);
    let mut buf = vec![0u8; 65536];
    for (i, m) in msgs.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(s.send(&[(seq, m.as_slice())], Instant::now()), 1);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], m.as_slice());
    }
    let st = s.status();
    assert_eq!((st.acked_seq, st.dropped, st.sent_seq), (200, 0, 200));
    assert!(st.connected);
}

#[test]
fn unix_datagrams_arrive_and_a_missing_path_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = Sender::new(&AuditTarget::Unix(path.clone()), None);
    assert_eq!(s.target(), format!("unix:{}", path.display()));
    let msgs = messages(50);
    let batch: Vec<(u64, &[u8])> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64 + 1, m.as_slice()))
        .collect();
    let mut buf = vec![0u8; 65536];
    // Five at a time: a Unix datagram socket queues few datagrams (net.unix.max_dgram_qlen).
    for chunk in batch.chunks(5) {
        assert_eq!(s.send(chunk, Instant::now()), chunk.len());
        for (_, m) in chunk {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], *m);
        }
    }
    assert_eq!((s.acked(), s.status().dropped), (50, 0));

    let mut missing = Sender::new(&AuditTarget::Unix(dir.path().join("none")), None);
    assert_eq!(missing.send(&batch[..10], Instant::now()), 10);
    let st = missing.status();
    assert_eq!((st.dropped, st.acked_seq, st.connected), (10, 10, false));
    assert!(st.last_error.is_some());
    assert_eq!(missing.want_after(), 10);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, signed by it, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A rustls server configuration with the certificate `make_certs` made in `dir`.
fn server_config(dir: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}

#[test]
fn tls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let config = server_config(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (c, _): (TcpStream, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, c);
        (read_frames(&mut tls, 3000), tls)
    });
    let settings = TlsSettings {
        ca_file: dir.path().join("ca.pem"),
        cert_file: None,
        key_file: None,
    };
    let mut s = Sender::new(&AuditTarget::Tls(local(port)), Some(settings));
    assert!(s.reliable());
    let msgs = messages(3000);
    drive(&mut s, &msgs, 3000, Duration::from_secs(30));
    let (frames, _conn) = server.join().unwrap();
    assert_eq!(frames.len(), 3000, "{:?}", s.status());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f, &msgs[i], "frame {i}");
    }
    assert_eq!(s.acked(), 3000);
    assert!(s.connected());
    assert_eq!(s.status().last_error, None);
}

#[test]
fn tls_without_usable_settings_never_connects() {
    // No settings: never connects, says why.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = Sender::new(&AuditTarget::Tls(local(port)), None);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        s.poll(Instant::now());
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!s.connected());
    let err = s.status().last_error.unwrap();
    assert!(err.contains("TLS settings"), "{err}");

    // A CA file that cannot be read.
    let mut s = Sender::new(
        &AuditTarget::Tls(local(port)),
        Some(TlsSettings {
            ca_file: "/nonexistent/ca.pem".into(),
            cert_file: None,
            key_file: None,
        }),
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        s.poll(Instant::now());
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!s.connected());
    let err = s.status().last_error.unwrap();
    assert!(err.contains("CA file"), "{err}");
    drop(listener);
}

#[test]
fn tls_refuses_a_server_from_another_ca() {
    let server_dir = tempfile::tempdir().unwrap();
    make_certs(server_dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    make_certs(other_dir.path());
    let config = server_config(server_dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (c, _): (TcpStream, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, c);
        let mut buf = [0u8; 64];
        tls.read(&mut buf).is_err()
    });
    let settings = TlsSettings {
        ca_file: other_dir.path().join("ca.pem"),
        cert_file: None,
        key_file: None,
    };
    let mut s = Sender::new(&AuditTarget::Tls(local(port)), Some(settings));
    let m = msg(1);
    let t0 = Instant::now();
    while s.status().last_error.is_none() && t0.elapsed() < Duration::from_secs(5) {
        let now = Instant::now();
        s.poll(now);
        assert_eq!(s.send(&[(1, m.as_slice())], now), 0);
        thread::sleep(Duration::from_millis(2));
    }
    assert!(server.join().unwrap(), "the server saw the handshake fail");
    assert!(!s.connected());
    let err = s.status().last_error.unwrap();
    assert!(err.contains("TLS"), "{err}");
    assert_eq!(s.acked(), 0);
}
