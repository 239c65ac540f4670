//! `rate_limit`: a token bucket per client address, for a listener or a route.
//!
//! Each client address has a bucket of `burst` tokens refilled at `requests_per_second`; a
//! request takes one token or is refused with 429 and the seconds until one is back. The
//! buckets are kept for at most `max_clients` addresses, so a client that sprays addresses
//! (through a trusted proxy's X-Forwarded-For, or IPv6) cannot grow the table: the least
//! recently seen addresses are forgotten first (two generations of maps: an address seen in
//! the older one moves to the newer; when the newer is half full the older is dropped). A
//! forgotten address starts again with a full bucket, as it would after a quiet spell.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Default for `rate_limit.max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
/// Independent tables, so that concurrent requests from different addresses rarely wait on
/// one lock.
const SHARDS: usize = 16;

/// A rate limit and the buckets of the clients it has seen.
pub struct RateLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Tokens a bucket holds at most: requests allowed at once after a quiet spell.
    burst: f64,
    /// Addresses each shard keeps at most.
    per_shard: usize,
    shards: [Mutex<Shard>; SHARDS],
    /// Addresses tracked now, over all shards (for `/metrics`).
    tracked: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    newer: HashMap<IpAddr, Bucket>,
    older: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("requests_per_second", &self.rate)
            .field("burst", &self.burst)
            .field("max_clients", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `requests_per_second` (> 0) with bursts of `burst` (≥ 1), for at most `max_clients`
    /// addresses at a time.
    pub fn new(requests_per_second: f64, burst: u64, max_clients: usize) -> RateLimiter {
        RateLimiter {
            rate: requests_per_second,
            burst: burst as f64,
            per_shard: max_clients.div_ceil(SHARDS).max(2),
            shards: Default::default(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Takes a token for `client`: `Ok` to go on, or `Err` with the whole seconds until the
    /// client has a token again (for `Retry-After`, at least 1).
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let shard = &self.shards[shard_of(client)];
        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.newer.len() + s.older.len();
        let bucket = match s.newer.get_mut(&client) {
            Some(b) => b,
            None => {
                let found = s.older.remove(&client);
                if s.newer.len() >= self.per_shard / 2 {
                    s.older = std::mem::take(&mut s.newer);
                }
                let fresh = Bucket {
                    tokens: self.burst,
                    at: now,
                };
                s.newer.entry(client).or_insert(found.unwrap_or(fresh))
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        let result = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            // At least one second: Retry-After has whole seconds, and 0 would invite a retry
            // that is refused again.
            Err((wait.ceil() as u64).max(1))
        };
        let after = s.newer.len() + s.older.len();
        drop(s);
        if after >= before {
            self.tracked.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.tracked.fetch_sub(before - after, Ordering::Relaxed);
        }
        result
    }

    /// Client addresses whose buckets are kept now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }
}

fn shard_of(ip: IpAddr) -> usize {
    // The address's last bytes: spread enough, and costs nothing to compute.
    let last = match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let b = v6.octets();
            u32::from_be_bytes([b[12], b[13], b[14], b[15]])
                ^ u32::from_be_bytes([b[4], b[5], b[6], b[7]])
        }
    };
    (last as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_burst_passes_then_requests_wait_for_the_rate() {
        let limiter = RateLimiter::new(2.0, 3, 1000);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(ip(1), t), Ok(()));
        }
        assert_eq!(limiter.take(ip(1), t), Err(1));
        // Another client has its own bucket.
        assert_eq!(limiter.take(ip(2), t), Ok(()));
        // Half a second at 2 per second is one token.
        assert_eq!(limiter.take(ip(1), t + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.take(ip(1), t + Duration::from_millis(500)), Err(1));
    }

    #[test]
    fn retry_after_is_the_whole_seconds_until_a_token() {
        let limiter = RateLimiter::new(0.1, 1, 1000);
        let t = Instant::now();
        assert_eq!(limiter.take(ip(1), t), Ok(()));
        assert_eq!(limiter.take(ip(1), t), Err(10));
        assert_eq!(limiter.take(ip(1), t + Duration::from_secs(4)), Err(6));
    }

    #[test]
    fn a_spray_of_addresses_keeps_at_most_max_clients() {
        let limiter = RateLimiter::new(1.0, 1, 1000);
        let t = Instant::now();
        for n in 0..100_000 {
            assert_eq!(limiter.take(ip(n), t), Ok(()));
        }
        assert!(limiter.tracked() <= 1000, "{}", limiter.tracked());
        assert!(limiter.tracked() >= 500, "{}", limiter.tracked());
        let kept: usize = limiter
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.newer.len() + s.older.len()
            })
            .sum();
        assert_eq!(kept, limiter.tracked());
    }

    #[test]
    fn an_address_seen_recently_is_kept_through_a_spray() {
        let limiter = RateLimiter::new(0.001, 1, 1600);
        let t = Instant::now();
        assert_eq!(limiter.take(ip(7), t), Ok(()));
        for n in 0..10_000u32 {
            // Every 100 addresses the client comes back: still refused, its bucket kept.
            if n % 100 == 0 {
                assert!(limiter.take(ip(7), t).is_err(), "forgotten after {n}");
            }
            let _ = limiter.take(ip(1_000_000 + n), t);
        }
    }
}
