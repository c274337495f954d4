//! DHCPv4 wire codec for the worker's hot path.
//!
//! Architecture Invariant: nothing a client sends can make this module panic. Every read of the
//! packet is bounds-checked; inputs that cannot be served are refused with a [`DropReason`], which
//! the worker counts under [`DropReason::name`].
//!
//! # Decoding ([`decode`])
//!
//! The fixed BOOTP header is read through `dhcproto::v4::borrowed::Message` (zero-copy, zero
//! allocations) only *after* this module has checked the length, the magic cookie and `hlen`:
//! dhcproto's `chaddr()` panics when `hlen > 16`, and its option iterator silently stops at a
//! truncated option. The option framing is therefore walked here, by hand, so that a length that
//! runs past the end of its field is detected and refused ([`DropReason::BadOptionFraming`]).
//!
//! Rules, in the order they are checked:
//! 1. at least 240 bytes ([`DropReason::TooShort`]) and the cookie 99.130.83.99
//!    ([`DropReason::BadCookie`]);
//! 2. `op` = 1 (BOOTREQUEST) ([`DropReason::NotRequest`]), `hlen` ≤ 16 ([`DropReason::BadHlen`]),
//!    `hops` ≤ 16 ([`DropReason::TooManyHops`]);
//! 3. option framing of the options field and, with option 52 (RFC 2132 §9.3), of the `file`
//!    (value 1 or 3) and `sname` (value 2 or 3) fields, parsed in that order (RFC 3396 §5). A 52
//!    inside `file`/`sname` would ask for nested overloading, which no conforming client sends:
//!    the packet is dropped as [`DropReason::OverloadLoop`] (the decoder never recurses).
//!    PAD is skipped, END closes a field, bytes after END are ignored, a missing END is accepted;
//! 4. option 53 present ([`DropReason::NoMessageType`]), exactly one byte and a client type
//!    (1, 3, 4, 7, 8) ([`DropReason::BadMessageType`]);
//! 5. `hlen` = 0 only when a client identifier (61) is present ([`DropReason::BadHlen`]).
//!
//! Option semantics:
//! - **Duplicates: the first occurrence wins.** A later, non-adjacent instance of an option code
//!   is ignored. Adjacent instances of the same code (only PAD between them, same field) are one
//!   option split per RFC 3396: they are concatenated for 61 and 55 (the only place the decoder
//!   may allocate); for the other decoded options the first instance is kept and the continuation
//!   ignored.
//! - Options with a fixed or minimum length (50, 51, 54, 57, 118; 12, 55, 61 must be non-empty)
//!   that have a wrong length are treated as absent and counted in
//!   [`Request::malformed_options`].
//! - Option 82 is kept raw for the echo. Its sub-options 1, 2, 5 and 6 are decoded; if the
//!   sub-option framing is broken (or 82.5 is not 4 bytes) the decoded sub-option fields are all
//!   `None` and the 82 counts as malformed, but the raw payload is still echoed.
//!
//! # Encoding ([`encode_reply`])
//!
//! Replies are assembled by hand into a caller-provided `[u8; MAX_REPLY]`, copying the subnet's
//! pre-encoded option values. dhcproto's encoder writes only into a `Vec` and allocates about ten
//! times per reply: measured at 1.38 µs per OFFER against a few hundred ns for hand assembly
//! (see /work/shared/DEPENDENCIES.md). Encoding never allocates.

mod decode;
mod encode;

pub use decode::{decode, DropReason, MessageType, Request};
pub use encode::{encode_reply, ReplyParams, MAX_REPLY};

/// The DHCP magic cookie, 99.130.83.99 (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Length of the fixed BOOTP header including the magic cookie: options start here.
pub const HEADER_LEN: usize = 240;

/// Option codes this module reads or writes.
pub mod code {
    /// PAD (RFC 2132 §3.1).
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// IP address lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAM_REQUEST_LIST: u8 = 55;
    /// Message (NAK reason text).
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Relay agent information (RFC 3046).
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// Subnet selection (RFC 3011).
    pub const SUBNET_SELECTION: u8 = 118;
    /// END.
    pub const END: u8 = 255;

    /// Relay agent sub-option: agent circuit id.
    pub const RAI_CIRCUIT_ID: u8 = 1;
    /// Relay agent sub-option: agent remote id.
    pub const RAI_REMOTE_ID: u8 = 2;
    /// Relay agent sub-option: link selection (RFC 3527).
    pub const RAI_LINK_SELECTION: u8 = 5;
    /// Relay agent sub-option: subscriber-id (RFC 3993).
    pub const RAI_SUBSCRIBER_ID: u8 = 6;
}
