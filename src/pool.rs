//! Backend pools at run time: servers with their prepared peers, and server selection.

use crate::config::{PoolConfig, UpstreamTls};
use crate::upstream;
use pingora::protocols::tls::HandshakeCompleteHook;
use pingora::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One server of a pool, ready to connect to.
#[derive(Debug)]
pub struct Server {
    /// The address as written in the configuration, for logs.
    pub label: String,
    /// The peer template cloned for each request.
    pub peer: HttpPeer,
}

/// A pool: its servers, its trust settings and its round-robin schedule.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Its servers, in configuration order.
    pub servers: Vec<Server>,
    /// End-to-end TLS settings; `None` for plain HTTP.
    pub tls: Option<Arc<UpstreamTls>>,
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Pool {
    /// Prepares a pool from its validated configuration.
    pub fn new(cfg: &PoolConfig, hook: &HandshakeCompleteHook) -> Pool {
        let group = cfg
            .tls
            .as_deref()
            .map_or(0, |t| upstream::group_key(&cfg.name, t));
        let servers = cfg
            .servers
            .iter()
            .map(|s| Server {
                label: s.label.clone(),
                peer: upstream::peer(s, cfg.tls.as_deref(), &cfg.timeouts, group, hook),
            })
            .collect();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        Pool {
            name: cfg.name.clone(),
            servers,
            tls: cfg.tls.clone(),
            schedule: smooth_schedule(&weights),
            next: AtomicUsize::new(0),
        }
    }

    /// The next server by weighted round robin; `None` for a pool without servers.
    pub fn pick(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.schedule.get(n % self.schedule.len()).copied()
    }
}

/// One cycle of smooth weighted round robin (the nginx algorithm), precomputed so that picking
/// is a single atomic increment: weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some(best) = (0..current.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 2]), vec![1, 0, 1]);
        assert_eq!(smooth_schedule(&[4, 4]), vec![0, 1]);
        assert_eq!(smooth_schedule(&[]), Vec::<usize>::new());
    }

    #[test]
    fn schedule_counts_match_weights() {
        let s = smooth_schedule(&[3, 7, 10]);
        let count = |i| s.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2)), (3, 7, 10));
    }
}
