//! The access log: one line per request (also for 404s, redirects and gateway errors), written
//! by a background thread so that a slow disk never delays a request.

use crate::config::{AccessLogConfig, AccessLogFormat};
use chrono::{DateTime, Utc};
use log::warn;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Bytes of lines waiting for the writer before new lines are dropped (and counted): about
/// 50,000 lines.
const MAX_PENDING: usize = 16 << 20;
/// How often the writer writes what has gathered.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer before its next turn.
const WAKE_AT: usize = 64 << 10;

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
    pub client: Option<IpAddr>,
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
    /// The client certificate's subject, on `client_auth` listeners.
    pub client_subject: Option<&'a str>,
    /// The client certificate's pin (SPKI SHA-256, base64).
    pub client_pin: Option<&'a str>,
    /// The gRPC status of a gRPC call (from the backend's trailers, or pinion's own answer).
    pub grpc_status: Option<u8>,
}

/// A running access log.
///
/// The writer thread starts with the first line or flush, not when the file is opened: the file
/// is opened before a daemon forks, and a thread started then would stay in the parent, which
/// exits, leaving the daemon with a queue nobody writes.
///
/// Requests append their line to one shared buffer (formatted outside the lock, no allocation
/// once the buffers have grown); the writer thread takes the whole buffer every
/// [`WRITE_EVERY`], or at once when it passes [`WAKE_AT`], and writes it with one call. A
/// request thus costs no system call and no wake-up of another thread.
pub struct AccessLog {
    shared: Arc<Shared>,
    format: AccessLogFormat,
    /// The output until the writer takes it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// The writer, once started (`None` inside when it could not be).
    writer: OnceLock<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: much to write, a flush asked for, or closing.
    work: Condvar,
    /// Wakes those waiting for a flush.
    written: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    dropped: u64,
    flushes_asked: u64,
    flushes_done: u64,
    closing: bool,
}

impl AccessLog {
    /// Opens the file (or standard output); the writer starts when first needed.
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            written: Condvar::new(),
        });
        Ok(AccessLog {
            shared,
            format: cfg.format,
            out: Mutex::new(Some(out)),
            writer: OnceLock::new(),
        })
    }

    /// Starts the writer in this process unless it runs already; a single atomic load once it
    /// does.
    fn writer(&self) {
        self.writer.get_or_init(|| {
            let out = self.out.lock().ok()?.take()?;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_loop(&shared, out));
            match spawned {
                Ok(handle) => Some(handle),
                Err(e) => {
                    warn!("cannot start the access log writer: {e}");
                    None
                }
            }
        });
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.state.lock().map_or(0, |s| s.dropped)
    }

    /// Queues one line.
    pub fn record(&self, e: &Entry<'_>) {
        self.writer();
        LINE.with_borrow_mut(|line| {
            line.clear();
            match self.format {
                AccessLogFormat::Json => json(e, line),
                AccessLogFormat::Combined => line.extend_from_slice(combined(e).as_bytes()),
            }
            let Ok(mut state) = self.shared.state.lock() else {
                return;
            };
            if state.pending.len() + line.len() > MAX_PENDING {
                state.dropped += 1;
                if state.dropped.is_power_of_two() {
                    warn!(
                        "access log writer is behind: {} lines dropped",
                        state.dropped
                    );
                }
                return;
            }
            state.pending.extend_from_slice(line);
            if state.pending.len() >= WAKE_AT {
                self.shared.work.notify_one();
            }
        });
    }

    /// Waits until every line queued so far is written, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        self.writer();
        if self.writer.get().is_some_and(Option::is_none) {
            // Nobody would ever answer.
            return;
        }
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.shared.work.notify_one();
        let _ = self
            .shared
            .written
            .wait_timeout_while(state, timeout, |s| s.flushes_done < ticket);
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if self.writer.get().is_none() {
            // Nothing was ever queued.
            return;
        }
        self.flush(Duration::from_secs(2));
        if let Ok(mut state) = self.shared.state.lock() {
            state.closing = true;
        }
        self.shared.work.notify_one();
        drop(self.writer.take().flatten());
    }
}

thread_local! {
    /// The line being formatted, per thread: reused, so a request allocates nothing for it.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The date and time to the second of the last line this thread wrote, and its seconds.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let Ok(state) = shared.state.lock() else {
            return;
        };
        let Ok((mut state, _)) = shared.work.wait_timeout_while(state, WRITE_EVERY, |s| {
            s.pending.len() < WAKE_AT && s.flushes_asked == s.flushes_done && !s.closing
        }) else {
            return;
        };
        std::mem::swap(&mut batch, &mut state.pending);
        let ticket = state.flushes_asked;
        let closing = state.closing;
        drop(state);
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
        if let Ok(mut state) = shared.state.lock() {
            state.flushes_done = ticket;
        }
        shared.written.notify_all();
        if closing {
            return;
        }
    }
}

/// `2023-11-14T22:13:20.000Z`: UTC, milliseconds.
fn rfc3339(t: Option<SystemTime>, out: &mut Vec<u8>) {
    let since = t
        .unwrap_or_else(SystemTime::now)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let whole: DateTime<Utc> = (SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).into();
            *text = whole.format("%Y-%m-%dT%H:%M:%S").to_string();
            *cached = secs;
        }
        out.extend_from_slice(text.as_bytes());
    });
    let ms = since.subsec_millis();
    let digit = |d: u32| b'0' + u8::try_from(d % 10).unwrap_or(0);
    out.extend_from_slice(&[b'.', digit(ms / 100), digit(ms / 10), digit(ms), b'Z']);
}

/// Whether a byte must be escaped inside a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// A JSON string: quoted, with `"`, `\` and control characters escaped.
fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Names, paths and ids rarely need escaping: copy clean runs whole.
    while let Some(i) = rest.iter().position(|&b| needs_escape(b)) {
        let (clean, tail) = rest.split_at(i);
        out.extend_from_slice(clean);
        let Some((&b, after)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        rest = after;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn json_opt(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => json_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes an address as `Display` does; IPv4 without the formatting machinery, which costs
/// about ten times as much on every request (access log line, X-Forwarded-For).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes a duration in milliseconds rounded to the microsecond, as serde_json writes that
/// f64 (`1.5`, `2.0`, `0.001`), with integers: formatting the float cost every request about
/// 450 instructions.
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = micros % 1000;
    let digits = [frac / 100, frac / 10 % 10, frac % 10].map(|d| b'0' + d as u8);
    // Trailing zeros dropped, one digit kept.
    let len = digits
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(1, |last| last + 1);
    out.extend_from_slice(&digits[..len]);
}

/// One JSON object and a newline, the fields in a fixed order.
fn json(e: &Entry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(e.time, out);
    out.extend_from_slice(b"\",\"client\":");
    match e.client {
        // An address has nothing to escape.
        Some(ip) => {
            out.push(b'"');
            write_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    for (key, value) in [
        (&b",\"listener\":"[..], e.listener),
        (b",\"route\":", e.route),
        (b",\"pool\":", e.pool),
        (b",\"server\":", e.server),
        (b",\"method\":", e.method),
        (b",\"path\":", e.path),
        (b",\"protocol\":", e.version),
    ] {
        out.extend_from_slice(key);
        json_str(value, out);
    }
    let mut numbers = itoa::Buffer::new();
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(numbers.format(e.status).as_bytes());
    out.extend_from_slice(b",\"bytes\":");
    out.extend_from_slice(numbers.format(e.bytes).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    write_millis(out, e.duration);
    out.extend_from_slice(b",\"upstream_tls\":");
    json_opt(e.upstream_tls, out);
    out.extend_from_slice(b",\"request_id\":");
    json_str(e.request_id, out);
    out.extend_from_slice(b",\"referer\":");
    json_opt(e.referer, out);
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(e.user_agent, out);
    out.extend_from_slice(b",\"client_subject\":");
    json_opt(e.client_subject, out);
    out.extend_from_slice(b",\"client_pin\":");
    json_opt(e.client_pin, out);
    if let Some(code) = e.grpc_status {
        out.extend_from_slice(b",\"grpc_status\":");
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    }
    out.extend_from_slice(b"}\n");
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
    let client_cert = match (e.client_subject, e.client_pin) {
        (Some(subject), Some(pin)) => {
            format!(" client_subject=\"{}\" client_pin={pin}", q(subject))
        }
        _ => String::new(),
    };
    let grpc = e
        .grpc_status
        .map_or_else(String::new, |c| format!(" grpc_status={c}"));
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" listener={} route={} pool={} server={} duration_ms={:.3} upstream_tls={} request_id={}{client_cert}{grpc}\n",
        e.client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
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

    #[test]
    fn the_writer_starts_with_the_first_line_not_when_the_file_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&AccessLogConfig {
            file: Some(path.clone()),
            format: AccessLogFormat::Json,
        })
        .unwrap();
        // A daemon opens the log before it forks; a thread started here would stay behind.
        assert!(log.writer.get().is_none());
        log.record(&entry());
        assert!(log.writer.get().is_some_and(Option::is_some));
        log.flush(Duration::from_secs(10));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(log.dropped(), 0);
    }

    fn entry() -> Entry<'static> {
        Entry {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            client: Some(IpAddr::from([192, 0, 2, 1])),
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
            client_subject: None,
            client_pin: None,
            grpc_status: None,
        }
    }

    fn json_line(e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        json(e, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.12.3",
            "192.0.2.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn json_lines_are_objects_with_every_field() {
        let line = json_line(&entry());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a \"b\"");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_tls"], "TLSv1.3");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["client"], "192.0.2.1");
        assert_eq!(v["request_id"], "abc");
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn durations_are_written_as_serde_json_writes_the_milliseconds() {
        for (nanos, text) in [
            (0, "0.0"),
            (400, "0.0"),
            (500, "0.001"),
            (1_000, "0.001"),
            (10_000, "0.01"),
            (1_500_000, "1.5"),
            (2_000_000, "2.0"),
            (2_000_400, "2.0"),
            (1_234_567_000, "1234.567"),
            (999_999_500, "1000.0"),
            (60_000_070_000, "60000.07"),
        ] {
            let d = Duration::from_nanos(nanos);
            let mut ours = Vec::new();
            write_millis(&mut ours, d);
            let millis = (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
            assert_eq!(String::from_utf8(ours).unwrap(), text, "{nanos} ns");
            assert_eq!(serde_json::to_string(&millis).unwrap(), text, "{nanos} ns");
        }
    }

    #[test]
    fn json_strings_escape_what_json_requires_and_keep_utf8() {
        let mut e = entry();
        e.path = "/q?\"x\"\\y\u{1}\n\té";
        e.client = None;
        e.upstream_tls = None;
        let line = json_line(&e);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/q?\"x\"\\y\u{1}\n\té");
        assert_eq!(v["client"], serde_json::Value::Null);
        assert_eq!(v["upstream_tls"], serde_json::Value::Null);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
    }

    #[test]
    fn lines_reach_the_file_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access.log");
        let log = AccessLog::open(&AccessLogConfig {
            file: Some(file.clone()),
            format: AccessLogFormat::Json,
        })
        .unwrap();
        for _ in 0..1000 {
            log.record(&entry());
        }
        log.flush(Duration::from_secs(10));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], 200);
        }
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
