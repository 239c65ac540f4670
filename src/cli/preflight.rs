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
    /// Whether a pin accepts it, and which (`yes (leaf)`, `yes (chain, depth 1)`, `NO`; "-"
    /// for pools without pins).
    pub whitelisted: String,
    /// Every certificate presented, with its key and depth (only with `--propose`).
    pub keys: Vec<crate::tls::chain::ChainKey>,
    /// Certificate expiry.
    pub expires: Option<String>,
    /// `None` when pinion would use the server, else why not.
    pub problem: Option<String>,
}

/// Checks every server; the rows in configuration order. With `diagnose`, each server is also
/// asked for its whole chain by a handshake that verifies nothing and sends nothing.
pub fn check(config: &Config, diagnose: bool) -> std::io::Result<Vec<Row>> {
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
                let seen = seen.or_else(|| server.health.seen());
                let keys = match diagnose && pool.tls.is_some() {
                    true => crate::pool::diagnose(server, &connector)
                        .await
                        .map(|c| c.keys)
                        .unwrap_or_default(),
                    false => Vec::new(),
                };
                let whitelisted = match (&pool.tls, &seen) {
                    (Some(tls), Some(c)) if !tls.pins.is_empty() => match upstream::judge(tls, c) {
                        Ok(m) if m.depth == 0 => format!("yes ({})", m.scope.as_str()),
                        Ok(m) => format!("yes ({}, depth {})", m.scope.as_str(), m.depth),
                        Err(upstream::PinError::Inactive(_, state)) => format!("NO ({state})"),
                        Err(_) => "NO".to_owned(),
                    },
                    _ => "-".to_owned(),
                };
                rows.push(Row {
                    pool: pool.name.clone(),
                    server: server.label.clone(),
                    pin: seen.as_ref().map(|c| c.pin.to_string()),
                    whitelisted,
                    keys,
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
                    whitelisted: "-".to_owned(),
                    keys: Vec::new(),
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
        "{:<16} {:<24} {:<46} {:<22} {:<26} RESULT",
        "POOL", "SERVER", "PRESENTED PIN", "WHITELISTED", "CERTIFICATE EXPIRES"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<46} {:<22} {:<26} {}",
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
