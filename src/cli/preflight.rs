//! `pinion preflight -c FILE`: connect to every server of every pool with the pool's TLS
//! settings and print what each presents and whether pinion would accept it.

use crate::config::Config;
use crate::pool::{connect_and_check, Pool};
use crate::upstream;
use pingora::connectors::http::Connector;
use std::io::Write;

/// One server's outcome.
#[derive(Debug)]
pub struct Row {
    /// Pool name.
    pub pool: String,
    /// Server as configured.
    pub server: String,
    /// The pin presented (also when the chain or name failed verification).
    pub pin: Option<String>,
    /// The chain presented, when the chain or name failed verification.
    pub chain: Vec<String>,
    /// Whether that pin is whitelisted ("-" for pools without pins).
    pub whitelisted: &'static str,
    /// Certificate expiry.
    pub expires: Option<String>,
    /// `None` when pinion would use the server, else why not.
    pub problem: Option<String>,
}

/// Checks every server; the rows in configuration order.
pub fn check(config: &Config) -> std::io::Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hook = upstream::handshake_hook();
    let pools: Vec<Pool> = config
        .pools
        .iter()
        .map(|p| Pool::new(p, &hook, &config.answers))
        .collect();
    let connector = Connector::new(None);
    Ok(rt.block_on(async {
        let mut rows = Vec::new();
        for (cfg, pool) in config.pools.iter().zip(&pools) {
            for server in pool.servers().iter() {
                let result = tokio::time::timeout(
                    cfg.timeouts.connect * 2,
                    connect_and_check(pool, server, &connector),
                )
                .await;
                let (seen, problem) = match result {
                    Ok(Ok((_, seen))) => (seen, None),
                    Ok(Err(reason)) => (None, Some(reason)),
                    Err(_) => (None, Some("timed out".to_owned())),
                };
                let seen = seen.or_else(|| {
                    let r = server.health.report();
                    r.pin
                        .and_then(|p| crate::tls::Pin::from_base64(&p))
                        .map(|pin| upstream::PresentedCert {
                            pin,
                            not_after: r.not_after.unwrap_or_default(),
                            not_after_unix: r.not_after_unix,
                            chain: r.chain,
                        })
                });
                let whitelisted = match (&pool.tls, &seen) {
                    (Some(tls), Some(c)) if !tls.pins.is_empty() => {
                        if tls.pins.contains(&c.pin) {
                            "yes"
                        } else {
                            "NO"
                        }
                    }
                    _ => "-",
                };
                rows.push(Row {
                    pool: pool.name.clone(),
                    server: server.label.clone(),
                    pin: seen.as_ref().map(|c| c.pin.to_string()),
                    whitelisted,
                    chain: seen.as_ref().map(|c| c.chain.clone()).unwrap_or_default(),
                    expires: seen.map(|c| c.not_after),
                    problem,
                });
            }
            // A name that did not resolve has no server to connect to: say so, never pass.
            for name in pool
                .names
                .iter()
                .filter_map(|n| n.unresolved().map(|u| (n, u)))
            {
                rows.push(Row {
                    pool: pool.name.clone(),
                    server: name.0.host.clone(),
                    pin: None,
                    chain: Vec::new(),
                    whitelisted: "-",
                    expires: None,
                    problem: Some(name.1),
                });
            }
        }
        rows
    }))
}

/// Prints the table; returns whether every server would be accepted.
pub fn print(rows: &[Row], out: &mut impl Write) -> bool {
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:<46} {:<12} {:<26} RESULT",
        "POOL", "SERVER", "PRESENTED PIN", "WHITELISTED", "CERTIFICATE EXPIRES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<46} {:<12} {:<26} {}",
            r.pool,
            r.server,
            r.pin.as_deref().unwrap_or("-"),
            r.whitelisted,
            r.expires.as_deref().unwrap_or("-"),
            r.problem.as_deref().unwrap_or("ok")
        );
        for (i, cert) in r.chain.iter().enumerate() {
            let _ = writeln!(out, "{:<16} chain[{i}]: {cert}", "");
        }
    }
    rows.iter().all(|r| r.problem.is_none())
}
