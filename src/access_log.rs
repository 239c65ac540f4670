//! The access log: one line per request (also for 404s, redirects and gateway errors), written
//! by a background thread so that a slow disk never delays a request.

use crate::config::{AccessLogConfig, AccessLogFormat};
use chrono::{DateTime, SecondsFormat, Utc};
use log::warn;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Lines queued for the writer before new ones are dropped (and counted).
const QUEUE: usize = 65_536;

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("cannot open access log {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// One request, as logged.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    /// When the request started.
    pub time: Option<SystemTime>,
    /// The client address (the PROXY header's or the forwarded one, when trusted).
    pub client: Option<String>,
    /// Listener name.
    pub listener: &'a str,
    /// Route name ("" when none matched).
    pub route: &'a str,
    /// Pool name ("" when none).
    pub pool: &'a str,
    /// Server as configured ("" when none).
    pub server: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request target as received.
    pub path: &'a str,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: &'a str,
    /// Status sent (0 when none could be sent).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    /// Time to complete the request.
    pub duration: Duration,
    /// Upstream TLS version, e.g. `TLSv1.3`.
    pub upstream_tls: Option<&'a str>,
    /// The request id sent to the backend.
    pub request_id: &'a str,
    /// Referer header.
    pub referer: Option<&'a str>,
    /// User-Agent header.
    pub user_agent: Option<&'a str>,
}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

/// A running access log.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    format: AccessLogFormat,
    dropped: AtomicU64,
    writer: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Opens the file (or standard output) and starts the writer.
    pub fn open(cfg: &AccessLogConfig) -> Result<AccessLog, AccessLogError> {
        let out: Box<dyn Write + Send> = match &cfg.file {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out))
            .ok();
        Ok(AccessLog {
            tx,
            format: cfg.format,
            dropped: AtomicU64::new(0),
            writer,
        })
    }

    /// Queues one line.
    pub fn record(&self, e: &Entry<'_>) {
        let line = match self.format {
            AccessLogFormat::Json => json(e),
            AccessLogFormat::Combined => combined(e),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!("access log writer is behind: {} lines dropped", n + 1);
            }
        }
    }

    /// Waits until every queued line is written (at shutdown), at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(2));
        drop(self.writer.take());
    }
}

fn write_loop(rx: Receiver<Msg>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::new(out);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Drain what is queued, then flush once: one write call per burst, not per line.
        while let Some(m) = next.take() {
            match m {
                Msg::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

fn rfc3339(t: Option<SystemTime>) -> String {
    let t: DateTime<Utc> = t.unwrap_or_else(SystemTime::now).into();
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn json(e: &Entry<'_>) -> String {
    let v = serde_json::json!({
        "time": rfc3339(e.time),
        "client": e.client,
        "listener": e.listener,
        "route": e.route,
        "pool": e.pool,
        "server": e.server,
        "method": e.method,
        "path": e.path,
        "protocol": e.version,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "upstream_tls": e.upstream_tls,
        "request_id": e.request_id,
        "referer": e.referer,
        "user_agent": e.user_agent,
    });
    format!("{v}\n")
}

/// `client - - [time] "METHOD path PROTO" status bytes "referer" "agent"`, then pinion's own
/// fields as `key=value` pairs.
fn combined(e: &Entry<'_>) -> String {
    let t: DateTime<Utc> = e.time.unwrap_or_else(SystemTime::now).into();
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" listener={} route={} pool={} server={} duration_ms={:.3} upstream_tls={} request_id={}\n",
        e.client.as_deref().unwrap_or("-"),
        t.format("%d/%b/%Y:%H:%M:%S %z"),
        q(e.method),
        q(e.path),
        e.version,
        e.status,
        e.bytes,
        q(e.referer.unwrap_or("-")),
        q(e.user_agent.unwrap_or("-")),
        dash(e.listener),
        dash(e.route),
        dash(e.pool),
        dash(e.server),
        e.duration.as_secs_f64() * 1000.0,
        e.upstream_tls.unwrap_or("-"),
        dash(e.request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            client: Some("192.0.2.1".into()),
            listener: "https",
            route: "api",
            pool: "api",
            server: "10.0.1.4:443",
            method: "GET",
            path: "/a \"b\"",
            version: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1500),
            upstream_tls: Some("TLSv1.3"),
            request_id: "abc",
            referer: None,
            user_agent: Some("curl/8"),
        }
    }

    #[test]
    fn json_lines_are_objects_with_every_field() {
        let line = json(&entry());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a \"b\"");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_tls"], "TLSv1.3");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn combined_lines_follow_the_apache_layout() {
        let line = combined(&entry());
        assert!(line.starts_with(
            "192.0.2.1 - - [14/Nov/2023:22:13:20 +0000] \"GET /a \\\"b\\\" HTTP/1.1\" 200 12 \"-\" \"curl/8\" listener=https"
        ), "{line}");
        assert!(line.contains("request_id=abc"));
    }
}
