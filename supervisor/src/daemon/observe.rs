//! The Prometheus endpoint and the pool alarms on the supervisor's loop (issue 11).
//!
//! The endpoint is served without blocking the loop ([`crate::metrics_http`]); a scrape
//! encodes figures the supervisor already holds: the workers' counters (shared words), the
//! control socket's `status`, `consumers`, `ha_status` and `audit_status` answers, the alarm
//! state, and the per-state pool counts of the last [`crate::census`] pass (counted off the
//! scrape, in slices). The exposition text is prometheus-client's (OpenMetrics text format).

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use prodhcp_config::alarms::LEVEL_NAMES;
use prodhcp_proto::{self as proto, CounterGroup, CounterWords};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shm_layout::worker_owner;
use tracing::{debug, error, info, warn};

use super::{audit, Supervisor, METRICS_CONN_BASE, METRICS_LISTENER};
use crate::metrics_http::{self, Ask, HttpConn, Step};

type Labels = Vec<(String, String)>;
type GaugeFam = Family<Labels, Gauge>;
type FloatFam = Family<Labels, Gauge<f64, AtomicU64>>;
type CounterFam = Family<Labels, Counter>;

/// The endpoint's listener, its connections and their counters.
#[derive(Debug, Default)]
pub(super) struct MetricsEndpoint {
    listener: Option<(std::net::SocketAddr, mio::net::TcpListener)>,
    conns: Vec<Option<HttpConn>>,
    pub(super) counters: metrics_http::HttpCounters,
    /// Time the last scrape took to encode, for the endpoint's own metric.
    last_encode: Option<Duration>,
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A family registered under `name`.
fn fam<M: Default + Clone + prometheus_client::metrics::TypedMetric + 'static>(
    reg: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, M>
where
    Family<Labels, M>: prometheus_client::encoding::EncodeMetric + std::fmt::Debug + Send + Sync,
{
    let f = Family::<Labels, M>::default();
    reg.register(name, help, f.clone());
    f
}

fn set(f: &GaugeFam, labels: &[(&str, &str)], v: u64) {
    f.get_or_create(&l(labels))
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

fn count(f: &CounterFam, labels: &[(&str, &str)], v: u64) {
    f.get_or_create(&l(labels)).inc_by(v);
}

impl Supervisor {
    /// Binds, rebinds or closes the endpoint for `metrics_listen` (at start and on reload).
    /// A bind failure is logged; the daemon serves DHCP without the endpoint.
    pub(super) fn configure_metrics(&mut self) {
        let want = self.config.metrics_listen;
        if self.metrics.listener.as_ref().map(|(a, _)| *a) == want {
            return;
        }
        if let Some((addr, mut old)) = self.metrics.listener.take() {
            let _ = self.poll.registry().deregister(&mut old);
            for k in 0..self.metrics.conns.len() {
                self.close_metrics_conn(k);
            }
            info!(%addr, "metrics endpoint closed");
        }
        let Some(addr) = want else { return };
        match metrics_http::bind(addr) {
            Ok(mut listener) => {
                if let Err(e) = self.poll.registry().register(
                    &mut listener,
                    METRICS_LISTENER,
                    Interest::READABLE,
                ) {
                    error!(%addr, error = %e, "metrics endpoint: cannot watch the listener");
                    return;
                }
                let bound = listener.local_addr().unwrap_or(addr);
                info!(listen = %bound, "metrics endpoint listening (GET /metrics)");
                self.metrics.listener = Some((addr, listener));
            }
            Err(e) => error!(
                %addr,
                error = %e,
                "metrics endpoint: cannot listen; serving without it (fix metrics_listen and reload)"
            ),
        }
    }

    pub(super) fn metrics_accept(&mut self) {
        loop {
            let Some((_, listener)) = self.metrics.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let free = (0..metrics_http::MAX_CONNECTIONS)
                        .find(|&k| self.metrics.conns.get(k).is_none_or(Option::is_none));
                    // Full: the oldest connection still silent makes room (idle connections
                    // must not lock real scrapes out); refused only when all are answering.
                    let oldest_silent = || {
                        self.metrics
                            .conns
                            .iter()
                            .enumerate()
                            .filter_map(|(k, c)| c.as_ref().map(|c| (k, c)))
                            .filter(|(_, c)| !c.writing())
                            .min_by_key(|(_, c)| c.deadline)
                            .map(|(k, _)| k)
                    };
                    let k = match free {
                        Some(k) => k,
                        None => match oldest_silent() {
                            Some(k) => {
                                self.metrics.counters.evicted += 1;
                                self.close_metrics_conn(k);
                                k
                            }
                            None => {
                                self.metrics.counters.refused += 1;
                                drop(stream);
                                continue;
                            }
                        },
                    };
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(METRICS_CONN_BASE + k),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    if self.metrics.conns.len() <= k {
                        self.metrics.conns.resize_with(k + 1, || None);
                    }
                    self.metrics.conns[k] = Some(HttpConn::new(stream, Instant::now()));
                    self.metrics_conn(k);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "metrics endpoint: accept failed");
                    return;
                }
            }
        }
    }

    fn close_metrics_conn(&mut self, k: usize) {
        if let Some(Some(mut c)) = self.metrics.conns.get_mut(k).map(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    pub(super) fn metrics_conn(&mut self, k: usize) {
        let Some(Some(conn)) = self.metrics.conns.get_mut(k) else {
            return;
        };
        let step = match conn.advance() {
            Step::Answer(ask) => {
                let bytes = match ask {
                    Ask::Metrics => {
                        let body = self.render_metrics();
                        self.metrics.counters.ok += 1;
                        metrics_http::response(
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            body.as_bytes(),
                        )
                    }
                    Ask::NotFound => {
                        self.metrics.counters.not_found += 1;
                        metrics_http::response(
                            "404 Not Found",
                            "text/plain",
                            b"not found; try /metrics\n",
                        )
                    }
                    Ask::BadMethod => {
                        self.metrics.counters.bad_method += 1;
                        metrics_http::response(
                            "405 Method Not Allowed",
                            "text/plain",
                            b"GET only\n",
                        )
                    }
                    Ask::Bad => {
                        self.metrics.counters.bad_request += 1;
                        metrics_http::response("400 Bad Request", "text/plain", b"bad request\n")
                    }
                };
                match self.metrics.conns.get_mut(k) {
                    Some(Some(conn)) => conn.respond(bytes),
                    _ => return,
                }
            }
            other => other,
        };
        match step {
            Step::Wait | Step::Answer(_) => {}
            Step::Close => self.close_metrics_conn(k),
            Step::Aborted => {
                if self
                    .metrics
                    .conns
                    .get(k)
                    .is_some_and(|c| c.as_ref().is_some_and(HttpConn::writing))
                {
                    self.metrics.counters.aborted += 1;
                }
                self.close_metrics_conn(k);
            }
        }
    }

    /// Closes scrape connections past their deadline; evaluates the alarms when due; reads a
    /// slice of the census.
    pub(super) fn observe_housekeeping(&mut self) {
        let now = Instant::now();
        for k in 0..self.metrics.conns.len() {
            if self.metrics.conns[k]
                .as_ref()
                .is_some_and(|c| now >= c.deadline)
            {
                self.metrics.counters.timeout += 1;
                self.close_metrics_conn(k);
            }
        }
        let table = &self.table;
        let changes = self.alarms.tick(&self.config, now, |first, last| {
            table
                .slot_spans(first, last)
                .into_iter()
                .map(|r| table.count_free(r))
                .sum()
        });
        for t in changes {
            let p = &t.pool;
            let estimate = p
                .estimate
                .map_or_else(|| "-".to_string(), |s| format!("{s}s"));
            let level = LEVEL_NAMES[usize::from(p.level)];
            if t.change() == "raised" {
                warn!(
                    subnet = %p.subnet,
                    pool = %p.range(),
                    level,
                    utilisation = format!("{:.1}%", p.utilisation),
                    free = p.free,
                    estimate,
                    "pool alarm raised"
                );
            } else {
                info!(
                    subnet = %p.subnet,
                    pool = %p.range(),
                    level,
                    utilisation = format!("{:.1}%", p.utilisation),
                    free = p.free,
                    estimate,
                    "pool alarm cleared"
                );
            }
            let mut ev = audit::event("pool-alarm");
            ev.cause = Some(t.change().into());
            ev.finding = Some(t.detail());
            self.audit_event(ev);
        }
        if self.config.metrics_listen.is_some() {
            let every = self.census_every();
            let before = self.census.last_duration;
            self.census.step(&self.table, &self.config, every, now);
            if self.census.last_duration != before {
                debug!(
                    ms = self.census.last_duration.map(|d| d.as_millis() as u64),
                    "pool census pass done"
                );
            }
        }
    }

    fn census_every(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.pool_alarms.interval))
    }

    /// The loop's next turn for the alarms and the census.
    pub(super) fn observe_wake_in(&self) -> Duration {
        let now = Instant::now();
        let mut t = self.alarms.due_in(&self.config, now);
        if self.config.metrics_listen.is_some() {
            t = t.min(self.census.wake_in(self.census_every(), now));
        }
        let deadline = self
            .metrics
            .conns
            .iter()
            .flatten()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min();
        deadline.map_or(t, |d| t.min(d))
    }

    /// The `alarms` answer.
    pub(super) fn alarms_data(&self) -> proto::AlarmsData {
        self.alarms.data(&self.config)
    }

    /// The exposition text of one scrape.
    pub(super) fn render_metrics(&mut self) -> String {
        let t0 = Instant::now();
        let mut reg = Registry::default();
        self.register_pools(&mut reg);
        self.register_workers(&mut reg);
        self.register_daemon(&mut reg);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &reg) {
            warn!(error = %e, "metrics encoding failed");
        }
        self.metrics.last_encode = Some(t0.elapsed());
        out
    }

    fn register_pools(&self, reg: &mut Registry) {
        let size: GaugeFam = fam(reg, "prodhcp_pool_size", "Addresses in the pool");
        let free: GaugeFam = fam(
            reg,
            "prodhcp_pool_free",
            "Addresses the allocator may still hand out (at the last alarm evaluation)",
        );
        let states: GaugeFam = fam(reg, "prodhcp_pool_addresses", "Addresses of the pool by lease state (offered, leased, declined, reserved; last census pass)");
        let util: FloatFam = fam(
            reg,
            "prodhcp_pool_utilisation_ratio",
            "Share of the pool not free (0 to 1)",
        );
        let level: GaugeFam = fam(
            reg,
            "prodhcp_pool_alarm_level",
            "Pool alarm level: 0 none, 1 warning, 2 major, 3 critical",
        );
        let est: GaugeFam = fam(reg, "prodhcp_pool_exhaustion_seconds", "Estimated seconds until the pool runs out at the recent rate (only while free addresses decrease)");
        for p in self.alarms.pools() {
            let range = p.range();
            let labels = [("subnet", p.subnet.as_str()), ("pool", range.as_str())];
            set(&size, &labels, p.size);
            set(&free, &labels, p.free);
            util.get_or_create(&l(&labels)).set(p.utilisation / 100.0);
            set(&level, &labels, u64::from(p.level));
            if let Some(e) = p.estimate {
                set(&est, &labels, e);
            }
            if let Some(c) = self.census.get(p.first, p.last) {
                for (state, v) in [
                    ("offered", c.offered),
                    ("leased", c.leased),
                    ("declined", c.declined),
                    ("reserved", c.reserved),
                ] {
                    set(&states, &[labels[0], labels[1], ("state", state)], v);
                }
            }
        }
    }

    fn register_workers(&self, reg: &mut Registry) {
        let groups: [(CounterGroup, CounterFam, &str); 4] = [
            (
                CounterGroup::Packets,
                fam(
                    reg,
                    "prodhcp_packets",
                    "Packets by message type (received, discover, ..., offer, ack, nak, dropped)",
                ),
                "type",
            ),
            (
                CounterGroup::Drops,
                fam(reg, "prodhcp_drops", "Dropped requests by reason"),
                "reason",
            ),
            (
                CounterGroup::Sweeper,
                fam(
                    reg,
                    "prodhcp_sweeper",
                    "Lease-table maintenance by the worker's sweeper",
                ),
                "action",
            ),
            (
                CounterGroup::Events,
                fam(reg, "prodhcp_events", "Other worker events"),
                "event",
            ),
        ];
        let restarts: CounterFam = fam(
            reg,
            "prodhcp_restarts",
            "Times the supervisor restarted the worker",
        );
        let up: GaugeFam = fam(reg, "prodhcp_running", "1 while the worker runs");
        for w in &self.workers {
            let id = w.id.to_string();
            let view = CounterWords::new(self.table.counters(worker_owner(w.id)));
            for &c in proto::Counter::ALL {
                if let Some((_, f, label)) = groups.iter().find(|(g, _, _)| *g == c.group()) {
                    count(f, &[("worker", &id), (label, c.key())], view.get(c));
                }
            }
            count(&restarts, &[("worker", &id)], w.life.restarts);
            set(
                &up,
                &[("worker", &id)],
                u64::from(w.life.state.name() == "running"),
            );
        }
    }

    fn register_daemon(&self, reg: &mut Registry) {
        let g = |reg: &mut Registry, name: &str, help: &str, v: u64| {
            let f: GaugeFam = fam(reg, name, help);
            set(&f, &[], v);
        };
        let secs = |reg: &mut Registry, name: &str, help: &str, v: f64| {
            let f: FloatFam = fam(reg, name, help);
            f.get_or_create(&Vec::new()).set(v);
        };
        let st = self.status();
        g(
            reg,
            "prodhcp_config_generation",
            "Configuration generation in force",
            st.config_generation,
        );
        g(
            reg,
            "prodhcp_uptime_seconds",
            "Seconds since the supervisor started",
            st.uptime_secs,
        );
        g(
            reg,
            "prodhcp_table_slots",
            "Lease-table slots in use by the layout",
            st.table.slots,
        );
        g(
            reg,
            "prodhcp_table_slot_capacity",
            "Lease-table slots the file has room for",
            st.table.slot_capacity,
        );
        g(
            reg,
            "prodhcp_client_index_occupied",
            "Client index entries in use",
            st.table.index.occupied,
        );
        g(
            reg,
            "prodhcp_client_index_capacity",
            "Client index entries",
            st.table.index.capacity,
        );
        g(
            reg,
            "prodhcp_scrub_passes",
            "Scrub passes finished since start",
            st.scrub.passes,
        );
        g(
            reg,
            "prodhcp_scrub_running",
            "1 while a scrub pass runs",
            u64::from(st.scrub.state == "running"),
        );
        if let Some(last) = &st.scrub.last_pass {
            g(
                reg,
                "prodhcp_scrub_last_finished_timestamp_seconds",
                "Unix time the last scrub pass finished",
                last.finished,
            );
            secs(
                reg,
                "prodhcp_scrub_last_duration_seconds",
                "Wall time of the last scrub pass",
                last.duration_ms as f64 / 1000.0,
            );
            let f: GaugeFam = fam(
                reg,
                "prodhcp_scrub_last_pass",
                "Counts of the last scrub pass by kind (slots_checked, damaged, repaired, ...)",
            );
            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&last.counts) {
                for (k, v) in m {
                    set(&f, &[("kind", &k)], v.as_u64().unwrap_or(0));
                }
            }
        }
        let lag: GaugeFam = fam(
            reg,
            "prodhcp_ring_consumer_lag_records",
            "Records published after the consumer's cursor (prodhcpctl consumers)",
        );
        let evictions: CounterFam = fam(
            reg,
            "prodhcp_ring_evictions",
            "Consumers the ring's producer evicted for lagging a whole ring",
        );
        for r in crate::consumers::list(&self.named_rings()).rings {
            count(&evictions, &[("ring", &r.ring)], r.evictions);
            for c in &r.consumers {
                let id = c.id.to_string();
                set(
                    &lag,
                    &[("ring", &r.ring), ("consumer", &id), ("state", &c.state)],
                    c.lag,
                );
            }
        }
        let ha = self.ha_status();
        let role: GaugeFam = fam(
            reg,
            "prodhcp_replication_role",
            "1 for this node's replication role (standalone without a cluster)",
        );
        let role_name = if ha.standalone {
            "standalone"
        } else {
            ha.role.as_str()
        };
        set(&role, &[("role", role_name)], 1);
        let rl: GaugeFam = fam(
            reg,
            "prodhcp_replication_lag_records",
            "Records the peer has not acknowledged",
        );
        let rms: FloatFam = fam(
            reg,
            "prodhcp_replication_lag_seconds",
            "Age of the oldest record the peer has not acknowledged",
        );
        let link: GaugeFam = fam(
            reg,
            "prodhcp_replication_peer_up",
            "1 while the link to the peer is up",
        );
        for p in &ha.peers {
            let lbl = [
                ("peer", p.node.as_str()),
                ("state", p.replication.state.as_str()),
            ];
            set(&rl, &lbl, p.replication.lag_records);
            rms.get_or_create(&l(&lbl))
                .set(p.replication.lag_ms as f64 / 1000.0);
            set(
                &link,
                &[("peer", p.node.as_str())],
                u64::from(p.link == proto::LinkState::Up),
            );
        }
        let a = self.audit_status();
        g(
            reg,
            "prodhcp_audit_configured",
            "1 when the configuration has an audit section",
            u64::from(a.configured),
        );
        g(
            reg,
            "prodhcp_audit_running",
            "1 while the audit process runs",
            u64::from(a.running),
        );
        if let Some(r) = &a.report {
            g(
                reg,
                "prodhcp_audit_ring_lag_records",
                "Ring records the audit process has not read yet",
                r.ring_lag_records,
            );
            g(
                reg,
                "prodhcp_audit_spool_bytes",
                "Bytes in the audit spool",
                r.spool_bytes,
            );
            let lost: CounterFam = fam(reg, "prodhcp_audit_lost_records", "Audit records lost");
            count(&lost, &[], r.lost_records);
            let tl: GaugeFam = fam(
                reg,
                "prodhcp_audit_target_lag_records",
                "Records a target has not acknowledged",
            );
            for t in &r.targets {
                set(&tl, &[("target", &t.target)], t.lag_records);
            }
        }
        let http: CounterFam = fam(
            reg,
            "prodhcp_metrics_http_requests",
            "Requests to the metrics endpoint by result",
        );
        for (result, v) in self.metrics.counters.pairs() {
            count(&http, &[("result", result)], v);
        }
        if let Some(d) = self.census.last_duration {
            secs(
                reg,
                "prodhcp_pool_census_duration_seconds",
                "Time the last pass counting every pool's states took",
                d.as_secs_f64(),
            );
        }
        if let Some(d) = self.metrics.last_encode {
            secs(
                reg,
                "prodhcp_metrics_encode_seconds",
                "Time the previous scrape took to encode",
                d.as_secs_f64(),
            );
        }
    }
}
