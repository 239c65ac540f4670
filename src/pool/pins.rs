//! What a pool's pins look like at run time: which pin accepted each server and at what depth,
//! which pins are staged, active or expired, the warnings that come before a refusal, and (in
//! `pin_mode: report`) the keys seen that the whitelist does not name.

use super::{Pool, Server};
use crate::config::PinMode;
use crate::gateway::Gateway;
use crate::tls::{Pin, PinWarning};
use crate::upstream::{self, unix_now};
use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Most distinct unlisted keys a pool remembers; further ones are only counted.
const UNLISTED_KEYS: usize = 64;

/// How often warnings are evaluated for the log (cheap: one lock per server).
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Keys presented to a `pin_mode: report` pool that its whitelist does not accept.
#[derive(Debug, Default)]
pub struct Unlisted {
    keys: Mutex<UnlistedKeys>,
}

#[derive(Debug, Default)]
struct UnlistedKeys {
    by_pin: BTreeMap<Pin, UnlistedKey>,
    /// Sightings of keys beyond [`UNLISTED_KEYS`].
    overflow: u64,
}

/// One unlisted key's sightings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlistedKey {
    /// The key.
    pub pin: Pin,
    /// The servers that presented it, as configured.
    pub servers: Vec<String>,
    /// First sighting, seconds since the Unix epoch.
    pub first_seen: i64,
    /// Last sighting.
    pub last_seen: i64,
    /// Connections (and probes) that presented it.
    pub count: u64,
}

impl Unlisted {
    /// Records that `server` presented `pin`, which the whitelist did not accept.
    pub fn seen(&self, pin: Pin, server: &str) {
        let now = unix_now();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let full = keys.by_pin.len() >= UNLISTED_KEYS;
        match keys.by_pin.get_mut(&pin) {
            Some(k) => {
                k.last_seen = now;
                k.count += 1;
                if !k.servers.iter().any(|s| s == server) && k.servers.len() < 16 {
                    k.servers.push(server.to_owned());
                }
            }
            None if full => keys.overflow += 1,
            None => {
                keys.by_pin.insert(
                    pin,
                    UnlistedKey {
                        pin,
                        servers: vec![server.to_owned()],
                        first_seen: now,
                        last_seen: now,
                        count: 1,
                    },
                );
            }
        }
    }

    /// How many distinct keys are listed.
    pub fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_pin
            .len()
    }

    /// Whether no key was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key seen, most recent first, and how many sightings did not fit.
    pub fn report(&self) -> (Vec<UnlistedKey>, u64) {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<UnlistedKey> = keys.by_pin.values().cloned().collect();
        out.sort_by_key(|k| std::cmp::Reverse(k.last_seen));
        (out, keys.overflow)
    }
}

/// How a server stands with its pool's whitelist, from the last certificate it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPins {
    /// The pin that accepts it now, and its scope and depth.
    pub matched: Option<crate::tls::Match>,
    /// Why none does, when none does.
    pub refused: Option<String>,
    /// Warnings about what will refuse it soon.
    pub warnings: Vec<PinWarning>,
}

/// `server`'s standing with `pool`'s pins at `now`; `None` for pools without pins or a server
/// that has presented nothing yet.
pub fn server_pins(pool: &Pool, server: &Server, now: i64) -> Option<ServerPins> {
    let tls = pool.tls.as_deref().filter(|t| !t.pins.is_empty())?;
    let seen = server.health.seen()?;
    let judged = upstream::judge(tls, &seen);
    let warn_secs = i64::from(tls.warn_days) * 86_400;
    Some(ServerPins {
        matched: judged.as_ref().ok().copied(),
        refused: judged.err().map(|e| e.to_string()),
        warnings: tls
            .pins
            .warnings(seen.presented(), seen.not_after_unix, now, warn_secs),
    })
}

/// Records a refusal by the whitelist: counted as unlisted in report mode, audited when
/// enforced.
pub fn refused(pool: &Pool, server: &str, error: &upstream::PinError) {
    let report = pool
        .tls
        .as_deref()
        .is_some_and(|t| t.pin_mode == PinMode::Report);
    match (report, error.presented_pin()) {
        (true, Some(pin)) => pool.unlisted.seen(pin, server),
        (true, None) => {}
        (false, pin) => crate::audit::refused(&pool.name, server, pin, error.reason()),
    }
}

/// The background service that logs a warning when a server's pins are about to stop
/// accepting it (and a line when that clears), once per change, checked every few seconds and after each
/// reload. `/metrics` and `/status` show the same warnings at any time.
pub struct PinWatch {
    gw: Arc<Gateway>,
}

impl PinWatch {
    /// A watch over the gateway's pools.
    pub fn new(gw: Arc<Gateway>) -> PinWatch {
        PinWatch { gw }
    }
}

#[async_trait]
impl BackgroundService for PinWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generations = self.gw.subscribe();
        let mut firing: HashSet<(String, String, &'static str)> = HashSet::new();
        loop {
            let gen = self.gw.current();
            let now = unix_now();
            let mut still = HashSet::new();
            for pool in &gen.pools {
                for server in pool.servers().iter() {
                    let Some(view) = server_pins(pool, server, now) else {
                        continue;
                    };
                    for w in view.warnings {
                        let key = (pool.name.clone(), server.label.clone(), w.reason());
                        if !firing.contains(&key) {
                            warn!("pool {} server {}: {w}", pool.name, server.label);
                        }
                        still.insert(key);
                    }
                }
            }
            for (pool, server, reason) in firing.difference(&still) {
                info!("pool {pool} server {server}: pin warning {reason} cleared");
            }
            firing = still;
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = generations.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }
}
