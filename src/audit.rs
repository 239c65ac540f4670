//! The audit log (`audit_log: FILE`): one JSON line for every change of trust (the start, and
//! each reload with what it added or removed per pool and the configuration's SHA-256) and for
//! every refused backend key, each line chained to the one before by its SHA-256.
//!
//! Lines are rare (trust changes, and refusals rate-limited per pool, server and key), so each
//! append opens the file, locks it and reads its last line: a hand-over's old and new process
//! share one chain, and a rotated (new, empty) file starts a new one. Appends from the request
//! path run on Tokio's blocking pool.

mod chain;
pub mod trust;

pub use chain::{verify, ChainError};

use crate::tls::Pin;
use arc_swap::ArcSwapOption;
use log::warn;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One refusal line per pool, server and key at most this often; the ones between are counted.
const REFUSAL_INTERVAL: Duration = Duration::from_secs(60);

/// Most (pool, server, key) entries the rate limiter remembers.
const REFUSAL_KEYS: usize = 4096;

/// The audit log the running configuration names, if any; probes and the request path append
/// refusals to it without holding a generation.
static CURRENT: ArcSwapOption<AuditLog> = ArcSwapOption::const_empty();

/// An audit log file and the rate limiter of its refusal lines.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    refusals: Mutex<HashMap<RefusalKey, Refusals>>,
}

/// Pool, server and presented key of a refusal.
type RefusalKey = (String, String, Option<Pin>);

#[derive(Debug)]
struct Refusals {
    last: Instant,
    suppressed: u64,
}

impl AuditLog {
    fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            refusals: Mutex::new(HashMap::new()),
        }
    }

    fn write(&self, event: &str, fields: Map<String, Value>) {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let result = chain::append(&self.path, |prev, seq| {
            let mut line = Map::new();
            line.insert("seq".into(), json!(seq));
            line.insert("time".into(), json!(time));
            line.insert("event".into(), json!(event));
            line.extend(fields);
            line.insert("prev".into(), json!(prev));
            Value::Object(line).to_string()
        });
        if let Err(e) = result {
            warn!(
                "audit log {}: cannot append the {event} line: {e}",
                self.path.display()
            );
        }
    }
}

/// Installs the audit log of the configuration starting now and writes its `start` line.
pub fn start(path: Option<&Path>, sha256: &str, file: &Path, trust: &trust::Trust) {
    let log = path.map(|p| Arc::new(AuditLog::new(p.to_owned())));
    CURRENT.store(log.clone());
    if let Some(log) = log {
        let mut f = Map::new();
        f.insert("config_sha256".into(), json!(sha256));
        f.insert("config_file".into(), json!(file.display().to_string()));
        f.insert("pid".into(), json!(std::process::id()));
        // After a restart or a hand-over, what changed since the trust the file last recorded.
        if let Some(last) = chain::last_with(&log.path, "pools") {
            let old: Option<trust::Trust> = serde_json::from_value(last["pools"].clone()).ok();
            if let Some(old) = old {
                f.insert(
                    "previous_config_sha256".into(),
                    last["config_sha256"].clone(),
                );
                f.insert("changes".into(), json!(trust::diff(&old, trust)));
            }
        }
        f.insert("pools".into(), json!(trust));
        log.write("start", f);
    }
}

/// Records a reload in place: the trust changes between the two configurations. A new or
/// changed `audit_log` path starts being written here.
pub fn reload(
    path: Option<&Path>,
    (old_sha, old): (&str, &trust::Trust),
    (new_sha, new): (&str, &trust::Trust),
) {
    let current = CURRENT.load_full();
    let log = match (current, path) {
        (Some(c), Some(p)) if c.path == p => Some(c),
        (_, p) => p.map(|p| Arc::new(AuditLog::new(p.to_owned()))),
    };
    CURRENT.store(log.clone());
    if let Some(log) = log {
        let mut f = Map::new();
        f.insert("config_sha256".into(), json!(new_sha));
        f.insert("previous_config_sha256".into(), json!(old_sha));
        f.insert("changes".into(), json!(trust::diff(old, new)));
        f.insert("pools".into(), json!(new));
        f.insert("pid".into(), json!(std::process::id()));
        log.write("reload", f);
    }
}

/// Records a backend key refused by a pool's whitelist (or a probe of it), at most once a
/// minute per pool, server and key; the line says how many were not written since.
pub fn refused(pool: &str, server: &str, pin: Option<Pin>, reason: &'static str) {
    let Some(log) = CURRENT.load_full() else {
        return;
    };
    let suppressed = {
        let mut seen = log.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let key = (pool.to_owned(), server.to_owned(), pin);
        match seen.get_mut(&key) {
            Some(r) if now.duration_since(r.last) < REFUSAL_INTERVAL => {
                r.suppressed += 1;
                return;
            }
            Some(r) => {
                r.last = now;
                std::mem::take(&mut r.suppressed)
            }
            None => {
                if seen.len() >= REFUSAL_KEYS {
                    seen.retain(|_, r| now.duration_since(r.last) < REFUSAL_INTERVAL);
                }
                if seen.len() < REFUSAL_KEYS {
                    seen.insert(
                        key,
                        Refusals {
                            last: now,
                            suppressed: 0,
                        },
                    );
                }
                0
            }
        }
    };
    let mut f = Map::new();
    f.insert("pool".into(), json!(pool));
    f.insert("server".into(), json!(server));
    f.insert("presented_pin".into(), json!(pin.map(|p| p.to_string())));
    f.insert("reason".into(), json!(reason));
    f.insert("suppressed_since_last".into(), json!(suppressed));
    let write = move || log.write("refused_key", f);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(write);
        }
        Err(_) => write(),
    }
}

/// Verifies an audit log file's hash chain; the number of lines when intact.
pub fn verify_file(path: &Path) -> Result<usize, ChainError> {
    verify(&std::fs::read(path)?)
}
