#!/usr/bin/env python3
"""failover_probe.py — time from a kill to the survivor's first answer, seen by a relay.

Acts as a relay agent (binds UDP port 67 on --giaddr, like ../shared/anchors/dhcp_probe.py):
sends a DHCPDISCOVER (giaddr set, hops 1, one fixed MAC) to --server every --interval
seconds from the moment it starts, and remembers when each was sent (by xid). The bench
kills the serving side and then writes two Unix times into --trigger: "T0 T1", T0 taken
just before the first kill signal, T1 just after the last one returned. The probe ends at
the first DHCPOFFER that answers a DISCOVER *sent after T1* — so an OFFER the killed server
sent before it died is never counted — and prints one JSON line:

  {"answered": true, "first_answer_s": 0.0213, "discover_sent_at_s": 0.0189,
   "offers_before_kill": 37, "discovers": 41}

first_answer_s = receive time of that OFFER − T0 (the outage a relay sees, to the
probe's --interval resolution). Bounded: gives up --timeout seconds after the kill time was
read (exit 1, "answered": false), or --max-wait seconds after its start if no kill time ever
appears. Sends only to a lab address (198.18.0.0/15).
"""
import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

LAB = ipaddress.ip_network("198.18.0.0/15")


def discover(xid: int, mac: bytes, giaddr: str) -> bytes:
    hdr = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 1,                 # BOOTREQUEST, ethernet, hlen 6, hops 1
        xid, 0, 0,                  # xid, secs, flags (unicast reply to the relay)
        b"\0" * 4, b"\0" * 4, b"\0" * 4,
        socket.inet_aton(giaddr),
        mac + b"\0" * 10, b"\0" * 64, b"\0" * 128,
    )
    return hdr + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x37\x03\x01\x03\x06" + b"\xff"


def offer_xid(pkt: bytes):
    """The xid of a DHCPOFFER, None for anything else."""
    if len(pkt) < 240 or pkt[0] != 2 or pkt[236:240] != b"\x63\x82\x53\x63":
        return None
    i = 240
    while i + 1 < len(pkt):
        code = pkt[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        ln = pkt[i + 1]
        if code == 53 and ln == 1 and i + 2 < len(pkt):
            return struct.unpack("!I", pkt[4:8])[0] if pkt[i + 2] == 2 else None
        i += 2 + ln
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--giaddr", required=True)
    ap.add_argument("--trigger", required=True, help="file the bench writes the kill time into")
    ap.add_argument("--interval", type=float, default=0.005)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds after the kill")
    ap.add_argument("--max-wait", type=float, default=300.0, help="seconds for the kill to come")
    args = ap.parse_args()
    if ipaddress.ip_address(args.server) not in LAB:
        print("refusing: server must be in 198.18.0.0/15", file=sys.stderr)
        return 2
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.giaddr, 67))
    mac = bytes([0x02, 0xFE]) + struct.pack("!I", os.getpid() & 0xFFFFFFFF)
    xid_base = (os.getpid() * 7919) & 0xFFF00000
    sent_at = {}        # xid -> Unix time the DISCOVER was sent
    offers = []         # (time the DISCOVER was sent, time its OFFER arrived)
    sent = 0
    t_kill = None       # T0
    t_after = None      # T1
    started = time.monotonic()
    next_send = 0.0
    while True:
        now = time.monotonic()
        if t_kill is None:
            try:
                with open(args.trigger) as f:
                    t_kill, t_after = (float(x) for x in f.read().split())
                kill_seen = now
            except (OSError, ValueError):
                if now - started > args.max_wait:
                    print(json.dumps({"answered": False, "error": "no kill time in --trigger"}))
                    return 1
        elif now - kill_seen > args.timeout:
            print(json.dumps({"answered": False, "timeout_s": args.timeout, "discovers": sent,
                              "offers_before_kill": len(offers)}))
            return 1
        if now >= next_send:
            xid = xid_base + (sent & 0xFFFFF)
            try:
                s.sendto(discover(xid, mac, args.giaddr), (args.server, 67))
                sent_at[xid] = time.time()
            except OSError:
                pass  # e.g. ECONNREFUSED after an ICMP port unreachable from the dead side
            sent += 1
            next_send = now + args.interval
        r, _, _ = select.select([s], [], [], max(0.0, next_send - time.monotonic()))
        if r:
            try:
                pkt, _ = s.recvfrom(4096)
                xid = offer_xid(pkt)
                if xid is not None and xid in sent_at:
                    offers.append((sent_at[xid], time.time()))
            except OSError:
                pass
        if t_kill is None:
            continue
        after = [o for o in offers if o[0] >= t_after]
        if after:
            sent_t, got = after[0]
            print(json.dumps({"answered": True, "first_answer_s": round(got - t_kill, 4),
                              "discover_sent_at_s": round(sent_t - t_kill, 4),
                              "kill_took_s": round(t_after - t_kill, 4),
                              "offers_before_kill": len(offers) - len(after), "discovers": sent}))
            return 0


if __name__ == "__main__":
    sys.exit(main())
