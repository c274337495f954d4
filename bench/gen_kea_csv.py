#!/usr/bin/env python3
"""gen_kea_csv.py COUNT OUT [--prefix 8] [--lifetime 86400]

Writes COUNT active leases in Kea memfile CSV (schema 2.1) to OUT, addresses from
10.0.0.1 upward in 10.0.0.0/PREFIX (dense: the allocator must skip them), each with a
unique MAC 02:xx:xx:xx:xx:xx and client-id 01:<mac>, expiring LIFETIME seconds from now.
Used to preload a table through `prodhcpctl leases import --format kea-csv`.
"""
import sys
import time

def main() -> int:
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    count, out = int(args[0]), args[1]
    prefix = int(args[args.index("--prefix") + 1]) if "--prefix" in args else 8
    lifetime = int(args[args.index("--lifetime") + 1]) if "--lifetime" in args else 86400
    if count > (1 << (32 - prefix)) - 2:
        print(f"{count} leases do not fit in a /{prefix}", file=sys.stderr)
        return 2
    now = int(time.time())
    expire = now + lifetime
    base = (10 << 24) + 1
    with open(out, "w", buffering=1 << 22) as f:
        f.write("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n")
        tail = f",{lifetime},{expire},1,0,0,,0,\n"
        chunk = []
        for i in range(count):
            v = base + i
            m = f"02:{(i >> 32) & 255:02x}:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
            chunk.append(f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255},{m},01:{m}{tail}")
            if len(chunk) >= 100000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    return 0

if __name__ == "__main__":
    sys.exit(main())
