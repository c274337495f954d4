//! The validated configuration in a compact binary form, as the supervisor hands it to its
//! workers (issue 10). A worker used to parse and validate the RON text again: about half a
//! second for 100,000 subnets, on top of the supervisor's own parse, on every reload. The
//! supervisor has validated it already, and the worker runs the same executable, so the worker
//! only decodes it (postcard, serde). The form is private to one build of prodhcpd: it starts
//! with [`MAGIC`], and anything else is taken for RON text.

use crate::Config;

/// First bytes of the binary form (never the start of a RON file: a NUL byte, which RON text
/// cannot hold, see [`crate::load`]).
pub const MAGIC: &[u8; 8] = b"\0PDHCPC1";

/// The binary form of a validated configuration.
pub fn encode(config: &Config) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    // Serialising plain data into a Vec cannot fail.
    if let Ok(body) = postcard::to_stdvec(config) {
        out.extend_from_slice(&body);
    }
    out
}

/// A configuration frame's bytes: the binary form when they start with [`MAGIC`], else RON
/// text, parsed and validated.
pub fn decode(bytes: &[u8]) -> Result<Config, String> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(body) => postcard::from_bytes(body)
            .map_err(|e| format!("the configuration's binary form does not decode: {e}")),
        None => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            crate::parse(text).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"(
        state_dir: "/tmp/x",
        workers: 3,
        subnets: [
            (network: "10.0.0.0/24", pools: ["10.0.0.10-10.0.0.20", "10.0.0.30-10.0.0.40"],
             options: { "routers": "10.0.0.1", "domain-name": "example.net" },
             reservations: [ (mac: "02:00:00:00:00:01", address: "10.0.0.5") ],
             relays: ["198.18.0.2"]),
        ],
    )"#;

    #[test]
    fn the_binary_form_decodes_to_the_same_configuration_and_text_still_parses() {
        let config = crate::parse(CONFIG).expect("valid");
        let wire = encode(&config);
        assert!(wire.starts_with(MAGIC));
        assert_eq!(decode(&wire).expect("decodes"), config);
        assert_eq!(decode(CONFIG.as_bytes()).expect("parses"), config);
        // Damaged binary form: an error, not a panic.
        let cut = &wire[..wire.len() / 2];
        assert!(decode(cut).is_err());
        assert!(decode(b"not ron").is_err());
    }
}
