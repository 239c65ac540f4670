//! Counters for `/metrics`, in the Prometheus text format. Every series is a fixed slot
//! allocated from the configuration, so recording is an atomic add: no lock, no map lookup.

mod grpc;
mod pins;
mod servers;

use crate::config::Config;
use crate::limits;
use crate::listener::caps::CapRefusal;
use crate::listener::client_auth::Refusal as ClientRefusal;
use crate::pool::Pool;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the upstream latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a backend failed the trust checks, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The leaf's key is not on the whitelist.
    NotWhitelisted,
    /// A pinned pool's server presented no certificate pinion could read (fails closed).
    NoCertificate,
    /// The chain, name or validity did not verify.
    CertificateInvalid,
    /// The handshake failed otherwise.
    HandshakeFailed,
}

impl TlsFailure {
    const ALL: [TlsFailure; 4] = [
        TlsFailure::NotWhitelisted,
        TlsFailure::NoCertificate,
        TlsFailure::CertificateInvalid,
        TlsFailure::HandshakeFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            TlsFailure::NotWhitelisted => "not_whitelisted",
            TlsFailure::NoCertificate => "no_certificate",
            TlsFailure::CertificateInvalid => "certificate_invalid",
            TlsFailure::HandshakeFailed => "handshake_failed",
        }
    }
}

/// Upper bounds, in seconds, of the buckets of [`ServerCounters::snapshot`].
pub fn latency_bounds() -> &'static [f64] {
    &BUCKETS
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// One server's counters; they live with the server (see `pool::Server`), so servers that
/// join and leave while running bring and take their own.
#[derive(Debug, Default)]
pub struct ServerCounters {
    opened: AtomicU64,
    reused: AtomicU64,
    tls_failures: [AtomicU64; TlsFailure::ALL.len()],
    /// Pin mismatches let through by `pin_mode: report`.
    reported: AtomicU64,
    /// Requests answered through this server, and those of them that ended in a 5xx or no
    /// response: what the status page turns into requests/s and error rate.
    requests: AtomicU64,
    errors: AtomicU64,
    /// Upstream latency of this server's responses, bucketed as `BUCKETS` (not cumulative).
    latency: [AtomicU64; BUCKETS.len() + 1],
}

impl ServerCounters {
    /// Counts a backend connection, new or taken from the pool.
    pub fn connection(&self, reused: bool) {
        let counter = if reused { &self.reused } else { &self.opened };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a pin mismatch that `pin_mode: report` let through (not a refusal).
    pub fn pin_reported(&self) {
        self.reported.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that ended on this server with `status` (0: no response).
    pub fn request(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status == 0 || status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the time from choosing this server to its response headers.
    pub fn latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.latency.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests, errors, and the latency histogram (per bucket of [`latency_bounds`], the last
    /// one above the largest bound), all since the server joined.
    pub fn snapshot(&self) -> (u64, u64, Vec<u64>) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        )
    }

    /// Counts a backend refused by a trust check.
    pub fn tls_failure(&self, reason: TlsFailure) {
        let i = TlsFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(c) = self.tls_failures.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Requests by status class (1xx..5xx) of one listener and route.
type ClassCounters = [AtomicU64; 5];

/// Each listener's counters of `previous` whose listener name is unchanged, fresh ones for the
/// others.
fn carried_by_listener<T: Default>(
    listeners: &[String],
    previous: Option<&Metrics>,
    slots: impl Fn(&Metrics) -> &Vec<Arc<T>>,
) -> Vec<Arc<T>> {
    listeners
        .iter()
        .map(|l| {
            previous
                .and_then(|m| {
                    let i = m.listeners.iter().position(|n| n == l)?;
                    slots(m).get(i).cloned()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Adds one to `counters[slot]` when both exist.
fn add_at(counters: Option<&[AtomicU64]>, slot: Option<usize>) {
    if let Some(c) = slot.and_then(|i| counters?.get(i)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests of one listener refused by a limit, by reason ([`limits::REASONS`]).
type RejectedCounters = [AtomicU64; limits::REASONS.len()];

/// All of pinion's metrics for one configuration generation. The counters themselves are
/// shared with the generation before it wherever the labels are the same, so a reload neither
/// resets them nor loses what requests still running on the old generation record.
pub struct Metrics {
    listeners: Vec<String>,
    /// Route name and its pool's name ("" for redirects and unmatched requests).
    routes: Vec<(String, String)>,
    /// [listener][route or "no route"]
    requests: Vec<Arc<ClassCounters>>,
    /// [pool]
    latency: Vec<Arc<Histogram>>,
    pools: Vec<String>,
    /// [listener]
    rejected: Vec<Arc<RejectedCounters>>,
    /// [listener]: connections refused by a cap, by [`CapRefusal::ALL`]
    refused: Vec<Arc<[AtomicU64; 2]>>,
    /// [listener]: client certificates refused, by [`ClientRefusal::ALL`]
    client_auth: Vec<Arc<[AtomicU64; 5]>>,
    /// [listener]: gRPC calls by status
    grpc: grpc::GrpcCounters,
}

impl Metrics {
    /// Slots for every listener, route, pool and server of the configuration.
    pub fn new(config: &Config) -> Metrics {
        Metrics::carried(config, None)
    }

    /// Slots for `config`, reusing those of `previous` whose labels are unchanged.
    pub fn carried(config: &Config, previous: Option<&Metrics>) -> Metrics {
        let routes: Vec<(String, String)> = config
            .routes
            .routes()
            .iter()
            .map(|r| {
                let pool = match &r.target {
                    crate::routing::Target::Pool(p) => config
                        .pools
                        .get(*p)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    crate::routing::Target::Redirect(_) => String::new(),
                };
                (r.name.clone(), pool)
            })
            .collect();
        let listeners: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let mut requests = Vec::with_capacity(listeners.len() * (routes.len() + 1));
        for listener in &listeners {
            for r in 0..=routes.len() {
                let (route, pool) = routes.get(r).map_or(("", ""), |(n, p)| (n, p));
                let kept = previous.and_then(|m| m.request_counters(listener, route, pool));
                requests.push(kept.unwrap_or_default());
            }
        }
        let latency = config
            .pools
            .iter()
            .map(|p| {
                previous
                    .and_then(|m| m.latency_of(&p.name))
                    .unwrap_or_default()
            })
            .collect();
        let pools = config.pools.iter().map(|p| p.name.clone()).collect();
        let rejected = carried_by_listener(&listeners, previous, |m| &m.rejected);
        let refused = carried_by_listener(&listeners, previous, |m| &m.refused);
        let client_auth = carried_by_listener(&listeners, previous, |m| &m.client_auth);
        let grpc = grpc::carried(&listeners, previous);
        Metrics {
            listeners,
            routes,
            requests,
            latency,
            pools,
            rejected,
            refused,
            client_auth,
            grpc,
        }
    }

    /// Counts a client certificate refused by its listener's `client_auth`.
    pub fn client_auth_failure(&self, listener: usize, why: ClientRefusal) {
        let slot = ClientRefusal::ALL.iter().position(|r| *r == why);
        add_at(self.client_auth.get(listener).map(|c| &c[..]), slot);
    }

    /// Counts a client connection closed at once for a cap of its listener.
    pub fn connection_refused(&self, listener: usize, why: CapRefusal) {
        let slot = CapRefusal::ALL.iter().position(|r| *r == why);
        add_at(self.refused.get(listener).map(|c| &c[..]), slot);
    }

    /// Counts a request refused by a limit (its response is counted by [`Metrics::request`]).
    pub fn rejected(&self, listener: usize, why: limits::Rejection) {
        let slot = limits::REASONS.iter().position(|r| *r == why.reason());
        add_at(self.rejected.get(listener).map(|c| &c[..]), slot);
    }

    fn request_counters(
        &self,
        listener: &str,
        route: &str,
        pool: &str,
    ) -> Option<Arc<ClassCounters>> {
        let l = self.listeners.iter().position(|n| n == listener)?;
        let r = match route {
            "" => self.routes.len(),
            _ => self
                .routes
                .iter()
                .position(|(n, p)| n == route && p == pool)?,
        };
        self.requests.get(l * (self.routes.len() + 1) + r).cloned()
    }

    fn latency_of(&self, pool: &str) -> Option<Arc<Histogram>> {
        let p = self.pools.iter().position(|n| n == pool)?;
        self.latency.get(p).cloned()
    }

    fn request_slot(
        &self,
        listener: usize,
        route: Option<usize>,
        status: u16,
    ) -> Option<&AtomicU64> {
        let class = usize::from(status / 100)
            .checked_sub(1)
            .filter(|c| *c < 5)?;
        let route = route.unwrap_or(self.routes.len());
        self.requests
            .get(listener * (self.routes.len() + 1) + route)?
            .get(class)
    }

    /// Counts a finished request.
    pub fn request(&self, listener: usize, route: Option<usize>, status: u16) {
        if let Some(slot) = self.request_slot(listener, route, status) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the time from picking a server to its response headers.
    pub fn upstream_latency(&self, pool: usize, elapsed: Duration) {
        let Some(h) = self.latency.get(pool) else {
            return;
        };
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric, with health and certificate expiry
    /// read from the pools at call time.
    pub fn render(&self, pools: &[Pool], now_unix: i64, config: &ConfigMetrics) -> String {
        let mut out = String::with_capacity(4096);
        config.render(&mut out);
        self.render_requests(&mut out);
        self.render_rejected(&mut out);
        self.render_refused(&mut out);
        self.render_by_reason(
            &mut out,
            "pinion_client_auth_failures_total",
            "Client certificates refused by their listener's client_auth, by reason.",
            &ClientRefusal::ALL.map(ClientRefusal::label),
            self.client_auth.iter().map(|c| &c[..]),
        );
        self.render_grpc(&mut out);
        self.render_latency(&mut out, pools);
        servers::render_servers(&mut out, pools, now_unix);
        servers::render_names(&mut out, pools);
        pins::render(&mut out, pools, now_unix);
        out
    }

    fn render_refused(&self, out: &mut String) {
        let reasons = CapRefusal::ALL.map(CapRefusal::label);
        self.render_by_reason(
            out,
            "pinion_connections_refused_total",
            "Client connections closed at once by a connection cap of their listener, by reason.",
            &reasons,
            self.refused.iter().map(|c| &c[..]),
        );
    }

    fn render_rejected(&self, out: &mut String) {
        self.render_by_reason(
            out,
            "pinion_requests_rejected_total",
            "Requests refused by a limit of their listener or route, by reason.",
            &limits::REASONS,
            self.rejected.iter().map(|c| &c[..]),
        );
    }

    /// A counter labelled by listener and reason, one slot per reason.
    fn render_by_reason<'a>(
        &self,
        out: &mut String,
        name: &str,
        help: &str,
        reasons: &[&str],
        slots: impl Iterator<Item = &'a [AtomicU64]>,
    ) {
        header(out, name, "counter", help);
        for (listener, counters) in self.listeners.iter().zip(slots) {
            for (reason, c) in reasons.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{}\",reason=\"{reason}\"}} {}",
                    esc(listener),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }

    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "pinion_requests_total",
            "counter",
            "Requests answered, by listener, route, pool and status class.",
        );
        for (l, listener) in self.listeners.iter().enumerate() {
            for r in 0..=self.routes.len() {
                let (route, pool) = self
                    .routes
                    .get(r)
                    .map_or(("", ""), |(n, p)| (n.as_str(), p.as_str()));
                for class in 1..=5u16 {
                    let route_index = (r < self.routes.len()).then_some(r);
                    let value = self
                        .request_slot(l, route_index, class * 100)
                        .map_or(0, |s| s.load(Ordering::Relaxed));
                    if value > 0 {
                        let _ = writeln!(
                            out,
                            "pinion_requests_total{{listener=\"{}\",route=\"{}\",pool=\"{}\",status_class=\"{class}xx\"}} {value}",
                            esc(listener),
                            esc(route),
                            esc(pool)
                        );
                    }
                }
            }
        }
    }

    fn render_latency(&self, out: &mut String, pools: &[Pool]) {
        header(
            out,
            "pinion_upstream_latency_seconds",
            "histogram",
            "Time from choosing a server to its response headers.",
        );
        for (h, pool) in self.latency.iter().zip(pools) {
            let p = esc(&pool.name);
            for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "pinion_upstream_latency_seconds_bucket{{pool=\"{p}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pinion_upstream_latency_seconds_bucket{{pool=\"{p}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "pinion_upstream_latency_seconds_sum{{pool=\"{p}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "pinion_upstream_latency_seconds_count{{pool=\"{p}\"}} {count}"
            );
        }
    }
}

/// The configuration's own metrics: which generation serves, and how reloads went.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigMetrics {
    /// 1 at start, one more per applied reload.
    pub generation: u64,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads refused (invalid file, or a change that needs a new process).
    pub reloads_failed: u64,
    /// Access log lines dropped because the writer was behind (since the log was opened).
    pub access_log_dropped: u64,
}

impl ConfigMetrics {
    fn render(&self, out: &mut String) {
        header(
            out,
            "pinion_config_generation",
            "gauge",
            "The configuration generation serving requests: 1 at start, +1 per applied reload.",
        );
        let _ = writeln!(out, "pinion_config_generation {}", self.generation);
        header(
            out,
            "pinion_config_reloads_total",
            "counter",
            "Reloads in place, by result.",
        );
        let _ = writeln!(
            out,
            "pinion_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok
        );
        let _ = writeln!(
            out,
            "pinion_config_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed
        );
        header(
            out,
            "pinion_access_log_dropped_lines_total",
            "counter",
            "Access log lines dropped because the writer fell behind (since the log was opened).",
        );
        let _ = writeln!(
            out,
            "pinion_access_log_dropped_lines_total {}",
            self.access_log_dropped
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
