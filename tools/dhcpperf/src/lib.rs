//! dhcpperf: a DHCPv4 load generator that also verifies.
//!
//! It simulates many clients behind a relay agent (it binds the relay address, port 67, puts
//! it in giaddr and unicasts to the server), optionally spread over many subnets by option 82
//! sub-option 5 (`--link-selection-*`), or direct clients on one interface (`--direct IFACE`:
//! 0.0.0.0:68, broadcasts with the broadcast flag set; for lab links only), runs scenarios (DORA of new clients, renew,
//! release, a mix, an avalanche with back-off, a fixed-rate sweep), reports rates, losses,
//! latency percentiles and a per-second timeline, records every ACK, and checks a server's
//! lease export against that record. It also contains the no-logic responder used as the
//! ceiling of the benchmark harness.
//!
//! # Returning clients and new clients that release
//!
//! `--clients N` (dora, sweep, mix): client i (0-based in the phase; for mix the new clients
//! after `--prebind`) has MAC `02:SEED:` + (i mod N) as four big-endian bytes, client-id (with
//! `--client-id`) and link selection (with `--link-selection-base`) from that same number, and
//! its own xid. It sends, as a relay agent (giaddr = `--relay-ip`, hops 1):
//! DISCOVER → (OFFER) → REQUEST with option 50 = the offered address and 54 = the OFFER's
//! server id → (ACK). If the MAC is used again later in the phase (i + N < clients of the
//! phase; in a sweep always, as every step reuses the same N MACs), the receiver then sends at
//! once a RELEASE: ciaddr = the acknowledged address, option 54 = the server id, same MAC,
//! client-id and option 82. Client i + N's DISCOVER is not sent before client i's RELEASE has
//! been handed to the kernel (or client i failed or was NAKed): when that holds the sender
//! back, the measured send rate shows it. The last N clients of a dora or mix stay bound. So
//! a pool of at least N addresses never runs dry; note that a server which gives a returning
//! client its previous address (RFC 2131 4.3.1) then re-allocates the same N addresses.
//!
//! `--release-after-ack` (dora, sweep, mix): every client keeps its own new MAC and sends the
//! same RELEASE right after its ACK: new clients that release, so each DORA allocates for a
//! client the server has never seen while the pool never runs dry (given fewer than pool-size
//! exchanges in flight).
//!
//! Releases are counted in `sent_release` and recorded (`--record`) after their ACK.
//!
//! Architecture invariant: dhcpperf shares no code with prodhcp (packets are built and parsed
//! here, by hand), so that it can judge the server. dhcpperf has no `unsafe`: its system calls
//! go through `nix` in [`sys`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod histogram;
pub mod identity;
pub mod jitter;
pub mod packet;
pub mod record;
pub mod report;
pub mod responder;
pub mod spread;
pub mod sys;
pub mod verify;
