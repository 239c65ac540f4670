//! gRPC calls on the request path: their deadline bounds the wait for the backend, their
//! status is recorded, and failures pinion answers itself reach the client as gRPC statuses in
//! a trailers-only response instead of an HTTP error page.

use crate::grpc::{self, Code};
use pingora::http::{RequestHeader, ResponseHeader};
use std::time::{Duration, Instant};

/// Whether the request is a gRPC call.
pub(super) fn is_call(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| grpc::is_grpc(v.as_bytes()))
}

/// What is left of a gRPC call's `grpc-timeout`, counted from `started`; `None` for calls
/// without one and for other requests.
pub(super) fn remaining(req: &RequestHeader, started: Option<Instant>) -> Option<Duration> {
    if !is_call(req) {
        return None;
    }
    let timeout = grpc::parse_timeout(req.headers.get("grpc-timeout")?.as_bytes())?;
    let spent = started.map_or(Duration::ZERO, |s| s.elapsed());
    // A deadline already passed still needs a nonzero wait to time out at once.
    Some(timeout.saturating_sub(spent).max(Duration::from_millis(1)))
}

/// The `grpc-status` in a header block (trailers, or a trailers-only response).
pub(super) fn status_in(headers: &http::HeaderMap) -> Option<u8> {
    headers
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The trailers-only response that tells a gRPC client what the HTTP status `status` means.
pub(super) fn trailers_only(status: u16) -> pingora::Result<ResponseHeader> {
    let code = Code::for_http_status(status);
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", code.number().to_string())?;
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error");
    // grpc-message is percent-encoded; these texts are plain ASCII without '%'.
    resp.insert_header(
        "grpc-message",
        format!("pinion: {status} {reason}").replace(' ', "%20"),
    )?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(timeout: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Method", None).unwrap();
        req.insert_header("content-type", "application/grpc")
            .unwrap();
        if let Some(t) = timeout {
            req.insert_header("grpc-timeout", t).unwrap();
        }
        req
    }

    #[test]
    fn a_deadline_counts_from_the_start_of_the_call() {
        let started = Instant::now() - Duration::from_millis(300);
        let left = remaining(&call(Some("1S")), Some(started)).unwrap();
        assert!(left <= Duration::from_millis(700) && left > Duration::from_millis(500));
        assert_eq!(
            remaining(&call(Some("100m")), Some(started)),
            Some(Duration::from_millis(1))
        );
        assert_eq!(remaining(&call(None), Some(started)), None);
        let mut plain = call(Some("1S"));
        plain.insert_header("content-type", "text/plain").unwrap();
        assert_eq!(remaining(&plain, Some(started)), None);
    }

    #[test]
    fn failures_become_trailers_only_grpc_answers() {
        let r = trailers_only(502).unwrap();
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(status_in(&r.headers), Some(14));
        assert_eq!(
            r.headers.get("grpc-message").unwrap(),
            "pinion:%20502%20Bad%20Gateway"
        );
        assert_eq!(status_in(&trailers_only(504).unwrap().headers), Some(4));
        assert_eq!(status_in(&trailers_only(404).unwrap().headers), Some(12));
    }
}
