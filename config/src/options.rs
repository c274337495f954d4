//! DHCP options: names, value syntax, and the pre-encoded [`OptionBlock`] of a subnet.
//!
//! A subnet's `options` map goes from an option name (`"routers"`) or a numeric code as a
//! string (`"252"`) to a string value. Values are encoded once, at load, into the bytes that
//! go on the wire after the option's code and length. Lists are comma separated. An option
//! given by code that has no known name needs a typed value: `"ip:10.0.0.1,10.0.0.2"`,
//! `"u8:5"`, `"u16:1500"`, `"u32:600"`, `"i32:-5"`, `"bool:true"`, `"str:text"`,
//! `"hex:0a0b0c"` (or `"hex:0a:0b:0c"`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The most bytes a subnet's options may take on the wire (code and length octets included,
/// long values split per RFC 3396). A reply over Ethernet has roughly 1200 bytes of room for
/// options, and the server adds its own (message type, server identifier, lease times, the
/// relay agent information it echoes).
pub const MAX_OPTIONS_WIRE_LEN: usize = 1024;

/// The value syntax and encoding of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionKind {
    /// One IPv4 address: 4 bytes.
    Ip,
    /// One or more IPv4 addresses, comma separated: 4 bytes each.
    IpList,
    /// Pairs `"destination router"`, comma separated (option 33): 8 bytes each.
    IpPairs,
    /// RFC 3442 routes `"10.0.0.0/8 10.0.0.1"`, comma separated (option 121).
    ClasslessRoutes,
    /// Domain names, comma separated, RFC 1035 encoded without compression (option 119).
    DomainList,
    /// Text, sent as its UTF-8 bytes without a terminating NUL.
    Str,
    /// Raw bytes written in hex: `"0a0b0c"` or `"0a:0b:0c"`. May be empty.
    Hex,
    /// `true` or `false`: 1 byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer, network byte order.
    U16,
    /// Unsigned 32-bit integer, network byte order.
    U32,
    /// Signed 32-bit integer, network byte order.
    I32,
}

impl OptionKind {
    fn describe(self) -> &'static str {
        match self {
            OptionKind::Ip => "an IPv4 address",
            OptionKind::IpList => "IPv4 addresses separated by commas",
            OptionKind::IpPairs => "pairs \"destination router\" separated by commas",
            OptionKind::ClasslessRoutes => "routes \"10.0.0.0/8 10.0.0.1\" separated by commas",
            OptionKind::DomainList => "domain names separated by commas",
            OptionKind::Str => "text",
            OptionKind::Hex => "hex bytes such as \"0a0b0c\" or \"0a:0b:0c\"",
            OptionKind::Bool => "true or false",
            OptionKind::U8 => "an integer 0..=255",
            OptionKind::U16 => "an integer 0..=65535",
            OptionKind::U32 => "an integer 0..=4294967295",
            OptionKind::I32 => "an integer -2147483648..=2147483647",
        }
    }
}

/// The typed prefixes accepted on values of options given by code.
const TYPE_PREFIXES: &[(&str, OptionKind)] = &[
    ("ip", OptionKind::IpList),
    ("u8", OptionKind::U8),
    ("u16", OptionKind::U16),
    ("u32", OptionKind::U32),
    ("i32", OptionKind::I32),
    ("bool", OptionKind::Bool),
    ("str", OptionKind::Str),
    ("hex", OptionKind::Hex),
];

#[derive(Debug, Clone, Copy)]
enum Known {
    /// An option the operator sets, with its syntax.
    Value(OptionKind),
    /// An option the server manages itself; the text says where its value comes from.
    Managed(&'static str),
}

struct KnownOption {
    code: u8,
    name: &'static str,
    known: Known,
}

const fn value(code: u8, name: &'static str, kind: OptionKind) -> KnownOption {
    KnownOption {
        code,
        name,
        known: Known::Value(kind),
    }
}

const fn managed(code: u8, name: &'static str, why: &'static str) -> KnownOption {
    KnownOption {
        code,
        name,
        known: Known::Managed(why),
    }
}

/// Options known by name (names follow ISC dhcpd / Kea where they exist).
const KNOWN: &[KnownOption] = &[
    value(1, "subnet-mask", OptionKind::Ip),
    value(2, "time-offset", OptionKind::I32),
    value(3, "routers", OptionKind::IpList),
    value(4, "time-servers", OptionKind::IpList),
    value(6, "domain-name-servers", OptionKind::IpList),
    value(7, "log-servers", OptionKind::IpList),
    value(9, "lpr-servers", OptionKind::IpList),
    value(12, "host-name", OptionKind::Str),
    value(13, "boot-size", OptionKind::U16),
    value(15, "domain-name", OptionKind::Str),
    value(17, "root-path", OptionKind::Str),
    value(19, "ip-forwarding", OptionKind::Bool),
    value(23, "default-ip-ttl", OptionKind::U8),
    value(26, "interface-mtu", OptionKind::U16),
    value(28, "broadcast-address", OptionKind::Ip),
    value(33, "static-routes", OptionKind::IpPairs),
    value(35, "arp-cache-timeout", OptionKind::U32),
    value(37, "default-tcp-ttl", OptionKind::U8),
    value(38, "tcp-keepalive-interval", OptionKind::U32),
    value(40, "nis-domain", OptionKind::Str),
    value(41, "nis-servers", OptionKind::IpList),
    value(42, "ntp-servers", OptionKind::IpList),
    value(43, "vendor-encapsulated-options", OptionKind::Hex),
    value(44, "netbios-name-servers", OptionKind::IpList),
    value(46, "netbios-node-type", OptionKind::U8),
    value(47, "netbios-scope", OptionKind::Str),
    value(66, "tftp-server-name", OptionKind::Str),
    value(67, "bootfile-name", OptionKind::Str),
    value(69, "smtp-server", OptionKind::IpList),
    value(70, "pop-server", OptionKind::IpList),
    value(72, "www-server", OptionKind::IpList),
    value(100, "pcode", OptionKind::Str),
    value(101, "tcode", OptionKind::Str),
    value(108, "v4-ipv6-only-preferred", OptionKind::U32),
    value(114, "captive-portal", OptionKind::Str),
    value(119, "domain-search", OptionKind::DomainList),
    value(121, "classless-static-routes", OptionKind::ClasslessRoutes),
    value(150, "tftp-server-address", OptionKind::IpList),
    managed(
        50,
        "dhcp-requested-address",
        "is sent by clients, not servers",
    ),
    managed(
        51,
        "dhcp-lease-time",
        "is set from the subnet's `lease_time`",
    ),
    managed(
        52,
        "dhcp-option-overload",
        "is managed by the packet encoder",
    ),
    managed(
        53,
        "dhcp-message-type",
        "is set by the server for each reply",
    ),
    managed(
        54,
        "dhcp-server-identifier",
        "is set from the top-level `server_id` (or the cluster's service address, or the receiving address)",
    ),
    managed(
        55,
        "dhcp-parameter-request-list",
        "is sent by clients, not servers",
    ),
    managed(
        56,
        "dhcp-message",
        "is set by the server (the reason text of a NAK)",
    ),
    managed(
        57,
        "dhcp-max-message-size",
        "is sent by clients, not servers",
    ),
    managed(
        58,
        "dhcp-renewal-time",
        "is set from the subnet's `renew_time`",
    ),
    managed(
        59,
        "dhcp-rebinding-time",
        "is set from the subnet's `rebind_time`",
    ),
    managed(
        61,
        "dhcp-client-identifier",
        "is sent by clients; reserve by client identifier with `reservations[].client_id`",
    ),
    managed(
        82,
        "dhcp-agent-options",
        "is added by relay agents and echoed by the server",
    ),
];

/// Option code 1: subnet mask.
pub const SUBNET_MASK: u8 = 1;
/// Option code 28: broadcast address.
pub const BROADCAST_ADDRESS: u8 = 28;
const INTERFACE_MTU: u8 = 26;

/// The code of a known option name, e.g. `option_code("routers") == Some(3)`.
pub fn option_code(name: &str) -> Option<u8> {
    KNOWN.iter().find(|k| k.name == name).map(|k| k.code)
}

/// The name of a known option code, e.g. `option_name(3) == Some("routers")`.
pub fn option_name(code: u8) -> Option<&'static str> {
    KNOWN.iter().find(|k| k.code == code).map(|k| k.name)
}

/// Why an `options` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// The key is neither a known name nor a number.
    #[error("unknown option name `{0}`; give a known name or the option's code as a number with a typed value, e.g. \"252\": \"str:http://wpad.example/wpad.dat\"")]
    UnknownName(String),
    /// The key is a number outside 0..=255.
    #[error("`{0}` is not an option code (codes are 1..=254)")]
    BadCode(String),
    /// Code 0 (pad) or 255 (end).
    #[error("option code {0} is {kind} and cannot carry a value", kind = if *.0 == 0 { "pad" } else { "end" })]
    Reserved(u8),
    /// An option the server sets itself.
    #[error("option {code} ({name}) cannot be configured: it {why}")]
    Managed {
        /// The option code.
        code: u8,
        /// Its name.
        name: &'static str,
        /// Where its value comes from instead.
        why: &'static str,
    },
    /// An option with no known syntax, given without a typed prefix.
    #[error("option {0} has no known value type; prefix the value with its type: ip:, u8:, u16:, u32:, i32:, bool:, str: or hex: (e.g. \"u8:5\")")]
    NeedsType(u8),
    /// The value does not match the option's syntax.
    #[error("option {code}: {problem}")]
    BadValue {
        /// The option code.
        code: u8,
        /// What is wrong with the value.
        problem: String,
    },
}

/// Encodes one `options` entry (`key` a name or a code, `value` its text) into the option
/// code and the wire bytes of its value.
pub fn encode_option(key: &str, value: &str) -> Result<(u8, Vec<u8>), OptionError> {
    let key = key.trim();
    let (code, known) = if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        let code = key
            .parse::<u8>()
            .map_err(|_| OptionError::BadCode(key.to_string()))?;
        (code, KNOWN.iter().find(|k| k.code == code))
    } else {
        let known = KNOWN
            .iter()
            .find(|k| k.name == key)
            .ok_or_else(|| OptionError::UnknownName(key.to_string()))?;
        (known.code, Some(known))
    };
    if code == 0 || code == 255 {
        return Err(OptionError::Reserved(code));
    }
    if let Some(KnownOption {
        name,
        known: Known::Managed(why),
        ..
    }) = known
    {
        return Err(OptionError::Managed { code, name, why });
    }
    let known_kind = match known {
        Some(KnownOption {
            known: Known::Value(kind),
            ..
        }) => Some(*kind),
        _ => None,
    };
    let by_code = key.bytes().all(|b| b.is_ascii_digit());
    let prefixed = value.split_once(':').and_then(|(prefix, rest)| {
        TYPE_PREFIXES
            .iter()
            .find(|(p, _)| *p == prefix.trim())
            .map(|(_, kind)| (*kind, rest))
    });
    let (kind, text) = match (by_code, prefixed, known_kind) {
        (true, Some((kind, rest)), _) => (kind, rest),
        (_, _, Some(kind)) => (kind, value),
        (_, _, None) => return Err(OptionError::NeedsType(code)),
    };
    let bytes =
        encode_value(kind, text).map_err(|problem| OptionError::BadValue { code, problem })?;
    if code == INTERFACE_MTU && kind == OptionKind::U16 {
        let mtu = bytes
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0);
        if mtu < 68 {
            return Err(OptionError::BadValue {
                code,
                problem: format!("an MTU of {mtu} is below the minimum of 68 (RFC 2132)"),
            });
        }
    }
    Ok((code, bytes))
}

/// Encodes `text` as a value of `kind`; the error says what is wrong.
pub fn encode_value(kind: OptionKind, text: &str) -> Result<Vec<u8>, String> {
    let expected = || format!("expected {}, got {text:?}", kind.describe());
    let trimmed = text.trim();
    match kind {
        OptionKind::Ip => {
            let ip = parse_ip(trimmed).map_err(|_| expected())?;
            Ok(ip.octets().to_vec())
        }
        OptionKind::IpList => {
            let mut out = Vec::new();
            for item in list_items(trimmed).map_err(|e| format!("{e}; {}", expected()))? {
                out.extend_from_slice(&parse_ip(item)?.octets());
            }
            Ok(out)
        }
        OptionKind::IpPairs => {
            let mut out = Vec::new();
            for item in list_items(trimmed).map_err(|e| format!("{e}; {}", expected()))? {
                let parts: Vec<&str> = item.split_whitespace().collect();
                let [destination, router] = parts.as_slice() else {
                    return Err(format!(
                        "`{item}` is not a pair \"destination router\"; {}",
                        expected()
                    ));
                };
                let destination = parse_ip(destination)?;
                if destination.is_unspecified() {
                    return Err(
                        "0.0.0.0 is not a valid destination for static-routes (RFC 2132); use \
                         routers or classless-static-routes for a default route"
                            .to_string(),
                    );
                }
                out.extend_from_slice(&destination.octets());
                out.extend_from_slice(&parse_ip(router)?.octets());
            }
            Ok(out)
        }
        OptionKind::ClasslessRoutes => {
            let mut out = Vec::new();
            for item in list_items(trimmed).map_err(|e| format!("{e}; {}", expected()))? {
                let parts: Vec<&str> = item.split_whitespace().collect();
                let [destination, router] = parts.as_slice() else {
                    return Err(format!(
                        "`{item}` is not a route \"10.0.0.0/8 10.0.0.1\"; {}",
                        expected()
                    ));
                };
                let net: Ipv4Net = destination
                    .parse()
                    .map_err(|_| format!("`{destination}` is not a prefix such as 10.0.0.0/8"))?;
                if net.trunc() != net {
                    return Err(format!(
                        "`{destination}` has host bits set; did you mean {}?",
                        net.trunc()
                    ));
                }
                let significant = usize::from(net.prefix_len()).div_ceil(8);
                out.push(net.prefix_len());
                out.extend(net.network().octets().iter().take(significant));
                out.extend_from_slice(&parse_ip(router)?.octets());
            }
            Ok(out)
        }
        OptionKind::DomainList => {
            let mut out = Vec::new();
            for item in list_items(trimmed).map_err(|e| format!("{e}; {}", expected()))? {
                encode_domain(item, &mut out)?;
            }
            Ok(out)
        }
        OptionKind::Str => {
            if text.is_empty() {
                return Err("the text is empty".to_string());
            }
            if let Some(c) = text.chars().find(|c| c.is_control()) {
                return Err(format!("the text contains the control character {c:?}"));
            }
            Ok(text.as_bytes().to_vec())
        }
        OptionKind::Hex => parse_hex(trimmed).map_err(|e| format!("{e}; {}", expected())),
        OptionKind::Bool => match trimmed {
            "true" => Ok(vec![1]),
            "false" => Ok(vec![0]),
            _ => Err(expected()),
        },
        OptionKind::U8 => trimmed
            .parse::<u8>()
            .map(|v| vec![v])
            .map_err(|_| expected()),
        OptionKind::U16 => trimmed
            .parse::<u16>()
            .map(|v| v.to_be_bytes().to_vec())
            .map_err(|_| expected()),
        OptionKind::U32 => trimmed
            .parse::<u32>()
            .map(|v| v.to_be_bytes().to_vec())
            .map_err(|_| expected()),
        OptionKind::I32 => trimmed
            .parse::<i32>()
            .map(|v| v.to_be_bytes().to_vec())
            .map_err(|_| expected()),
    }
}

fn parse_ip(text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{}` is not an IPv4 address", text.trim()))
}

/// The non-empty, trimmed items of a comma separated list.
fn list_items(text: &str) -> Result<Vec<&str>, String> {
    if text.trim().is_empty() {
        return Err("the list is empty".to_string());
    }
    text.split(',')
        .map(str::trim)
        .map(|item| {
            if item.is_empty() {
                Err("the list has an empty item".to_string())
            } else {
                Ok(item)
            }
        })
        .collect()
}

/// Appends `name` in RFC 1035 wire form (labels, then a zero octet).
fn encode_domain(name: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let mut encoded = Vec::with_capacity(bare.len() + 2);
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{name}` is not a domain name: labels must be 1 to 63 characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "`{name}` is not a domain name: use letters, digits, '-' and '_' (IDNs in punycode)"
            ));
        }
        encoded.push(label.len() as u8); // ≤ 63, checked above
        encoded.extend_from_slice(label.as_bytes());
    }
    encoded.push(0);
    if encoded.len() > 255 {
        return Err(format!("`{name}` is longer than 255 octets encoded"));
    }
    out.extend_from_slice(&encoded);
    Ok(())
}

/// Parses hex bytes written `"0a0b0c"` or `"0a:0b:0c"` (two digits per byte). Empty text
/// gives no bytes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let digit = |c: u8| -> Option<u8> { (c as char).to_digit(16).map(|d| d as u8) };
    let pair = |p: &[u8]| -> Option<u8> {
        match p {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        }
    };
    let bad = || format!("`{text}` is not hex bytes (two hex digits per byte)");
    if text.contains(':') {
        text.split(':')
            .map(|group| pair(group.as_bytes()).ok_or_else(bad))
            .collect()
    } else {
        if text.len() % 2 == 1 {
            return Err(bad());
        }
        text.as_bytes()
            .chunks(2)
            .map(|p| pair(p).ok_or_else(bad))
            .collect()
    }
}

/// A subnet's options, encoded once at load: `(code, value bytes)` sorted by code, one entry
/// per code. Values longer than 255 bytes are kept whole; the packet encoder splits them into
/// consecutive instances of the option (RFC 3396).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OptionBlock {
    entries: Vec<(u8, Vec<u8>)>,
}

impl OptionBlock {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets option `code` to `value`, returning the value it replaces.
    pub fn insert(&mut self, code: u8, value: Vec<u8>) -> Option<Vec<u8>> {
        match self.entries.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(i) => self
                .entries
                .get_mut(i)
                .map(|entry| std::mem::replace(&mut entry.1, value)),
            Err(i) => {
                self.entries.insert(i, (code, value));
                None
            }
        }
    }

    /// The value bytes of option `code`.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.entries
            .binary_search_by_key(&code, |(c, _)| *c)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether option `code` is present.
    pub fn contains(&self, code: u8) -> bool {
        self.get(code).is_some()
    }

    /// The options in ascending code order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        self.entries.iter().map(|(c, v)| (*c, v.as_slice()))
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no options.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the options take in a packet: code and length octets for every (RFC 3396)
    /// instance, plus the values.
    pub fn wire_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, v)| 2 * v.len().div_ceil(255).max(1) + v.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(key: &str, value: &str) -> Vec<u8> {
        match encode_option(key, value) {
            Ok((_, bytes)) => bytes,
            Err(e) => panic!("{key}: {value}: {e}"),
        }
    }

    fn code(key: &str, value: &str) -> u8 {
        encode_option(key, value).unwrap().0
    }

    #[test]
    fn ip_options() {
        assert_eq!(code("subnet-mask", "255.255.255.0"), 1);
        assert_eq!(enc("subnet-mask", "255.255.255.0"), [255, 255, 255, 0]);
        assert_eq!(enc("broadcast-address", "10.0.0.255"), [10, 0, 0, 255]);
        assert!(encode_option("subnet-mask", "255.255.255.0, 255.0.0.0").is_err());
        assert_eq!(code("routers", "10.0.0.1"), 3);
        assert_eq!(
            enc("routers", "10.0.0.1, 10.0.0.2"),
            [10, 0, 0, 1, 10, 0, 0, 2]
        );
        for (name, c) in [
            ("time-servers", 4),
            ("domain-name-servers", 6),
            ("log-servers", 7),
            ("ntp-servers", 42),
            ("netbios-name-servers", 44),
        ] {
            assert_eq!(encode_option(name, "192.0.2.1,192.0.2.2").unwrap().0, c);
            assert_eq!(
                enc(name, "192.0.2.1,192.0.2.2"),
                [192, 0, 2, 1, 192, 0, 2, 2]
            );
        }
        assert!(encode_option("routers", "").is_err());
        assert!(encode_option("routers", "10.0.0.1,").is_err());
        assert!(encode_option("routers", "10.0.0.256").is_err());
    }

    #[test]
    fn integer_and_bool_options() {
        assert_eq!(enc("time-offset", "-5"), (-5i32).to_be_bytes());
        assert_eq!(enc("time-offset", "3600"), [0, 0, 0x0e, 0x10]);
        assert!(encode_option("time-offset", "3000000000").is_err());
        assert_eq!(enc("interface-mtu", "1500"), [0x05, 0xdc]);
        assert!(encode_option("interface-mtu", "67").is_err());
        assert!(encode_option("interface-mtu", "65536").is_err());
        assert_eq!(enc("v4-ipv6-only-preferred", "1800"), [0, 0, 0x07, 0x08]);
        assert_eq!(code("v4-ipv6-only-preferred", "1800"), 108);
        assert_eq!(enc("ip-forwarding", "false"), [0]);
        assert_eq!(enc("default-ip-ttl", "64"), [64]);
    }

    #[test]
    fn string_options() {
        for (name, c) in [
            ("host-name", 12),
            ("domain-name", 15),
            ("tftp-server-name", 66),
            ("bootfile-name", 67),
            ("captive-portal", 114),
        ] {
            assert_eq!(code(name, "x"), c);
            assert_eq!(enc(name, "pxe/boot.efi"), b"pxe/boot.efi");
        }
        assert_eq!(
            enc("captive-portal", "https://portal.example/"),
            b"https://portal.example/"
        );
        assert!(encode_option("domain-name", "").is_err());
        assert!(encode_option("domain-name", "a\nb").is_err());
    }

    #[test]
    fn hex_options() {
        assert_eq!(
            enc("vendor-encapsulated-options", "0a0b0c"),
            [0x0a, 0x0b, 0x0c]
        );
        assert_eq!(
            enc("vendor-encapsulated-options", "0A:0b:ff"),
            [0x0a, 0x0b, 0xff]
        );
        assert!(encode_option("vendor-encapsulated-options", "0a0").is_err());
        assert!(encode_option("vendor-encapsulated-options", "0a:b").is_err());
        assert!(encode_option("vendor-encapsulated-options", "zz").is_err());
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn static_routes() {
        assert_eq!(
            enc("static-routes", "192.0.2.0 10.0.0.1, 198.51.100.0 10.0.0.2"),
            [192, 0, 2, 0, 10, 0, 0, 1, 198, 51, 100, 0, 10, 0, 0, 2]
        );
        assert!(encode_option("static-routes", "0.0.0.0 10.0.0.1").is_err());
        assert!(encode_option("static-routes", "192.0.2.0").is_err());
    }

    #[test]
    fn classless_static_routes_rfc3442() {
        assert_eq!(
            enc(
                "classless-static-routes",
                "10.0.0.0/8 10.0.0.1, 0.0.0.0/0 10.0.0.1, 192.0.2.128/25 10.0.0.2, 10.1.2.3/32 10.0.0.3"
            ),
            [
                8, 10, 10, 0, 0, 1, //
                0, 10, 0, 0, 1, //
                25, 192, 0, 2, 128, 10, 0, 0, 2, //
                32, 10, 1, 2, 3, 10, 0, 0, 3,
            ]
        );
        assert_eq!(code("classless-static-routes", "0.0.0.0/0 10.0.0.1"), 121);
        assert!(encode_option("classless-static-routes", "10.0.0.1/8 10.0.0.1").is_err());
        assert!(encode_option("classless-static-routes", "10.0.0.0/33 10.0.0.1").is_err());
        assert!(encode_option("classless-static-routes", "10.0.0.0/8").is_err());
    }

    #[test]
    fn domain_search_rfc1035() {
        assert_eq!(
            enc("domain-search", "a.example, bc.example."),
            b"\x01a\x07example\x00\x02bc\x07example\x00"
        );
        assert_eq!(code("domain-search", "example"), 119);
        assert!(encode_option("domain-search", "a..example").is_err());
        assert!(encode_option("domain-search", "a b.example").is_err());
        let long_label = "x".repeat(64);
        assert!(encode_option("domain-search", &long_label).is_err());
        let long_name = vec!["x".repeat(63); 5].join(".");
        assert!(encode_option("domain-search", &long_name).is_err());
    }

    #[test]
    fn typed_values_by_code() {
        assert_eq!(
            encode_option("252", "str:http://wpad/wpad.dat").unwrap().0,
            252
        );
        assert_eq!(
            enc("252", "str:http://wpad/wpad.dat"),
            b"http://wpad/wpad.dat"
        );
        assert_eq!(
            enc("200", "ip:10.0.0.1,10.0.0.2"),
            [10, 0, 0, 1, 10, 0, 0, 2]
        );
        assert_eq!(enc("200", "u8:5"), [5]);
        assert_eq!(enc("200", "u16:1500"), [0x05, 0xdc]);
        assert_eq!(enc("200", "u32:600"), [0, 0, 2, 0x58]);
        assert_eq!(enc("200", "i32:-5"), [0xff, 0xff, 0xff, 0xfb]);
        assert_eq!(enc("200", "bool:true"), [1]);
        assert_eq!(enc("200", "hex:0a0b0c"), [10, 11, 12]);
        assert_eq!(enc("200", "hex:0a:0b"), [10, 11]);
        assert_eq!(enc("200", "hex:"), Vec::<u8>::new());
        // a known code takes its known syntax without a prefix, or a prefix
        assert_eq!(enc("3", "10.0.0.1"), [10, 0, 0, 1]);
        assert_eq!(enc("26", "u16:1400"), [0x05, 0x78]);
        assert_eq!(enc("43", "0a:0b"), [10, 11]);
        assert_eq!(encode_option("200", "5"), Err(OptionError::NeedsType(200)));
        assert!(matches!(
            encode_option("200", "float:1.5"),
            Err(OptionError::NeedsType(200))
        ));
        assert!(encode_option("200", "u8:256").is_err());
        assert!(encode_option("200", "bool:yes").is_err());
        assert!(encode_option("200", "str:").is_err());
    }

    #[test]
    fn refused_codes_and_names() {
        assert_eq!(encode_option("0", "u8:1"), Err(OptionError::Reserved(0)));
        assert_eq!(
            encode_option("255", "u8:1"),
            Err(OptionError::Reserved(255))
        );
        assert!(matches!(
            encode_option("256", "u8:1"),
            Err(OptionError::BadCode(_))
        ));
        for c in [50u8, 51, 52, 53, 54, 55, 56, 57, 58, 59, 61, 82] {
            let err = encode_option(&c.to_string(), "u8:1").unwrap_err();
            assert!(
                matches!(err, OptionError::Managed { code, .. } if code == c),
                "{c}"
            );
            let name = option_name(c).unwrap();
            assert!(matches!(
                encode_option(name, "1"),
                Err(OptionError::Managed { .. })
            ));
        }
        assert!(encode_option("dhcp-lease-time", "600")
            .unwrap_err()
            .to_string()
            .contains("lease_time"));
        assert!(matches!(
            encode_option("rooters", "10.0.0.1"),
            Err(OptionError::UnknownName(_))
        ));
        assert_eq!(option_code("routers"), Some(3));
        assert_eq!(option_name(121), Some("classless-static-routes"));
    }

    #[test]
    fn block_is_sorted_and_measured() {
        let mut block = OptionBlock::new();
        assert!(block.is_empty());
        block.insert(6, vec![1, 2, 3, 4]);
        block.insert(3, vec![5, 6, 7, 8]);
        block.insert(121, vec![0; 300]);
        assert_eq!(block.insert(3, vec![9, 9, 9, 9]), Some(vec![5, 6, 7, 8]));
        let codes: Vec<u8> = block.iter().map(|(c, _)| c).collect();
        assert_eq!(codes, [3, 6, 121]);
        assert_eq!(block.len(), 3);
        assert_eq!(block.get(3), Some(&[9, 9, 9, 9][..]));
        assert_eq!(block.get(4), None);
        assert!(block.contains(121));
        // 3 and 6: 2 + 4 each; 121: two instances (255 + 45) → 4 + 300
        assert_eq!(block.wire_len(), 6 + 6 + 304);
        let mut empty_value = OptionBlock::new();
        empty_value.insert(80, vec![]);
        assert_eq!(empty_value.wire_len(), 2);
    }
}
