//! gRPC as far as a gateway needs it: recognising a call, its deadline (`grpc-timeout`), the
//! status codes pinion answers its own failures with, and the standard health-checking
//! protocol (`grpc.health.v1.Health/Check`) for probes. Messages pass through untouched.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;

/// The path of the standard health check.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Whether a `content-type` names gRPC (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(content_type: &[u8]) -> bool {
    let Some(rest) = content_type.get(..16) else {
        return false;
    };
    rest.eq_ignore_ascii_case(b"application/grpc")
        && matches!(content_type.get(16), None | Some(b'+' | b';'))
}

/// A gRPC status code (the subset a gateway produces, plus OK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0.
    Ok = 0,
    /// 4: the deadline passed first.
    DeadlineExceeded = 4,
    /// 7.
    PermissionDenied = 7,
    /// 8: a limit refused the call.
    ResourceExhausted = 8,
    /// 12: nothing serves this method (no route).
    Unimplemented = 12,
    /// 13.
    Internal = 13,
    /// 14: no server could take the call.
    Unavailable = 14,
    /// 16.
    Unauthenticated = 16,
}

impl Code {
    /// What a gateway-generated HTTP status means to a gRPC client (the gRPC project's
    /// "HTTP to gRPC status code mapping", with timeouts as `DEADLINE_EXCEEDED`).
    pub fn for_http_status(status: u16) -> Code {
        match status {
            200..=299 => Code::Ok,
            400 | 431 | 414 => Code::Internal,
            401 | 495 | 496 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 | 405 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            413 | 429 => Code::ResourceExhausted,
            502 | 503 => Code::Unavailable,
            _ => Code::Unavailable,
        }
    }

    /// The number sent as `grpc-status`.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The canonical upper-case name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// A `grpc-timeout` value (`1-8 digits` and a unit of `H M S m u n`).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A length-prefixed message frame around `message` (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The framed `HealthCheckRequest { service }`.
pub fn health_check_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    frame(&message)
}

/// The serving status in a framed `HealthCheckResponse` (1 = SERVING), or why it cannot be
/// read.
pub fn health_check_status(body: &[u8]) -> Result<u64, String> {
    let header = body.get(..5).ok_or("no gRPC message in the response")?;
    if header[0] != 0 {
        return Err("compressed health response".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = body
        .get(5..5 + len)
        .ok_or("truncated gRPC message in the response")?;
    let mut status = 0; // UNKNOWN when absent (proto3 default)
    while !message.is_empty() {
        let key = take_varint(&mut message).ok_or("malformed health response")?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut message).ok_or("malformed health response")?,
            (_, 0) => {
                take_varint(&mut message).ok_or("malformed health response")?;
            }
            (_, 2) => {
                let n = take_varint(&mut message).ok_or("malformed health response")? as usize;
                message = message.get(n..).ok_or("malformed health response")?;
            }
            _ => return Err("unexpected field in the health response".into()),
        }
    }
    Ok(status)
}

/// The name of a `HealthCheckResponse.ServingStatus`.
pub fn serving_status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        assert!(is_grpc(b"application/grpc"));
        assert!(is_grpc(b"application/grpc+proto"));
        assert!(is_grpc(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc(b"application/grpc-web"));
        assert!(!is_grpc(b"application/json"));
        assert!(!is_grpc(b"application/grp"));
    }

    #[test]
    fn timeouts_parse_with_every_unit_and_reject_the_rest() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [&b""[..], b"S", b"123456789S", b"1x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn health_messages_round_trip() {
        let req = health_check_request("api.v1.Api");
        assert_eq!(&req[..5], &[0, 0, 0, 0, 12]);
        assert_eq!(&req[5..7], &[0x0a, 10]);
        assert_eq!(health_check_request("").as_ref(), &[0, 0, 0, 0, 0]);
        assert_eq!(health_check_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(health_check_status(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(health_check_status(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(health_check_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(health_check_status(&[0, 0]).is_err());
    }

    #[test]
    fn gateway_statuses_map_to_grpc_codes() {
        assert_eq!(Code::for_http_status(404), Code::Unimplemented);
        assert_eq!(Code::for_http_status(502), Code::Unavailable);
        assert_eq!(Code::for_http_status(503), Code::Unavailable);
        assert_eq!(Code::for_http_status(504), Code::DeadlineExceeded);
        assert_eq!(Code::for_http_status(429), Code::ResourceExhausted);
        assert_eq!(Code::for_http_status(403), Code::PermissionDenied);
        assert_eq!(Code::Unavailable.number(), 14);
    }
}
