//! Balance algorithms over the servers a request may still use.

use super::Server;
use rand::Rng;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One cycle of smooth weighted round robin (the nginx algorithm), precomputed so that picking
/// is a single atomic increment: weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
pub(super) fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
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

/// The next usable server in the schedule, starting at position `start`.
pub(super) fn round_robin(
    schedule: &[usize],
    start: usize,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = schedule.len();
    (0..n)
        .filter_map(|k| schedule.get((start.wrapping_add(k)) % n).copied())
        .find(|&i| usable(i))
}

/// A usable server at random, in proportion to weight.
pub(super) fn random(servers: &[Arc<Server>], usable: impl Fn(usize) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..servers.len()).filter(|&i| usable(i)).collect();
    weighted_pick(servers, &candidates)
}

/// The usable server with the fewest in-flight requests per unit of weight; ties are broken
/// at random by weight, so an idle pool still spreads its load.
pub(super) fn least_connections(
    servers: &[Arc<Server>],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    // Each server's load is read once: other requests move the counters meanwhile, and a
    // second read could leave no server equal to the minimum of the first, so no choice at all.
    let loads: Vec<(usize, usize, usize)> = (0..servers.len())
        .filter(|&i| usable(i))
        .filter_map(|i| {
            let s = servers.get(i)?;
            Some((
                i,
                s.in_flight.load(Ordering::Relaxed),
                s.weight.max(1) as usize,
            ))
        })
        .collect();
    // a/wa < b/wb  <=>  a*wb < b*wa
    let &(_, lbest, wbest) = loads
        .iter()
        .min_by(|(_, la, wa), (_, lb, wb)| la.saturating_mul(*wb).cmp(&lb.saturating_mul(*wa)))?;
    let ties: Vec<usize> = loads
        .iter()
        .filter(|(_, l, w)| l.saturating_mul(wbest) == lbest.saturating_mul(*w))
        .map(|(i, ..)| *i)
        .collect();
    weighted_pick(servers, &ties)
}

/// The usable server with the highest weighted rendezvous score for this client address: the
/// same client keeps its server while that server is usable, and only the clients of a server
/// that leaves move.
pub(super) fn ip_hash(
    servers: &[Arc<Server>],
    client: Option<IpAddr>,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let Some(ip) = client else {
        return random(servers, usable);
    };
    let ip_bytes = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let score = |s: &Server| {
        // The server as written: the same on every instance and across reloads that change
        // only trust settings (the affinity id is empty when affinity is off).
        let h = fnv1a(&[ip_bytes.as_slice(), s.label.as_bytes()]);
        // Map to (0, 1], then weighted rendezvous: w / -ln(u).
        let u = ((h >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
        f64::from(s.weight.max(1)) / -u.ln()
    };
    (0..servers.len())
        .filter(|&i| usable(i))
        .filter_map(|i| servers.get(i).map(|s| (i, score(s))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

fn weighted_pick(servers: &[Arc<Server>], candidates: &[usize]) -> Option<usize> {
    let weight = |i: &usize| servers.get(*i).map_or(0, |s| u64::from(s.weight.max(1)));
    let total: u64 = candidates.iter().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut r = rand::thread_rng().gen_range(0..total);
    for i in candidates {
        let w = weight(i);
        if r < w {
            return Some(*i);
        }
        r -= w;
    }
    candidates.last().copied()
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Arc<Server>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                Arc::new(Server::for_test(&format!("s{i}"), addr, *w))
            })
            .collect()
    }

    #[test]
    fn schedule_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 2]), vec![1, 0, 1]);
        assert_eq!(smooth_schedule(&[4, 4]), vec![0, 1]);
        assert_eq!(smooth_schedule(&[]), Vec::<usize>::new());
    }

    #[test]
    fn round_robin_skips_unusable_servers() {
        let s = smooth_schedule(&[1, 1, 1]);
        assert_eq!(round_robin(&s, 0, |i| i != 0), Some(1));
        assert_eq!(round_robin(&s, 2, |i| i != 2), Some(0));
        assert_eq!(round_robin(&s, 0, |_| false), None);
    }

    #[test]
    fn random_follows_weights_within_tolerance() {
        let s = servers(&[1, 3]);
        let mut counts = [0usize; 2];
        for _ in 0..4000 {
            counts[random(&s, |_| true).unwrap()] += 1;
        }
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn least_connections_prefers_the_least_loaded_per_weight() {
        let s = servers(&[1, 2]);
        s[0].in_flight.store(1, Ordering::Relaxed);
        s[1].in_flight.store(1, Ordering::Relaxed);
        assert_eq!(least_connections(&s, |_| true), Some(1), "1/2 < 1/1");
        s[1].in_flight.store(3, Ordering::Relaxed);
        assert_eq!(least_connections(&s, |_| true), Some(0));
        assert_eq!(least_connections(&s, |i| i == 1), Some(1));
    }

    #[test]
    fn ip_hash_is_sticky_and_moves_only_clients_of_a_removed_server() {
        let s = servers(&[1, 1, 1]);
        let ips: Vec<IpAddr> = (1..=200)
            .map(|i| IpAddr::from([10, 0, 0, i as u8]))
            .collect();
        let before: Vec<usize> = ips
            .iter()
            .map(|ip| ip_hash(&s, Some(*ip), |_| true).unwrap())
            .collect();
        let again: Vec<usize> = ips
            .iter()
            .map(|ip| ip_hash(&s, Some(*ip), |_| true).unwrap())
            .collect();
        assert_eq!(before, again);
        for k in 0..3 {
            assert!(
                before.iter().filter(|&&x| x == k).count() > 30,
                "{before:?}"
            );
        }
        let after: Vec<usize> = ips
            .iter()
            .map(|ip| ip_hash(&s, Some(*ip), |i| i != 2).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "a client of a remaining server moved");
            }
        }
    }
}
