//! A strict reader of RFC 5424 syslog messages as a collector stores them: the header fields,
//! the STRUCTURED-DATA elements with their SD-PARAMs (PARAM-VALUEs unescaped), and the MSG.
//!
//! It checks what the audit trail promises, so it is strict where prodhcp's writer must be:
//! an unescaped `]` inside a PARAM-VALUE, an unterminated value, a PARAM-NAME or SD-ID longer
//! than 32 characters or with a forbidden character are errors. Unescaping follows RFC 5424
//! §6.3.3: `\"`, `\\` and `\]` become `"`, `\` and `]`; a backslash before any other character
//! is kept as it is (both characters).

use std::fmt;

/// Why a message is not RFC 5424.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not RFC 5424: {what} at byte {at}")]
pub struct ParseError {
    /// What is wrong.
    pub what: &'static str,
    /// Byte offset in the message.
    pub at: usize,
}

/// One SD-ELEMENT: its SD-ID and SD-PARAMs in message order (values unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    /// The SD-ID (`lease@32473`).
    pub id: String,
    /// (PARAM-NAME, unescaped PARAM-VALUE), in message order; a name may repeat (RFC 5424
    /// allows it).
    pub params: Vec<(String, String)>,
}

/// A parsed message. `-` (NILVALUE) header fields are kept as `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// PRI (facility × 8 + severity), ≤ 191.
    pub pri: u8,
    /// VERSION (1).
    pub version: u16,
    /// TIMESTAMP, as written.
    pub timestamp: String,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
    /// PROCID.
    pub procid: String,
    /// MSGID.
    pub msgid: String,
    /// The SD-ELEMENTs (empty for a NILVALUE STRUCTURED-DATA).
    pub sd: Vec<SdElement>,
    /// MSG (empty when absent).
    pub msg: String,
}

impl Message {
    /// The first SD-ELEMENT with SD-ID `id`.
    pub fn element(&self, id: &str) -> Option<&SdElement> {
        self.sd.iter().find(|e| e.id == id)
    }
}

impl fmt::Display for SdElement {
    /// Writes the element back in RFC 5424 form (values escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}", self.id)?;
        for (n, v) in &self.params {
            write!(f, " {n}=\"")?;
            for c in v.chars() {
                if matches!(c, '"' | '\\' | ']') {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"")?;
        }
        write!(f, "]")
    }
}

fn err<T>(what: &'static str, at: usize) -> Result<T, ParseError> {
    Err(ParseError { what, at })
}

/// SD-NAME: 1–32 printable US-ASCII characters except `=`, space, `]` and `"`.
fn sd_name(b: &[u8], i: &mut usize, what: &'static str) -> Result<String, ParseError> {
    let s = *i;
    while *i < b.len() && (33..=126).contains(&b[*i]) && !matches!(b[*i], b'=' | b']' | b'"') {
        *i += 1;
    }
    if *i == s || *i - s > 32 {
        return err(what, s);
    }
    Ok(String::from_utf8_lossy(&b[s..*i]).into_owned())
}

/// Parses one message (no framing, no trailing newline; a trailing `\n` or `\r\n` is ignored).
pub fn parse(msg: &str) -> Result<Message, ParseError> {
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    let msg = msg.strip_suffix('\r').unwrap_or(msg);
    let b = msg.as_bytes();
    if b.first() != Some(&b'<') {
        return err("no '<' of PRI", 0);
    }
    let mut i = 1;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 1 || i - 1 > 3 || b.get(i) != Some(&b'>') {
        return err("bad PRI", i);
    }
    let pri: u16 = msg[1..i].parse().map_err(|_| ParseError {
        what: "bad PRI",
        at: 1,
    })?;
    if pri > 191 {
        return err("PRI above 191", 1);
    }
    i += 1;
    let vs = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == vs || i - vs > 3 || b.get(i) != Some(&b' ') {
        return err("bad VERSION", vs);
    }
    let version: u16 = msg[vs..i].parse().map_err(|_| ParseError {
        what: "bad VERSION",
        at: vs,
    })?;
    i += 1;
    // TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID: printable, no space, with maximum lengths.
    let mut header = Vec::with_capacity(5);
    for max in [64usize, 255, 48, 128, 32] {
        let s = i;
        while i < b.len() && b[i] != b' ' {
            if !(33..=126).contains(&b[i]) {
                return err("non-printable header character", i);
            }
            i += 1;
        }
        if i == s || i - s > max {
            return err("header field empty or too long", s);
        }
        if i >= b.len() {
            return err("message ends in the header", i);
        }
        header.push(msg[s..i].to_string());
        i += 1;
    }
    let mut sd = Vec::new();
    if b.get(i) == Some(&b'-') {
        i += 1;
    } else if b.get(i) != Some(&b'[') {
        return err("no STRUCTURED-DATA", i);
    }
    while b.get(i) == Some(&b'[') {
        i += 1;
        let id = sd_name(b, &mut i, "bad SD-ID")?;
        let mut params = Vec::new();
        loop {
            match b.get(i) {
                Some(b']') => {
                    i += 1;
                    break;
                }
                Some(b' ') => i += 1,
                _ => return err("expected ' ' or ']' in SD-ELEMENT", i),
            }
            let name = sd_name(b, &mut i, "bad PARAM-NAME")?;
            if b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return err("expected '=\"' after PARAM-NAME", i);
            }
            i += 2;
            let start = i;
            let mut value = String::new();
            let mut chars = msg[i..].char_indices();
            loop {
                let Some((o, c)) = chars.next() else {
                    return err("unterminated PARAM-VALUE", start);
                };
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => return err("unterminated PARAM-VALUE", start),
                    },
                    '"' => {
                        i = start + o + 1;
                        break;
                    }
                    ']' => return err("unescaped ']' in PARAM-VALUE", start + o),
                    c => value.push(c),
                }
            }
            params.push((name, value));
        }
        sd.push(SdElement { id, params });
    }
    let rest = &msg[i..];
    let text = match rest.strip_prefix(' ') {
        Some(t) => t.to_string(),
        None if rest.is_empty() => String::new(),
        None => return err("no space before MSG", i),
    };
    let mut h = header.into_iter();
    let mut next = || h.next().unwrap_or_default();
    Ok(Message {
        pri: pri as u8,
        version,
        timestamp: next(),
        hostname: next(),
        app_name: next(),
        procid: next(),
        msgid: next(),
        sd,
        msg: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "<134>1 2025-12-02T03:00:00.123Z dhcp1 prodhcp 1234 commit \
        [lease@32473 event=\"commit\" seq=\"42\" hostname=\"a\\\"b\\\\c\\]d\"][x@1 k=\"v\\n\"] \
        commit 198.18.1.4";

    #[test]
    fn parses_header_elements_and_unescapes_values() {
        let m = parse(GOOD).unwrap();
        assert_eq!((m.pri, m.version), (134, 1));
        assert_eq!(m.timestamp, "2025-12-02T03:00:00.123Z");
        assert_eq!(
            (&*m.hostname, &*m.app_name, &*m.procid, &*m.msgid),
            ("dhcp1", "prodhcp", "1234", "commit")
        );
        assert_eq!(m.sd.len(), 2);
        let e = m.element("lease@32473").unwrap();
        assert_eq!(
            e.params,
            [
                ("event".to_string(), "commit".to_string()),
                ("seq".into(), "42".into()),
                ("hostname".into(), r#"a"b\c]d"#.into()),
            ]
        );
        // Any other escaped character keeps its backslash.
        assert_eq!(m.element("x@1").unwrap().params[0].1, "v\\n");
        assert_eq!(m.msg, "commit 198.18.1.4");
        assert!(m.element("lease@1").is_none());
    }

    #[test]
    fn display_writes_an_element_that_parses_back_to_itself() {
        let m = parse(GOOD).unwrap();
        let e = m.element("lease@32473").unwrap();
        let again = parse(&format!("<1>1 - - - - - {e}")).unwrap();
        assert_eq!(again.sd, vec![e.clone()]);
        assert_eq!(again.msg, "");
    }

    #[test]
    fn nil_structured_data_trailing_newline_and_no_msg() {
        let m = parse("<13>1 - host app - - -\n").unwrap();
        assert!(m.sd.is_empty());
        assert_eq!((m.hostname.as_str(), m.msg.as_str()), ("host", ""));
        let m = parse("<13>1 - host app - - - hello world").unwrap();
        assert_eq!(m.msg, "hello world");
    }

    #[test]
    fn refuses_broken_messages_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "no '<' of PRI"),
            ("13>1 - h a - - -", "no '<' of PRI"),
            ("<192>1 - h a - - -", "PRI above 191"),
            ("<1x>1 - h a - - -", "bad PRI"),
            ("<13> - h a - - -", "bad VERSION"),
            ("<13>1 - h a -", "message ends in the header"),
            ("<13>1 - h a - - x", "no STRUCTURED-DATA"),
            (
                "<13>1 - h a - - [x@1 k=\"a]b\"]",
                "unescaped ']' in PARAM-VALUE",
            ),
            ("<13>1 - h a - - [x@1 k=\"ab", "unterminated PARAM-VALUE"),
            ("<13>1 - h a - - [x@1 k=\"ab\\", "unterminated PARAM-VALUE"),
            (
                "<13>1 - h a - - [x@1 k=v]",
                "expected '=\"' after PARAM-NAME",
            ),
            ("<13>1 - h a - - [x@1  k=\"v\"]", "bad PARAM-NAME"),
            (
                "<13>1 - h a - - [x@1 k=\"v\"",
                "expected ' ' or ']' in SD-ELEMENT",
            ),
            ("<13>1 - h a - - []", "bad SD-ID"),
            ("<13>1 - h a - - [x@1]msg", "no space before MSG"),
        ];
        for (m, why) in cases {
            match parse(m) {
                Err(e) => assert_eq!(e.what, *why, "{m:?}: {e}"),
                Ok(p) => panic!("accepted {m:?}: {p:?}"),
            }
        }
        let long = format!("<13>1 - h a - - [{}@1]", "x".repeat(31));
        assert_eq!(parse(&long).unwrap_err().what, "bad SD-ID");
    }
}
