#!/usr/bin/env python3
"""probe.py SERVER GIADDR [TIMEOUT]

Relay-mode probe: binds GIADDR:67, sends a DHCPDISCOVER (giaddr set) to SERVER:67 every
2 ms until a DHCPOFFER comes back, then prints the Unix time (float) of that OFFER and
exits 0. Gives up after TIMEOUT seconds (default 120, exit 1). SERVER must be in
198.18.0.0/15 (a lab address). Start it before the server to time a start-up.
"""
import ipaddress, os, select, socket, struct, sys, time

def discover(xid, mac, giaddr):
    hdr = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0,
                      b"\0" * 4, b"\0" * 4, b"\0" * 4, socket.inet_aton(giaddr),
                      mac + b"\0" * 10, b"\0" * 64, b"\0" * 128)
    return hdr + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x37\x03\x01\x03\x06" + b"\xff"

def is_offer(pkt):
    if len(pkt) < 240 or pkt[236:240] != b"\x63\x82\x53\x63":
        return False
    i = 240
    while i + 1 < len(pkt) and pkt[i] != 255:
        if pkt[i] == 0:
            i += 1
            continue
        if pkt[i] == 53 and pkt[i + 1] == 1 and i + 2 < len(pkt):
            return pkt[i + 2] == 2
        i += 2 + pkt[i + 1]
    return False

def main():
    server, giaddr = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    if ipaddress.ip_address(server) not in ipaddress.ip_network("198.18.0.0/15"):
        print("refusing: server must be a lab address", file=sys.stderr)
        return 2
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((giaddr, 67))
    mac = bytes([0x02, 0xAB]) + struct.pack("!I", os.getpid())
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        try:
            s.sendto(discover(0x5000_0000 + n, mac, giaddr), (server, 67))
        except OSError:
            pass
        n += 1
        end = time.monotonic() + 0.002
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            try:
                pkt = s.recv(4096)
            except OSError:
                continue
            if is_offer(pkt):
                print(f"{time.time():.6f}")
                return 0
    print("no OFFER before the timeout", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
