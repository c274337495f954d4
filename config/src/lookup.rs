//! Subnet selection without a scan over every subnet (issue 10): [`SubnetLookup`], built once
//! per configuration by whoever asks per packet (the worker) or per lease (the supervisor's
//! export), answering exactly as the linear [`Config::subnet_for_addr`] and
//! [`Config::subnet_for_relay`] do.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::Config;

/// Finds a packet's subnet in time that does not grow with the number of subnets: a hash of
/// relay address → the first subnet (in file order) listing it, and the networks sorted by
/// first address for a binary search (the configuration refuses overlapping networks, so at
/// most one contains an address). Answers exactly as [`Config::subnet_for_relay`] and
/// [`Config::subnet_for_addr`] (the linear scans it replaces; a property test compares them).
#[derive(Debug, Clone, Default)]
pub struct SubnetLookup {
    by_relay: HashMap<u32, usize>,
    /// (first address, last address, subnet index), sorted by first address.
    by_network: Vec<(u32, u32, usize)>,
}

impl SubnetLookup {
    /// The lookup for `config`'s subnets.
    pub fn build(config: &Config) -> SubnetLookup {
        let mut by_relay = HashMap::new();
        for s in &config.subnets {
            for r in &s.relays {
                by_relay.entry(u32::from(*r)).or_insert(s.index);
            }
        }
        let mut by_network: Vec<(u32, u32, usize)> = config
            .subnets
            .iter()
            .map(|s| {
                (
                    u32::from(s.network.network()),
                    u32::from(s.network.broadcast()),
                    s.index,
                )
            })
            .collect();
        by_network.sort_unstable();
        SubnetLookup {
            by_relay,
            by_network,
        }
    }

    /// The subnet whose network contains `a`.
    pub fn for_addr(&self, a: Ipv4Addr) -> Option<usize> {
        let a = u32::from(a);
        let i = self.by_network.partition_point(|(first, _, _)| *first <= a);
        let (first, last, index) = *self.by_network.get(i.checked_sub(1)?)?;
        (first <= a && a <= last).then_some(index)
    }

    /// The subnet for a relay's giaddr: the subnet listing it in `relays`, else the one whose
    /// network contains it.
    pub fn for_relay(&self, giaddr: Ipv4Addr) -> Option<usize> {
        self.by_relay
            .get(&u32::from(giaddr))
            .copied()
            .or_else(|| self.for_addr(giaddr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A configuration of subnets `10.<a>.<b>.0/<len>` (distinct (a, b), so no overlap), each
    /// with the relays listed that no earlier subnet took (the configuration maps a relay to
    /// one subnet).
    fn config(subnets: &[((u8, u8), u8, Vec<u8>)]) -> Config {
        let mut text = String::from("(\n    state_dir: \"/var/lib/prodhcp\",\n    subnets: [\n");
        let mut taken = HashSet::new();
        for ((a, b), len, relays) in subnets {
            let relays: Vec<String> = relays
                .iter()
                .filter(|r| taken.insert(**r))
                .map(|r| format!("\"198.18.{}.{}\"", r % 4, r))
                .collect();
            text.push_str(&format!(
                "        (network: \"10.{a}.{b}.0/{len}\", relays: [{}]),\n",
                relays.join(", ")
            ));
        }
        text.push_str("    ],\n)\n");
        crate::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// 100,000 /26 subnets (10.0.0.0 onwards, one relay each at 198.18.x.y), then lookups of
    /// relays and addresses spread over all of them: the index against the linear scans.
    #[test]
    #[ignore = "a measurement that prints lookup times, not a test; run by hand with --ignored"]
    fn measure_lookup_with_100k_subnets() {
        let n: u32 = 100_000;
        let mut text = String::from("(\n    state_dir: \"/var/lib/prodhcp\",\n    subnets: [\n");
        for i in 0..n {
            let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i * 64);
            let relay = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
            text.push_str(&format!(
                "        (network: \"{net}/26\", relays: [\"{relay}\"]),\n"
            ));
        }
        text.push_str("    ],\n)\n");
        let t = std::time::Instant::now();
        let c = crate::parse(&text).unwrap();
        let parsed = t.elapsed();
        let t = std::time::Instant::now();
        let l = SubnetLookup::build(&c);
        let built = t.elapsed();
        let probes: Vec<Ipv4Addr> = (0..10_000u32)
            .map(|k| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (k * 7919) % n))
            .collect();
        let t = std::time::Instant::now();
        let mut hits = 0usize;
        for p in &probes {
            hits += l.for_relay(*p).is_some() as usize;
        }
        let indexed = t.elapsed();
        let t = std::time::Instant::now();
        let mut hits_linear = 0usize;
        for p in &probes {
            hits_linear += c.subnet_for_relay(*p).is_some() as usize;
        }
        let linear = t.elapsed();
        assert_eq!(hits, hits_linear);
        println!(
            "{n} subnets: parse {parsed:?}, index built in {built:?}; 10,000 relay lookups: \
             index {indexed:?} ({:.0} ns each), linear scan {linear:?} ({:.0} ns each)",
            indexed.as_nanos() as f64 / 1e4,
            linear.as_nanos() as f64 / 1e4
        );
    }

    proptest! {
        #[test]
        fn the_lookup_answers_as_the_linear_scan(
            nets in proptest::collection::btree_map((0u8..4, 0u8..255), (24u8..=28, proptest::collection::vec(0u8..16, 0..3)), 1..40),
            probes in proptest::collection::vec((0u8..5, 0u8..=255, 0u8..=255), 200),
            relay_probes in proptest::collection::vec(0u8..20, 20),
        ) {
            let subnets: Vec<_> = nets.into_iter().map(|(k, (len, r))| (k, len, r)).collect();
            let c = config(&subnets);
            let l = SubnetLookup::build(&c);
            for (a, b, d) in probes {
                let ip = Ipv4Addr::new(10, a, b, d);
                prop_assert_eq!(l.for_addr(ip), c.subnet_for_addr(ip).map(|s| s.index), "{}", ip);
                prop_assert_eq!(l.for_relay(ip), c.subnet_for_relay(ip).map(|s| s.index), "{}", ip);
            }
            // Every network's edges and their neighbours.
            for sub in &c.subnets {
                let (first, last) = (u32::from(sub.network.network()), u32::from(sub.network.broadcast()));
                for ip in [first - 1, first, last, last + 1].map(Ipv4Addr::from) {
                    prop_assert_eq!(l.for_addr(ip), c.subnet_for_addr(ip).map(|s| s.index), "{}", ip);
                }
            }
            for r in relay_probes {
                let ip = Ipv4Addr::new(198, 18, r % 4, r);
                prop_assert_eq!(l.for_relay(ip), c.subnet_for_relay(ip).map(|s| s.index), "{}", ip);
            }
        }
    }
}
