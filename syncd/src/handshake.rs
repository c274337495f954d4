//! Connection set-up: the clear-text preamble and the Noise handshake.
//!
//! ```text
//! initiator (lower node name)                    responder
//!   preamble {version, cluster, node}   ──▶   version/cluster/node checked; on mismatch a
//!                                              clear-text refusal {code, reason}, close
//!   Noise msg 1  (psk, e)               ──▶   decrypts only with the same key and prologue
//!                                       ◀──   Noise msg 2  (e, ee)
//!   Hello  (first transport message)    ──▶   decrypts: the session is trusted from here
//!                                       ◀──   Hello (or Refuse)
//! ```
//!
//! Pattern `Noise_NNpsk0_25519_AESGCM_SHA256` (snow, ring-accelerated): both sides prove they
//! hold the 32-byte cluster key, every connection gets fresh X25519 ephemeral keys (forward
//! secrecy) and every later frame is sealed with AES-256-GCM under a per-direction key and a
//! counter nonce. The prologue binds the protocol version and the cluster name into the
//! handshake hash, so peers of another version or cluster cannot complete it even with the
//! right key; the preamble carries the same facts in clear only so that such a mismatch is
//! reported with a clear reason instead of as a failed decryption. (Its contents are
//! unauthenticated: they choose which error text is logged, nothing else.)
//!
//! Message 1 can be replayed by anyone who recorded it, so the responder trusts the session
//! only after the initiator's first transport frame (its Hello) decrypts: a replayer cannot
//! produce it without the initiator's ephemeral secret.

use crate::key::ClusterKey;
use crate::message::{DecodeError, Reader, RefuseCode, MAX_REASON, PROTOCOL_VERSION};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Bytes the AEAD adds to every Noise message.
pub const TAG_LEN: usize = 16;
/// Longest preamble or handshake frame accepted.
pub const MAX_HANDSHAKE_FRAME: usize = 1100;
/// First bytes of a preamble frame.
pub const MAGIC: &[u8; 8] = b"PRDHSYNC";

const KIND_DIAL: u8 = 1;
const KIND_REFUSAL: u8 = 2;

/// The handshake prologue: `"prodhcp-syncd" · version · cluster name length · cluster name`.
pub fn prologue(cluster: &str) -> Vec<u8> {
    let mut p = b"prodhcp-syncd".to_vec();
    p.push(PROTOCOL_VERSION);
    let cluster = truncate(cluster, 255);
    p.push(cluster.len() as u8);
    p.extend_from_slice(cluster.as_bytes());
    p
}

fn builder<'a>(key: &'a ClusterKey, prologue: &'a [u8]) -> Result<snow::Builder<'a>, snow::Error> {
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse()?;
    snow::Builder::new(params)
        .psk(0, key.as_bytes())?
        .prologue(prologue)
}

/// A handshake state for the dialing side.
pub fn initiator(key: &ClusterKey, cluster: &str) -> Result<snow::HandshakeState, snow::Error> {
    let p = prologue(cluster);
    builder(key, &p)?.build_initiator()
}

/// A handshake state for the accepting side.
pub fn responder(key: &ClusterKey, cluster: &str) -> Result<snow::HandshakeState, snow::Error> {
    let p = prologue(cluster);
    builder(key, &p)?.build_responder()
}

/// A clear-text frame exchanged before the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preamble {
    /// The dialing node introduces itself.
    Dial {
        /// Its protocol version.
        version: u8,
        /// Its cluster name.
        cluster: String,
        /// Its node name.
        node: String,
    },
    /// The accepting node refuses before the handshake (unauthenticated).
    Refusal {
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },
}

impl Preamble {
    /// Whether a frame body is a preamble (starts with [`MAGIC`]). A Noise message 2 starts
    /// with a random ephemeral key, so it does not (but for a 2^-64 chance).
    pub fn is_preamble(body: &[u8]) -> bool {
        body.starts_with(MAGIC)
    }

    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        match self {
            Preamble::Dial {
                version,
                cluster,
                node,
            } => {
                out.push(*version);
                out.push(KIND_DIAL);
                for s in [cluster, node] {
                    let s = truncate(s, 255);
                    out.push(s.len() as u8);
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Preamble::Refusal { code, reason } => {
                out.push(PROTOCOL_VERSION);
                out.push(KIND_REFUSAL);
                out.push(code.to_byte());
                let reason = truncate(reason, MAX_REASON);
                out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    /// Reads a preamble frame body. A dial of another version is returned as read (the caller
    /// refuses it); any other version's refusal is read as far as it can be.
    pub fn decode(body: &[u8]) -> Result<Preamble, DecodeError> {
        let mut r = Reader { bytes: body };
        if r.take(MAGIC.len(), "preamble")? != MAGIC {
            return Err(DecodeError::UnknownType(0));
        }
        let version = r.u8("preamble")?;
        let preamble = match r.u8("preamble")? {
            KIND_DIAL => Preamble::Dial {
                version,
                cluster: r.str8("cluster name")?,
                node: r.str8("node name")?,
            },
            KIND_REFUSAL => {
                let code = r.u8("refusal")?;
                let len = r.take(2, "refusal")?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let text = r.take(len, "refusal reason")?;
                Preamble::Refusal {
                    code: RefuseCode::from_byte(code),
                    reason: String::from_utf8_lossy(text).into_owned(),
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(preamble)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::generate;
    use proptest::prelude::*;

    fn run_handshake(
        ki: &ClusterKey,
        ci: &str,
        kr: &ClusterKey,
        cr: &str,
    ) -> Result<(snow::TransportState, snow::TransportState), snow::Error> {
        let mut i = initiator(ki, ci)?;
        let mut r = responder(kr, cr)?;
        let mut m1 = [0u8; 128];
        let n1 = i.write_message(&[], &mut m1)?;
        assert_eq!(n1, 32 + TAG_LEN);
        let mut scratch = [0u8; 128];
        r.read_message(&m1[..n1], &mut scratch)?;
        let mut m2 = [0u8; 128];
        let n2 = r.write_message(&[], &mut m2)?;
        i.read_message(&m2[..n2], &mut scratch)?;
        Ok((i.into_transport_mode()?, r.into_transport_mode()?))
    }

    #[test]
    fn same_key_and_cluster_complete_the_handshake_and_seal_frames() {
        let k = generate().unwrap();
        let (mut i, mut r) = run_handshake(&k, "pop1", &k, "pop1").unwrap();
        let mut sealed = [0u8; 64];
        let n = i.write_message(b"hello", &mut sealed).unwrap();
        assert_eq!(n, 5 + TAG_LEN);
        let mut plain = [0u8; 64];
        let m = r.read_message(&sealed[..n], &mut plain).unwrap();
        assert_eq!(&plain[..m], b"hello");
        // The same frame again (a replay) does not decrypt: the nonce moved on.
        assert!(matches!(
            r.read_message(&sealed[..n], &mut plain),
            Err(snow::Error::Decrypt)
        ));
    }

    #[test]
    fn another_key_or_cluster_fails_at_message_1() {
        let k = generate().unwrap();
        let other = generate().unwrap();
        assert!(matches!(
            run_handshake(&k, "pop1", &other, "pop1"),
            Err(snow::Error::Decrypt)
        ));
        assert!(matches!(
            run_handshake(&k, "pop1", &k, "pop2"),
            Err(snow::Error::Decrypt)
        ));
    }

    #[test]
    fn preambles_round_trip() {
        for p in [
            Preamble::Dial {
                version: PROTOCOL_VERSION,
                cluster: "pop1".into(),
                node: "a".into(),
            },
            Preamble::Refusal {
                code: RefuseCode::ClusterName,
                reason: "this node is in cluster `pop2`".into(),
            },
            Preamble::Refusal {
                code: RefuseCode::Other(77),
                reason: String::new(),
            },
        ] {
            let body = p.encode();
            assert!(Preamble::is_preamble(&body));
            assert_eq!(Preamble::decode(&body), Ok(p));
        }
    }

    proptest! {
        #[test]
        fn random_preambles_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&tail);
            let _ = Preamble::decode(&body);
            let _ = Preamble::decode(&tail);
        }
    }
}
