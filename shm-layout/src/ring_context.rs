//! The context bytes of a change-ring record written by the worker's engine: who asked, as the
//! relay agent and the client named it. Here, beside the record, because the worker writes
//! them and the audit writer (and any ring consumer) reads them.
//!
//! Format (at most [`CONTEXT_BYTES`] bytes, so the ring never cuts it): a
//! sequence of fields, each `tag · len · len bytes`.
//!
//! | tag (low 7 bits) | field                              |
//! |------------------|------------------------------------|
//! | 1                | option 82 sub-option 1, circuit-id |
//! | 2                | option 82 sub-option 2, remote-id  |
//! | 3                | option 12, host name               |
//!
//! Bit 7 of the tag ([`TRUNCATED`]) says the value is a prefix of a longer one: the three values
//! may together be up to 765 bytes, the record has room for fewer. Absent fields are not
//! written. Every field is whole: a reader never sees a length that runs past the context. When
//! values must be cut, each first gets an equal share of the room and what a short one leaves
//! is given to the others in tag order.

use crate::ring::CONTEXT_BYTES;

/// Tag bit: the value was truncated to fit.
pub const TRUNCATED: u8 = 0x80;
/// Tag of the relay agent circuit-id.
pub const TAG_CIRCUIT_ID: u8 = 1;
/// Tag of the relay agent remote-id.
pub const TAG_REMOTE_ID: u8 = 2;
/// Tag of the client's host name.
pub const TAG_HOSTNAME: u8 = 3;

/// Encodes the fields into `buf`; returns the length used (≤ [`CONTEXT_BYTES`]).
pub fn encode(
    circuit_id: Option<&[u8]>,
    remote_id: Option<&[u8]>,
    hostname: Option<&[u8]>,
    buf: &mut [u8; CONTEXT_BYTES],
) -> usize {
    let fields = [
        (TAG_CIRCUIT_ID, circuit_id),
        (TAG_REMOTE_ID, remote_id),
        (TAG_HOSTNAME, hostname),
    ];
    let present = fields.iter().filter(|(_, v)| v.is_some()).count();
    if present == 0 {
        return 0;
    }
    let room = CONTEXT_BYTES - 2 * present;
    // Values longer than 255 cannot be framed with a one-byte length anyway.
    let want = fields.map(|(_, v)| v.map_or(0, |v| v.len().min(255)));
    let share = room / present;
    let mut take = want.map(|w| w.min(share));
    let mut left = room - take.iter().sum::<usize>();
    for (t, w) in take.iter_mut().zip(want) {
        let more = (w - *t).min(left);
        *t += more;
        left -= more;
    }
    let mut n = 0;
    for (((tag, value), t), w) in fields.iter().zip(take).zip(want) {
        let Some(value) = value else { continue };
        let truncated = t < value.len() || w < value.len();
        buf[n] = tag | if truncated { TRUNCATED } else { 0 };
        buf[n + 1] = t as u8;
        buf[n + 2..n + 2 + t].copy_from_slice(&value[..t]);
        n += 2 + t;
    }
    n
}

/// One decoded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// [`TAG_CIRCUIT_ID`], [`TAG_REMOTE_ID`] or [`TAG_HOSTNAME`] (or an unknown tag).
    pub tag: u8,
    /// The value, or its prefix when `truncated`.
    pub value: &'a [u8],
    /// Whether `value` is only a prefix.
    pub truncated: bool,
}

/// Decodes a record's context; `None` if the framing is broken (a record not written by this
/// module).
pub fn decode(ctx: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < ctx.len() {
        let tag = ctx[at];
        let len = usize::from(*ctx.get(at + 1)?);
        let value = ctx.get(at + 2..at + 2 + len)?;
        out.push(Field {
            tag: tag & !TRUNCATED,
            value,
            truncated: tag & TRUNCATED != 0,
        });
        at += 2 + len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Option<&[u8]>, r: Option<&[u8]>, h: Option<&[u8]>) -> Vec<(u8, Vec<u8>, bool)> {
        let mut buf = [0u8; CONTEXT_BYTES];
        let n = encode(c, r, h, &mut buf);
        assert!(n <= CONTEXT_BYTES);
        decode(&buf[..n])
            .expect("well framed")
            .into_iter()
            .map(|f| (f.tag, f.value.to_vec(), f.truncated))
            .collect()
    }

    #[test]
    fn short_fields_are_kept_whole() {
        assert_eq!(roundtrip(None, None, None), vec![]);
        assert_eq!(
            roundtrip(Some(b"eth0/1"), None, Some(b"host")),
            vec![(1, b"eth0/1".to_vec(), false), (3, b"host".to_vec(), false)]
        );
        // 80 + 60 + 2·2 = 144 bytes fit whole (the old code cut each at 60 bytes).
        let c = vec![7u8; 80];
        let r = vec![9u8; 60];
        assert_eq!(
            roundtrip(Some(&c), Some(&r), None),
            vec![(1, c.clone(), false), (2, r.clone(), false)]
        );
    }

    #[test]
    fn long_fields_are_truncated_with_a_marker_never_cut_mid_field() {
        let c = vec![1u8; 200];
        let r = vec![2u8; 10];
        let h = vec![3u8; 255];
        let got = roundtrip(Some(&c), Some(&r), Some(&h));
        assert_eq!(got.len(), 3, "every field is there");
        assert_eq!(got[1], (2, r.clone(), false), "the short one stays whole");
        assert!(got[0].2 && got[2].2, "the long ones are marked");
        assert!(got[0].1.iter().all(|&b| b == 1) && got[2].1.iter().all(|&b| b == 3));
        let used: usize = got.iter().map(|f| 2 + f.1.len()).sum();
        assert_eq!(used, CONTEXT_BYTES, "the room is used fully");
        // A value over 255 bytes (an RFC 3396 option) is marked, not misframed.
        let big = vec![4u8; 300];
        let got = roundtrip(None, None, Some(&big));
        assert_eq!(got, vec![(3, vec![4u8; CONTEXT_BYTES - 2], true)]);
    }

    #[test]
    fn broken_framing_is_refused() {
        assert_eq!(decode(&[1, 5, 0]), None);
        assert_eq!(decode(&[1]), None);
    }
}
