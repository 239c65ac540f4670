//! Request limits: how large a request a listener (or route) accepts, and the status that says
//! which limit a request crossed. Pure decisions on the parsed request head, so that HTTP/1.1
//! and HTTP/2 requests are measured alike and every answer goes through the gateway's own error
//! path (error page, access log line, metric); the proxy phase only asks.

pub mod rate;

use pingora::http::RequestHeader;
use std::fmt::Write as _;

/// Default for `limits.max_header_bytes`: the request line and header fields (Envoy's 60 KiB,
/// nginx's 4 × 8 KiB buffers; 32 KiB holds any browser's cookies).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;
/// Default for `limits.max_headers` (Envoy's `max_headers_count`).
pub const DEFAULT_MAX_HEADERS: u64 = 100;
/// Default for `limits.max_uri_bytes` (nginx's and HAProxy's 8 KiB line).
pub const DEFAULT_MAX_URI_BYTES: u64 = 8 * 1024;

/// What one listener accepts; `max_body_bytes` may be narrowed or widened per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request line and header fields, counted as HTTP/1.1 writes them.
    pub max_header_bytes: u64,
    /// Header fields (each repeated field counts).
    pub max_headers: u64,
    /// The request target (path and query) as sent.
    pub max_uri_bytes: u64,
    /// The request body; `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// Client connections open at once on the listener; `None` is unlimited.
    pub max_connections: Option<u64>,
    /// Client connections open at once from one address on the listener; `None` is unlimited.
    pub max_connections_per_ip: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: None,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

/// Why a request is refused: each maps to one status and one metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The head is larger than `max_header_bytes`.
    #[error("request header fields are {size} bytes, more than max_header_bytes ({limit})")]
    HeaderBytes { size: u64, limit: u64 },
    /// More header fields than `max_headers`.
    #[error("{count} request header fields, more than max_headers ({limit})")]
    Headers { count: u64, limit: u64 },
    /// The request target is longer than `max_uri_bytes`.
    #[error("request target is {size} bytes, more than max_uri_bytes ({limit})")]
    UriBytes { size: u64, limit: u64 },
    /// The declared body is larger than `max_body_bytes`.
    #[error("request body of {size} bytes, more than max_body_bytes ({limit})")]
    BodyBytes { size: u64, limit: u64 },
    /// The client's `rate_limit` bucket is empty; a token is back in `retry_after` seconds.
    #[error("over its rate_limit; a request is allowed again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The route requires a verified client certificate and the connection has none.
    #[error("the route requires a verified client certificate")]
    ClientCertificate,
}

impl Rejection {
    /// The status the client gets.
    pub fn status(self) -> u16 {
        match self {
            Rejection::HeaderBytes { .. } | Rejection::Headers { .. } => 431,
            Rejection::UriBytes { .. } => 414,
            Rejection::BodyBytes { .. } => 413,
            Rejection::RateLimited { .. } => 429,
            Rejection::ClientCertificate => 403,
        }
    }

    /// The `reason` label of `pinion_requests_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::HeaderBytes { .. } => "header_bytes",
            Rejection::Headers { .. } => "headers",
            Rejection::UriBytes { .. } => "uri_bytes",
            Rejection::BodyBytes { .. } => "body_bytes",
            Rejection::RateLimited { .. } => "rate_limit",
            Rejection::ClientCertificate => "client_certificate",
        }
    }
}

/// Every reason [`Rejection::reason`] can give, for metrics that start at zero.
pub const REASONS: [&str; 6] = [
    "header_bytes",
    "headers",
    "uri_bytes",
    "body_bytes",
    "rate_limit",
    "client_certificate",
];

/// `pinion_rate_limit_clients`: client addresses whose buckets each rate limit keeps now.
pub fn render_rate_limits<'a>(
    out: &mut String,
    listeners: impl Iterator<Item = (&'a str, &'a rate::RateLimiter)>,
    routes: impl Iterator<Item = (&'a str, &'a rate::RateLimiter)>,
) {
    out.push_str("# HELP pinion_rate_limit_clients Client addresses whose rate_limit buckets are kept (at most max_clients).\n# TYPE pinion_rate_limit_clients gauge\n");
    for (scope, all) in [
        ("listener", listeners.collect::<Vec<_>>()),
        ("route", routes.collect()),
    ] {
        for (name, limiter) in all {
            let _ = writeln!(
                out,
                "pinion_rate_limit_clients{{scope=\"{scope}\",name=\"{name}\"}} {}",
                limiter.tracked()
            );
        }
    }
}

/// HTTP/2's own ceiling on a request's header block (`SETTINGS_MAX_HEADER_LIST_SIZE`, counted
/// with 32 bytes more per field than [`Limits::max_header_bytes`]) for these listeners: twice
/// the largest head they accept, so that a request a little over its limit still reaches the
/// gateway and gets its 431 with the error page instead of the decoder's bare 431 and stream
/// reset; never below Pingora's 64 KiB. One value for the process, set at start.
pub fn h2_header_list_size<'a>(all: impl IntoIterator<Item = &'a Limits>) -> u32 {
    const PINGORA_DEFAULT: u64 = 64 * 1024;
    let largest = all
        .into_iter()
        .map(|l| {
            l.max_header_bytes
                .saturating_add(l.max_headers.saturating_mul(32))
        })
        .max()
        .unwrap_or(0);
    u32::try_from(largest.saturating_mul(2).max(PINGORA_DEFAULT)).unwrap_or(u32::MAX)
}

/// Checks the request head against `limits`: the target first (414 says most precisely what
/// to shorten), then the field count, then the size.
pub fn check_head(req: &RequestHeader, limits: &Limits) -> Result<(), Rejection> {
    let uri = len(req.raw_path().len());
    if uri > limits.max_uri_bytes {
        return Err(Rejection::UriBytes {
            size: uri,
            limit: limits.max_uri_bytes,
        });
    }
    let count = len(req.headers.len());
    if count > limits.max_headers {
        return Err(Rejection::Headers {
            count,
            limit: limits.max_headers,
        });
    }
    let size = head_bytes(req);
    if size > limits.max_header_bytes {
        return Err(Rejection::HeaderBytes {
            size,
            limit: limits.max_header_bytes,
        });
    }
    Ok(())
}

/// Checks a declared `Content-Length` against `max_body_bytes`, before any byte is forwarded.
/// A body without a length (chunked, HTTP/2 without the header) passes here.
pub fn check_declared_body(
    req: &RequestHeader,
    max_body_bytes: Option<u64>,
) -> Result<(), Rejection> {
    let Some(limit) = max_body_bytes else {
        return Ok(());
    };
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(size) if size > limit => Err(Rejection::BodyBytes { size, limit }),
        _ => Ok(()),
    }
}

/// Checks the body bytes read so far against `max_body_bytes`, for bodies without a declared
/// length (chunked, HTTP/2), as they stream.
pub fn check_streamed_body(read: u64, max_body_bytes: Option<u64>) -> Result<(), Rejection> {
    match max_body_bytes {
        Some(limit) if read > limit => Err(Rejection::BodyBytes { size: read, limit }),
        _ => Ok(()),
    }
}

/// The head as HTTP/1.1 writes it: `METHOD target HTTP/1.1\r\n`, then `name: value\r\n` per
/// field, then the blank line. The same count for a request that came over HTTP/2, so one
/// limit means one thing on both.
fn head_bytes(req: &RequestHeader) -> u64 {
    let line = req.method.as_str().len() + 1 + req.raw_path().len() + 1 + "HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    len(line + fields + 2)
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    #[test]
    fn a_request_within_every_limit_passes() {
        let req = request("/a?b=c", &[("host", "example.com"), ("accept", "*/*")]);
        assert_eq!(check_head(&req, &Limits::default()), Ok(()));
    }

    #[test]
    fn the_head_is_counted_as_http1_writes_it() {
        // "GET /x HTTP/1.1\r\n" 17 + "a: b\r\n" 6 + "\r\n" 2
        let req = request("/x", &[("a", "b")]);
        assert_eq!(head_bytes(&req), 25);
        let limits = Limits {
            max_header_bytes: 24,
            ..Limits::default()
        };
        assert_eq!(
            check_head(&req, &limits),
            Err(Rejection::HeaderBytes {
                size: 25,
                limit: 24
            })
        );
        let limits = Limits {
            max_header_bytes: 25,
            ..Limits::default()
        };
        assert_eq!(check_head(&req, &limits), Ok(()));
    }

    #[test]
    fn too_many_fields_are_431_and_repeated_fields_count() {
        let req = request("/", &[("x", "1"), ("x", "2"), ("y", "3")]);
        let limits = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        let rejection = check_head(&req, &limits).unwrap_err();
        assert_eq!(rejection, Rejection::Headers { count: 3, limit: 2 });
        assert_eq!(rejection.status(), 431);
        assert_eq!(rejection.reason(), "headers");
    }

    #[test]
    fn a_long_target_is_414_before_the_size_is_considered() {
        let target = format!("/{}", "a".repeat(100));
        let req = request(&target, &[]);
        let limits = Limits {
            max_uri_bytes: 100,
            max_header_bytes: 10,
            ..Limits::default()
        };
        let rejection = check_head(&req, &limits).unwrap_err();
        assert_eq!(
            rejection,
            Rejection::UriBytes {
                size: 101,
                limit: 100
            }
        );
        assert_eq!(rejection.status(), 414);
    }

    #[test]
    fn a_declared_body_over_the_limit_is_413_and_one_at_it_passes() {
        let req = request("/", &[("content-length", "1001")]);
        let rejection = check_declared_body(&req, Some(1000)).unwrap_err();
        assert_eq!(
            rejection,
            Rejection::BodyBytes {
                size: 1001,
                limit: 1000
            }
        );
        assert_eq!(rejection.status(), 413);
        assert_eq!(check_declared_body(&req, Some(1001)), Ok(()));
        assert_eq!(check_declared_body(&req, None), Ok(()));
        let chunked = request("/", &[("transfer-encoding", "chunked")]);
        assert_eq!(check_declared_body(&chunked, Some(1)), Ok(()));
    }

    #[test]
    fn http2_accepts_twice_the_largest_head_and_never_less_than_pingora() {
        assert_eq!(
            h2_header_list_size([&Limits::default()]),
            2 * (32 * 1024 + 3200)
        );
        let small = Limits {
            max_header_bytes: 1024,
            max_headers: 10,
            ..Limits::default()
        };
        assert_eq!(h2_header_list_size([&small]), 64 * 1024);
        assert_eq!(h2_header_list_size([]), 64 * 1024);
    }

    #[test]
    fn every_reason_is_listed_for_the_metric() {
        for r in [
            Rejection::HeaderBytes { size: 0, limit: 0 },
            Rejection::Headers { count: 0, limit: 0 },
            Rejection::UriBytes { size: 0, limit: 0 },
            Rejection::BodyBytes { size: 0, limit: 0 },
            Rejection::RateLimited { retry_after: 1 },
            Rejection::ClientCertificate,
        ] {
            assert!(REASONS.contains(&r.reason()));
        }
    }
}
