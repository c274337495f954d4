//! Which subnet a request belongs to (RFC 3527 link selection, RFC 3011 subnet selection, the
//! relay's giaddr, the receiving interface or a renewing client's ciaddr), and the server
//! identifier this server answers with.

use std::net::Ipv4Addr;

use super::{Engine, Incoming};
use crate::codec::Request;
use crate::counters::Counter;

impl Engine {
    /// RFC 3527 link selection, then RFC 3011 subnet selection, then giaddr; for direct
    /// clients the receiving interface (or ciaddr for unicast renewals).
    pub(super) fn select_subnet(
        &self,
        req: &Request<'_>,
        inc: &Incoming,
    ) -> Result<usize, Counter> {
        let cfg = &self.cfg;
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            if let Some(a) = req.link_selection {
                return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
            }
            if let Some(a) = req.subnet_selection {
                return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
            }
            return cfg
                .subnet_for_relay(req.giaddr)
                .ok_or(Counter::DropNoSubnet);
        }
        if let Some(a) = req.subnet_selection {
            return cfg.subnet_for_addr(a).ok_or(Counter::DropNoSubnet);
        }
        if !inc.broadcast && req.ciaddr != Ipv4Addr::UNSPECIFIED {
            return cfg.subnet_for_addr(req.ciaddr).ok_or(Counter::DropNoSubnet);
        }
        if !cfg.served_ifindexes.contains(&inc.ifindex) {
            return Err(Counter::DropNotServedInterface);
        }
        cfg.subnet_for_addr(inc.local).ok_or(Counter::DropNoSubnet)
    }

    /// The server identifier (option 54) of replies, and the one a request naming this
    /// server carries: the configured `server_id`, else the cluster's service address
    /// ([`prodhcp_config::Config::effective_server_id`]), else the address the request
    /// arrived on.
    pub(super) fn server_id(&self, inc: &Incoming) -> Ipv4Addr {
        self.cfg.config.effective_server_id().unwrap_or(inc.local)
    }
}
