//! Field helpers shared by both formats: untrusted bytes to numbers, addresses, hex octets.

use std::net::Ipv4Addr;

/// A short, printable rendering of untrusted bytes for error messages.
pub(super) fn shown(bytes: &[u8]) -> String {
    const LIMIT: usize = 40;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > LIMIT {
        out.push_str("...");
    }
    out
}

pub(super) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parse hex octets: `aa:bb:c` (1–2 digits per group, ':' separated) or contiguous `aabbcc`.
pub(super) fn parse_hex_octets(s: &[u8], what: &str, max: usize) -> Result<Vec<u8>, String> {
    let bad = || format!("invalid {what} '{}'", shown(s));
    if s.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(s.len().div_ceil(2).min(max + 1));
    if s.contains(&b':') {
        for group in s.split(|&b| b == b':') {
            let v = match group {
                [a] => hex_val(*a).ok_or_else(bad)?,
                [a, b] => (hex_val(*a).ok_or_else(bad)? << 4) | hex_val(*b).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            if out.len() == max {
                return Err(format!("{what} longer than {max} octets"));
            }
            out.push(v);
        }
    } else {
        let digits = s
            .strip_prefix(b"0x")
            .or_else(|| s.strip_prefix(b"0X"))
            .unwrap_or(s);
        if digits.is_empty() || digits.len() & 1 == 1 {
            return Err(bad());
        }
        if digits.len() / 2 > max {
            return Err(format!("{what} longer than {max} octets"));
        }
        for pair in digits.chunks_exact(2) {
            let (a, b) = match pair {
                [a, b] => (*a, *b),
                _ => return Err(bad()),
            };
            out.push((hex_val(a).ok_or_else(bad)? << 4) | hex_val(b).ok_or_else(bad)?);
        }
    }
    Ok(out)
}

pub(super) fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

pub(super) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(s.trim_ascii()).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_octets() {
        assert_eq!(
            parse_hex_octets(b"02:0a:b", "x", 16).unwrap(),
            vec![2, 10, 11]
        );
        assert_eq!(
            parse_hex_octets(b"0xAABB", "x", 16).unwrap(),
            vec![0xaa, 0xbb]
        );
        assert!(parse_hex_octets(b"02::03", "x", 16).is_err());
        assert!(parse_hex_octets(b"123", "x", 16).is_err());
        assert!(parse_hex_octets(b"zz", "x", 16).is_err());
        let long = vec!["ab"; 17].join(":");
        assert_eq!(
            parse_hex_octets(long.as_bytes(), "hwaddr", 16).unwrap_err(),
            "hwaddr longer than 16 octets"
        );
    }
}
