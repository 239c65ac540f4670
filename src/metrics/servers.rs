//! The series of each server and each server name, read from the pools' current server sets
//! (they change while running when names resolve anew).

use super::{esc, header, ServerCounters, TlsFailure};
use crate::pool::Pool;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Every server's series, for the servers each pool has now.
pub(super) fn render_servers(out: &mut String, pools: &[Pool], now_unix: i64) {
    let sets: Vec<_> = pools.iter().map(|p| (p, p.servers())).collect();
    let each =
        |out: &mut String, f: &dyn Fn(&mut String, &str, &crate::pool::Server, &ServerCounters)| {
            for (pool, set) in &sets {
                for server in set.iter() {
                    let labels = format!(
                        "pool=\"{}\",server=\"{}\"",
                        esc(&pool.name),
                        esc(&server.label)
                    );
                    f(out, &labels, server, &server.counters);
                }
            }
        };
    header(
        out,
        "pinion_backend_connections_total",
        "counter",
        "Backend connections used by requests: newly opened or reused from the pool.",
    );
    each(out, &|out, labels, _, c| {
        let _ = writeln!(
            out,
            "pinion_backend_connections_total{{{labels},kind=\"opened\"}} {}",
            c.opened.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "pinion_backend_connections_total{{{labels},kind=\"reused\"}} {}",
            c.reused.load(Ordering::Relaxed)
        );
    });
    header(
        out,
        "pinion_tls_check_failures_total",
        "counter",
        "Backends refused by the trust checks, by reason.",
    );
    each(out, &|out, labels, _, c| {
        for (reason, n) in TlsFailure::ALL.iter().zip(&c.tls_failures) {
            let _ = writeln!(
                out,
                "pinion_tls_check_failures_total{{{labels},reason=\"{}\"}} {}",
                reason.label(),
                n.load(Ordering::Relaxed)
            );
        }
    });
    header(
        out,
        "pinion_pin_mismatches_reported_total",
        "counter",
        "Pin mismatches allowed by pin_mode: report (requests that enforce mode would refuse).",
    );
    each(out, &|out, labels, _, c| {
        let _ = writeln!(
            out,
            "pinion_pin_mismatches_reported_total{{{labels}}} {}",
            c.reported.load(Ordering::Relaxed)
        );
    });
    header(
        out,
        "pinion_server_healthy",
        "gauge",
        "1 while a server is in rotation, else 0.",
    );
    each(out, &|out, labels, s, _| {
        let _ = writeln!(
            out,
            "pinion_server_healthy{{{labels}}} {}",
            u8::from(s.health.is_healthy())
        );
    });
    header(
        out,
        "pinion_backend_certificate_expiry_days",
        "gauge",
        "Days until the certificate a server last presented expires.",
    );
    each(out, &|out, labels, s, _| {
        if let Some(expiry) = s.health.report().not_after_unix {
            let days = (expiry - now_unix) as f64 / 86_400.0;
            let _ = writeln!(
                out,
                "pinion_backend_certificate_expiry_days{{{labels}}} {days:.3}"
            );
        }
    });
}

/// Every server name's lookups and what it resolves to now.
pub(super) fn render_names(out: &mut String, pools: &[Pool]) {
    let names: Vec<(String, &crate::pool::NameState)> = pools
        .iter()
        .flat_map(|p| {
            p.names.iter().map(move |n| {
                let labels = format!("pool=\"{}\",name=\"{}\"", esc(&p.name), esc(&n.host));
                (labels, &**n)
            })
        })
        .collect();
    header(
        out,
        "pinion_dns_lookups_total",
        "counter",
        "Lookups of server names while running, by result (failed: an error or no address; the last good addresses stay in use).",
    );
    for (labels, n) in &names {
        for (result, c) in [("ok", &n.ok), ("failed", &n.failed)] {
            let _ = writeln!(
                out,
                "pinion_dns_lookups_total{{{labels},result=\"{result}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
    let reports: Vec<_> = names
        .iter()
        .map(|(labels, n)| (labels, n.report()))
        .collect();
    header(
        out,
        "pinion_dns_resolving",
        "gauge",
        "1 while a server name's last lookup gave addresses, else 0.",
    );
    for (labels, r) in &reports {
        let resolving = r.error.is_none() && !r.addrs.is_empty();
        let _ = writeln!(
            out,
            "pinion_dns_resolving{{{labels}}} {}",
            u8::from(resolving)
        );
    }
    header(
        out,
        "pinion_dns_addresses",
        "gauge",
        "Addresses of a server name in use (each a server of the pool).",
    );
    for (labels, r) in &reports {
        let _ = writeln!(out, "pinion_dns_addresses{{{labels}}} {}", r.addrs.len());
    }
}
