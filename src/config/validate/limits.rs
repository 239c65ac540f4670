//! `limits:` rules, for listeners and routes.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::{RawLimits, RawRateLimit, Scalar};
use crate::limits::rate::{RateLimiter, DEFAULT_MAX_CLIENTS};
use crate::limits::Limits;
use std::sync::Arc;

/// The largest request head Pingora reads over HTTP/1.1 before it gives up on the request; a
/// larger limit could never be reached.
const MAX_HEADER_BYTES: u64 = 1024 * 1024 - 1;
/// The most header fields Pingora parses in one HTTP/1.1 request.
const MAX_HEADERS: u64 = 256;
const SIZE: &str = "a number of bytes, e.g. 1048576, 64KiB or 10MiB";

/// What a count is of: the accepted form, and the accepted range.
type Count = (&'static str, &'static str);
const CONNECTIONS: Count = (
    "a whole number of connections, e.g. 10000",
    "at least 1 connection (leave the key out for no cap)",
);
const CLIENTS: Count = (
    "a whole number of client addresses, e.g. 100000",
    "at least 1 client address",
);

impl Validator<'_> {
    /// A listener's limits: the defaults where a key is not given.
    pub(super) fn limits(&mut self, raw: Option<&RawLimits>, path: &KeyPath) -> Limits {
        let defaults = Limits::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let mut bounded = |v: Option<&Scalar>, key: &str, default: u64, max: u64, expected| {
            v.and_then(|v| self.bytes(v, &path.key(key), max, expected))
                .unwrap_or(default)
        };
        Limits {
            max_header_bytes: bounded(
                raw.max_header_bytes.as_ref(),
                "max_header_bytes",
                defaults.max_header_bytes,
                MAX_HEADER_BYTES,
                "between 1 byte and 1048575 bytes (1 MiB - 1)",
            ),
            max_headers: bounded(
                raw.max_headers.as_ref(),
                "max_headers",
                defaults.max_headers,
                MAX_HEADERS,
                "between 1 and 256 header fields",
            ),
            max_uri_bytes: bounded(
                raw.max_uri_bytes.as_ref(),
                "max_uri_bytes",
                defaults.max_uri_bytes,
                MAX_HEADER_BYTES,
                "between 1 byte and 1048575 bytes (1 MiB - 1)",
            ),
            max_body_bytes: raw
                .max_body_bytes
                .as_ref()
                .and_then(|v| self.body_limit(v, &path.key("max_body_bytes")))
                .unwrap_or(defaults.max_body_bytes),
            max_connections: raw
                .max_connections
                .as_ref()
                .and_then(|v| self.count(v, &path.key("max_connections"), CONNECTIONS)),
            max_connections_per_ip: raw
                .max_connections_per_ip
                .as_ref()
                .and_then(|v| self.count(v, &path.key("max_connections_per_ip"), CONNECTIONS)),
        }
    }

    /// `rate_limit`: a rate above zero, a burst of at least one request, and how many client
    /// addresses to keep buckets for.
    pub(super) fn rate_limit(
        &mut self,
        raw: &RawRateLimit,
        path: &KeyPath,
    ) -> Option<Arc<RateLimiter>> {
        let rate = raw.requests_per_second.0.trim().parse::<f64>().ok();
        let rate = match rate {
            Some(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Some(r),
            _ => {
                self.err(
                    path.key("requests_per_second"),
                    Problem::BadChoice {
                        value: raw.requests_per_second.0.clone(),
                        expected: "a number of requests per second above 0, e.g. 10 or 0.5",
                    },
                );
                None
            }
        };
        let burst = match &raw.burst {
            Some(v) => match v.0.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.err(
                        path.key("burst"),
                        Problem::BadChoice {
                            value: v.0.clone(),
                            expected: "a whole number of requests, at least 1",
                        },
                    );
                    None
                }
            },
            // One second's worth, and at least one request.
            None => rate.map(|r| (r.ceil() as u64).max(1)),
        };
        if let Some(key) = raw.key.as_deref().filter(|k| *k != "client_ip") {
            self.err(
                path.key("key"),
                Problem::BadChoice {
                    value: key.to_owned(),
                    expected: "client_ip",
                },
            );
        }
        let max_clients = match &raw.max_clients {
            Some(v) => self.count(v, &path.key("max_clients"), CLIENTS),
            None => Some(DEFAULT_MAX_CLIENTS as u64),
        };
        let max_clients = usize::try_from(max_clients?).unwrap_or(usize::MAX);
        Some(Arc::new(RateLimiter::new(rate?, burst?, max_clients)))
    }

    /// A count (connections, clients): a whole number of at least 1; `what` names the unit.
    fn count(&mut self, v: &Scalar, path: &KeyPath, what: Count) -> Option<u64> {
        let Ok(n) = v.0.trim().parse::<u64>() else {
            self.err(
                path.clone(),
                Problem::BadChoice {
                    value: v.0.clone(),
                    expected: what.0,
                },
            );
            return None;
        };
        if n == 0 {
            self.err(
                path.clone(),
                Problem::OutOfRange {
                    value: n,
                    expected: what.1,
                },
            );
            return None;
        }
        Some(n)
    }

    /// `max_body_bytes`: a size, or `unlimited`. `None` when the value is wrong (reported).
    pub(super) fn body_limit(&mut self, v: &Scalar, path: &KeyPath) -> Option<Option<u64>> {
        if v.0.trim() == "unlimited" {
            return Some(None);
        }
        self.bytes(v, path, u64::MAX, "at least 1 byte, or unlimited")
            .map(Some)
    }

    fn bytes(&mut self, v: &Scalar, path: &KeyPath, max: u64, range: &'static str) -> Option<u64> {
        let Some(n) = parse_size(&v.0) else {
            self.err(
                path.clone(),
                Problem::BadChoice {
                    value: v.0.clone(),
                    expected: SIZE,
                },
            );
            return None;
        };
        if n == 0 || n > max {
            self.err(
                path.clone(),
                Problem::OutOfRange {
                    value: n,
                    expected: range,
                },
            );
            return None;
        }
        Some(n)
    }
}

/// `1048576`, `64KiB`, `10MiB`, `1GiB`, or nginx's `64k`, `10m`, `1g` (also binary multiples).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let multiple: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiple)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_bytes_and_binary_units() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("10 MiB"), Some(10 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("-5"), None);
        assert_eq!(parse_size("5 KB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }
}
