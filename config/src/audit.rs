//! The optional `audit` section: where the lease audit trail goes (issue 9). Absent means no
//! audit trail, exactly as before.
//!
//! The section is parsed and checked here; the audit process (`prodhcp_audit::process`) reads
//! it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::path::FieldPath;
use crate::validate::{check_absolute, fail, Check, MAX_SOCKET_PATH};
use crate::wire::WireAudit;

/// Default of `audit.spool_max_bytes`: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Smallest `audit.spool_max_bytes`: 1 MiB.
pub const MIN_SPOOL_MAX_BYTES: u64 = 1 << 20;
/// The CA bundle `tls://` targets are verified against when `audit.tls_ca_file` is not given
/// (Debian's ca-certificates).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Most entries in `audit.targets`.
pub const MAX_AUDIT_TARGETS: usize = 16;
/// Name of the default spool directory under `state_dir` (`<state_dir>/audit-spool`).
pub const DEFAULT_SPOOL_DIR_NAME: &str = "audit-spool";
/// Longest host name in a target (RFC 1035: 253 characters without the trailing dot).
const MAX_HOST_NAME: usize = 253;
/// Longest label of a host name.
const MAX_HOST_LABEL: usize = 63;

/// A validated `audit` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Audit {
    /// Syslog collectors every record is sent to, in file order; each at most once. May be
    /// empty when `file` is set.
    pub targets: Vec<AuditTarget>,
    /// The JSON-lines application log (absolute path), if any.
    pub file: Option<PathBuf>,
    /// Directory of the on-disk spool (absolute; resolved: `<state_dir>/audit-spool` unless
    /// configured).
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold (at least [`MIN_SPOOL_MAX_BYTES`]).
    pub spool_max_bytes: u64,
    /// Whether OFFERs are audited too (off by default: they commit nothing).
    pub offers: bool,
    /// Whether a full spool stops new lease commits (true) rather than losing records with a
    /// counted, logged loss (false).
    pub audit_strict: bool,
    /// TLS settings of `tls://` targets (`Some` whenever there is one; the CA file is then
    /// [`SYSTEM_CA_FILE`] unless `tls_ca_file` names another).
    pub tls: Option<AuditTls>,
}

/// `audit.tls_ca_file`, `tls_cert_file`, `tls_key_file`: how `tls://` targets are verified and
/// how this appliance identifies itself to them (RFC 5425).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditTls {
    /// PEM file of the certificate authorities a collector's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain), for collectors that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// One entry of `audit.targets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuditTarget {
    /// `unix:/path`: a local datagram socket such as `/dev/log`.
    Unix(PathBuf),
    /// `udp://host:port`: RFC 5426, best effort (a lost datagram is not seen).
    Udp(Endpoint),
    /// `tcp://host:port`: RFC 6587 octet-counting framing.
    Tcp(Endpoint),
    /// `tls://host:port`: RFC 5425.
    Tls(Endpoint),
}

/// Host and port of a network target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// The collector's address or name.
    pub host: AuditHost,
    /// Its port, 1 to 65535.
    pub port: u16,
}

/// The host part of a network target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuditHost {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, lower-cased, without a trailing dot; resolved when connecting.
    Name(String),
}

impl AuditTarget {
    /// The scheme as written in the file: `unix`, `udp`, `tcp` or `tls`.
    pub fn scheme(&self) -> &'static str {
        match self {
            AuditTarget::Unix(_) => "unix",
            AuditTarget::Udp(_) => "udp",
            AuditTarget::Tcp(_) => "tcp",
            AuditTarget::Tls(_) => "tls",
        }
    }

    /// The host and port, for a network target.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self {
            AuditTarget::Unix(_) => None,
            AuditTarget::Udp(e) | AuditTarget::Tcp(e) | AuditTarget::Tls(e) => Some(e),
        }
    }
}

impl fmt::Display for AuditHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            AuditHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            AuditHost::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The canonical form of the target, as it would be written in the file.
impl fmt::Display for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            AuditTarget::Udp(e) | AuditTarget::Tcp(e) | AuditTarget::Tls(e) => {
                write!(f, "{}://{e}", self.scheme())
            }
        }
    }
}

/// Why a target string is not a target. The message names the text.
fn bad<T>(field: &FieldPath, text: &str, why: impl fmt::Display) -> Check<T> {
    fail(field.clone(), format!("`{text}`: {why}"))
}

const FORMS: &str =
    "use \"unix:/path\", \"udp://host:port\", \"tcp://host:port\" or \"tls://host:port\"";

/// Parses one entry of `audit.targets`.
pub(crate) fn parse_target(text: &str, field: &FieldPath) -> Check<AuditTarget> {
    let trimmed = text.trim();
    let Some((scheme, rest)) = trimmed.split_once(':') else {
        return bad(field, text, format_args!("no scheme; {FORMS}"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => parse_unix(rest, text, field).map(AuditTarget::Unix),
        network @ ("udp" | "tcp" | "tls") => {
            let Some(authority) = rest.strip_prefix("//") else {
                return bad(
                    field,
                    text,
                    format_args!("write `{network}://host:port` (the `//` is missing)"),
                );
            };
            let endpoint = parse_endpoint(authority, text, field, network)?;
            Ok(match network {
                "udp" => AuditTarget::Udp(endpoint),
                "tcp" => AuditTarget::Tcp(endpoint),
                _ => AuditTarget::Tls(endpoint),
            })
        }
        _ => bad(
            field,
            text,
            format_args!("unknown scheme `{scheme}`; {FORMS}"),
        ),
    }
}

fn parse_unix(path: &str, text: &str, field: &FieldPath) -> Check<PathBuf> {
    if path.starts_with("//") {
        return bad(
            field,
            text,
            "a Unix socket target is `unix:/path` (one slash, e.g. \"unix:/dev/log\")",
        );
    }
    let path = Path::new(path);
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return bad(
            field,
            text,
            "the socket path must be absolute (e.g. \"unix:/dev/log\")",
        );
    }
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return bad(
            field,
            text,
            format_args!("a Unix socket path has at most {MAX_SOCKET_PATH} bytes"),
        );
    }
    Ok(path.to_path_buf())
}

fn parse_endpoint(authority: &str, text: &str, field: &FieldPath, scheme: &str) -> Check<Endpoint> {
    if let Some(c) = authority
        .chars()
        .find(|c| matches!(c, '/' | '@' | '?' | '#') || c.is_whitespace())
    {
        return bad(
            field,
            text,
            format_args!("{c:?} is not allowed: a target is only `{scheme}://host:port`"),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return bad(field, text, "`[` without `]` around the IPv6 address");
        };
        let Ok(v6) = inside.parse::<Ipv6Addr>() else {
            return bad(
                field,
                text,
                format_args!("`{inside}` is not an IPv6 address"),
            );
        };
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => "",
            None => return bad(field, text, format_args!("unexpected `{after}` after `]`")),
        };
        (AuditHost::Ip(IpAddr::V6(v6)), port)
    } else {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        if host.contains(':') {
            return bad(
                field,
                text,
                "an IPv6 address must be in brackets: `[2001:db8::1]:514`",
            );
        }
        (parse_host(host, text, field)?, port)
    };
    if port.is_empty() {
        return bad(
            field,
            text,
            format_args!("the port is missing (`{scheme}://host:port`; syslog uses 514, TLS 6514)"),
        );
    }
    let port = match port.parse::<u16>() {
        Ok(0) => return bad(field, text, "port 0: the port must be 1..=65535"),
        Ok(port) => port,
        Err(_) => {
            return bad(
                field,
                text,
                format_args!("`{port}` is not a port (1..=65535)"),
            )
        }
    };
    if let AuditHost::Ip(ip) = &host {
        if ip.is_unspecified() {
            return bad(
                field,
                text,
                format_args!("{ip} is not a collector's address"),
            );
        }
        if scheme != "udp" && ip.is_multicast() {
            return bad(
                field,
                text,
                format_args!("{ip} is a multicast address; {scheme} needs a unicast one"),
            );
        }
    }
    Ok(Endpoint { host, port })
}

fn parse_host(host: &str, text: &str, field: &FieldPath) -> Check<AuditHost> {
    if host.is_empty() {
        return bad(field, text, "the host is missing");
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok(AuditHost::Ip(IpAddr::V4(v4)));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        return bad(
            field,
            text,
            format_args!("a host name has 1 to {MAX_HOST_NAME} characters"),
        );
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= MAX_HOST_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return bad(
                field,
                text,
                format_args!(
                    "`{host}` is neither an IP address nor a host name (labels of 1 to {MAX_HOST_LABEL} letters, digits and inner '-', separated by '.')"
                ),
            );
        }
    }
    // RFC 3696 §2: a top-level label is never all digits, so `10.0.0.256` is a bad address,
    // not a name.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return bad(
            field,
            text,
            format_args!("`{host}` is not a valid IPv4 address"),
        );
    }
    Ok(AuditHost::Name(name))
}

/// Checks the `audit` section. `state_dir` is the validated top-level state directory (the
/// default spool lives under it).
pub(crate) fn validate_audit(wire: WireAudit, state_dir: &Path) -> Check<Audit> {
    let path = FieldPath::field("audit");
    if wire.targets.len() > MAX_AUDIT_TARGETS {
        return fail(
            path.at("targets"),
            format!(
                "{} targets; at most {MAX_AUDIT_TARGETS}",
                wire.targets.len()
            ),
        );
    }
    let mut targets = Vec::with_capacity(wire.targets.len());
    let mut seen: HashMap<AuditTarget, usize> = HashMap::new();
    for (i, text) in wire.targets.iter().enumerate() {
        let field = path.at("targets").index(i);
        let target = parse_target(text, &field)?;
        if let Some(first) = seen.insert(target.clone(), i) {
            return fail(
                field,
                format!("`{text}` is the same target as audit.targets[{first}] ({target})"),
            );
        }
        targets.push(target);
    }
    if let Some(file) = &wire.file {
        check_absolute(file, path.at("file"))?;
        if file.file_name().is_none() {
            return fail(
                path.at("file"),
                format!("`{}` names no file", file.display()),
            );
        }
    }
    if targets.is_empty() && wire.file.is_none() {
        return fail(
            path,
            "no `targets` and no `file`: the audit trail would go nowhere (leave the whole `audit` section out for no audit trail)",
        );
    }
    let spool_dir = match wire.spool_dir {
        Some(dir) => {
            check_absolute(&dir, path.at("spool_dir"))?;
            dir
        }
        None => state_dir.join(DEFAULT_SPOOL_DIR_NAME),
    };
    if wire.spool_max_bytes < MIN_SPOOL_MAX_BYTES {
        return fail(
            path.at("spool_max_bytes"),
            format!(
                "{} bytes; the spool needs at least {MIN_SPOOL_MAX_BYTES} (1 MiB)",
                wire.spool_max_bytes
            ),
        );
    }
    let has_tls = targets.iter().any(|t| matches!(t, AuditTarget::Tls(_)));
    for (name, p) in [
        ("tls_ca_file", &wire.tls_ca_file),
        ("tls_cert_file", &wire.tls_cert_file),
        ("tls_key_file", &wire.tls_key_file),
    ] {
        if let Some(p) = p {
            check_absolute(p, path.at(name))?;
        }
    }
    if wire.tls_cert_file.is_some() != wire.tls_key_file.is_some() {
        return fail(
            path.at("tls_key_file"),
            "`tls_cert_file` and `tls_key_file` go together: give both or neither",
        );
    }
    let tls = match wire.tls_ca_file {
        Some(ca_file) => Some(AuditTls {
            ca_file,
            cert_file: wire.tls_cert_file,
            key_file: wire.tls_key_file,
        }),
        // The system's bundle (Debian's ca-certificates) when none is named.
        None if has_tls || wire.tls_cert_file.is_some() => Some(AuditTls {
            ca_file: PathBuf::from(SYSTEM_CA_FILE),
            cert_file: wire.tls_cert_file,
            key_file: wire.tls_key_file,
        }),
        None => None,
    };
    Ok(Audit {
        tls,
        targets,
        file: wire.file,
        spool_dir,
        spool_max_bytes: wire.spool_max_bytes,
        offers: wire.offers,
        audit_strict: wire.audit_strict,
    })
}
