//! The receiver thread: batched receive, reply checks against the client table, the REQUEST
//! sent straight after each OFFER, latencies and the record of every ACK.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use super::phase_report::Hists;
use super::shared::{account_send, inc, unix_ms, Entry, Shared};
use super::table::{phase, phase_of, seq_of, word};
use super::Generator;
use crate::identity::{hex_colon, mac_for};
use crate::packet::{self, MessageType};
use crate::record::RecordEvent;
use crate::sys::{self, RecvBatch, SendBatch};

impl Generator {
    /// Receiver thread; returns its latency histograms.
    pub(super) fn receiver(&self, sh: &Shared<'_>) -> Hists {
        let mut rx = RecvBatch::new(self.opts.batch);
        let mut out = SendBatch::new(self.opts.batch);
        let mut hists = Hists::default();
        let mut entries: Vec<Entry> = Vec::with_capacity(self.opts.batch);
        let mut events: Vec<RecordEvent> = Vec::new();
        // Returning clients whose RELEASE is queued in `out`: (slot, BOUND word). They become
        // RELEASED (and their identity free for the next client) once `out` is flushed.
        let mut released: Vec<(u32, u32)> = Vec::new();
        let fd = self.sock.as_fd();
        while !sh.stop.load(Ordering::Relaxed) {
            let n = match rx.recv(fd) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    sys::drain_error_queue(fd, 4096);
                    continue;
                }
                Err(e) => {
                    if sys::is_icmp_error(&e) {
                        inc(&sh.counters.icmp_errors, 1);
                    }
                    sh.note_error(&e);
                    sys::drain_error_queue(fd, 4096);
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            let now = sh.now_us();
            let now_unix_ms = if self.recorder.is_some() {
                unix_ms()
            } else {
                0
            };
            for i in 0..n {
                let Some((buf, _src, truncated)) = rx.get(i) else {
                    continue;
                };
                if truncated {
                    inc(&sh.counters.bad_reply, 1);
                    continue;
                }
                self.handle_reply(
                    sh,
                    buf,
                    now,
                    now_unix_ms,
                    &mut hists,
                    &mut out,
                    &mut entries,
                    &mut events,
                    &mut released,
                );
            }
            if !out.is_empty() {
                let o = out.flush(fd);
                account_send(sh, &o);
            }
            for (i, w) in released.drain(..) {
                if let Some(slot) = sh.table.slots.get(i as usize) {
                    slot.advance(w, phase::RELEASED);
                }
            }
            if !entries.is_empty() {
                let mut q = sh.rx_entries.lock().unwrap_or_else(|p| p.into_inner());
                q.append(&mut entries);
            }
            if let Some(r) = &self.recorder {
                r.write_all(&events);
                events.clear();
            }
        }
        hists
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_reply(
        &self,
        sh: &Shared<'_>,
        buf: &[u8],
        now: u64,
        now_unix_ms: u64,
        hists: &mut Hists,
        out: &mut SendBatch,
        entries: &mut Vec<Entry>,
        events: &mut Vec<RecordEvent>,
        released: &mut Vec<(u32, u32)>,
    ) {
        let c = &sh.counters;
        let Ok(p) = packet::parse(buf) else {
            inc(&c.bad_reply, 1);
            return;
        };
        if p.op != 2 {
            // Our own requests never come back here; anything else is nonsense.
            inc(&c.bad_reply, 1);
            return;
        }
        let index = p.xid ^ self.salt;
        let Some(i) = index.checked_sub(sh.table.base) else {
            inc(&c.stray, 1);
            return;
        };
        let Some(slot) = sh.table.slots.get(i as usize) else {
            inc(&c.stray, 1);
            return;
        };
        let identity = sh.identity(index);
        if p.mac != mac_for(self.opts.seed, identity) {
            inc(&c.bad_reply, 1);
            return;
        }
        let cur = slot.state.load(Ordering::Acquire);
        let ph = phase_of(cur);
        let lat = u64::from((now as u32).wrapping_sub(slot.sent_us.load(Ordering::Relaxed)));
        let late = !sh.retransmit && lat > sh.timeout_us;
        let fail_late = |failed: &AtomicU64| {
            if slot.advance(cur, phase::FAILED) {
                inc(failed, 1);
                inc(&c.late, 1);
                sh.in_flight.fetch_sub(1, Ordering::Relaxed);
            } else {
                inc(&c.late, 1);
            }
        };
        match p.msg_type {
            MessageType::Offer => {
                if ph != phase::DISCOVER_SENT {
                    inc(&c.unexpected, 1);
                    return;
                }
                if late {
                    fail_late(&c.failed_discover);
                    return;
                }
                let (Some(sid), false) = (p.server_id, p.yiaddr.is_unspecified()) else {
                    inc(&c.bad_reply, 1);
                    return;
                };
                slot.addr.store(u32::from(p.yiaddr), Ordering::Relaxed);
                slot.server.store(u32::from(sid), Ordering::Relaxed);
                slot.sent_us.store(now as u32, Ordering::Relaxed);
                let next = word(phase::REQUEST_SENT, 0, seq_of(cur));
                if slot
                    .state
                    .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    inc(&c.unexpected, 1);
                    return;
                }
                inc(&c.offers, 1);
                hists.discover_offer.record(lat);
                let f = self.fields(index, identity, slot);
                if out.is_full() {
                    let o = out.flush(self.sock.as_fd());
                    account_send(sh, &o);
                }
                let tpl = &self.templates.select;
                out.push_with(self.destination(tpl.kind()), |b| tpl.write(b, &f));
                inc(&c.sent_request, 1);
                entries.push(Entry {
                    idx: i,
                    word: next,
                    due_us: now + sh.timeout_us,
                });
            }
            MessageType::Ack | MessageType::Nak => {
                let (failed, acked, hist, last) = match ph {
                    phase::REQUEST_SENT => (
                        &c.failed_request,
                        &c.acks,
                        &mut hists.request_ack,
                        &sh.last_ack_us,
                    ),
                    phase::RENEW_SENT => (
                        &c.failed_renew,
                        &c.renew_acks,
                        &mut hists.renew_ack,
                        &sh.last_renew_us,
                    ),
                    _ => {
                        inc(&c.unexpected, 1);
                        return;
                    }
                };
                if late {
                    fail_late(failed);
                    return;
                }
                if p.msg_type == MessageType::Nak {
                    if slot.advance(cur, phase::NAKED) {
                        inc(&c.naks, 1);
                        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        inc(&c.unexpected, 1);
                    }
                    return;
                }
                let expected = Ipv4Addr::from(slot.addr.load(Ordering::Relaxed));
                let (Some(lease_time), true) = (p.lease_time, p.yiaddr == expected) else {
                    inc(&c.bad_reply, 1);
                    return;
                };
                // The record's sequence number is taken before the client becomes BOUND (and
                // so releasable by the sender thread): its RELEASE always gets a larger one.
                let seq = self.recorder.as_ref().map_or(0, |r| r.next_seq());
                if !slot.advance(cur, phase::BOUND) {
                    inc(&c.unexpected, 1);
                    return;
                }
                inc(acked, 1);
                sh.in_flight.fetch_sub(1, Ordering::Relaxed);
                last.fetch_max(now, Ordering::Relaxed);
                hist.record(lat);
                if ph == phase::REQUEST_SENT {
                    let first = slot.first_us.load(Ordering::Relaxed);
                    hists
                        .dora
                        .record(u64::from((now as u32).wrapping_sub(first)));
                }
                let mac = mac_for(self.opts.seed, identity);
                if self.recorder.is_some() {
                    events.push(RecordEvent::Ack {
                        seq,
                        t_ms: now_unix_ms,
                        mac: hex_colon(&mac),
                        client_id: self.client_id_hex(&mac),
                        address: p.yiaddr,
                        lease_end: now_unix_ms / 1000 + u64::from(lease_time),
                        server_id: p.server_id,
                    });
                }
                if ph == phase::REQUEST_SENT && sh.cycle.is_some_and(|cy| cy.releases(index)) {
                    self.release_returning(sh, index, identity, slot, out, events);
                    released.push((i, word(phase::BOUND, 0, seq_of(cur))));
                }
            }
            _ => inc(&c.bad_reply, 1),
        }
    }

    /// Queues the RELEASE of returning client `index` (its identity is used again): ciaddr =
    /// the address just acknowledged, option 54 = the server of the OFFER, same MAC,
    /// client-id and link selection as its DORA.
    fn release_returning(
        &self,
        sh: &Shared<'_>,
        index: u32,
        identity: u32,
        slot: &super::table::Slot,
        out: &mut SendBatch,
        events: &mut Vec<RecordEvent>,
    ) {
        let f = self.fields(index, identity, slot);
        if out.is_full() {
            let o = out.flush(self.sock.as_fd());
            account_send(sh, &o);
        }
        let tpl = &self.templates.release;
        out.push_with(self.target.server, |b| tpl.write(b, &f));
        inc(&sh.counters.sent_release, 1);
        if let Some(r) = &self.recorder {
            events.push(RecordEvent::Release {
                seq: r.next_seq(),
                t_ms: unix_ms(),
                mac: hex_colon(&f.mac),
                client_id: self.client_id_hex(&f.mac),
                address: f.ciaddr,
            });
        }
    }
}
