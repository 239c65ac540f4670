//! Headers toward the backend: the request target's authority and the X-Forwarded-* set.

use pingora::http::RequestHeader;
use pingora::Result;
use rand::RngCore;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The client's authority: `:authority` / absolute-form first (RFC 9112 §3.2.2), else `Host`.
pub fn authority(req: &RequestHeader) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str());
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
}

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(32);
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// What the gateway tells the backend about the client connection.
pub struct Forwarded<'a> {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The port the client connected to.
    pub local_port: Option<u16>,
    /// Whether the client used TLS.
    pub tls: bool,
    /// The Host (or `:authority`) the client sent.
    pub authority: &'a str,
    /// This request's id.
    pub request_id: &'a str,
}

impl Forwarded<'_> {
    /// Replaces whatever forwarding headers the client sent with the gateway's own; clients are
    /// not trusted proxies, so their X-Forwarded-* and Forwarded headers never reach a backend.
    pub fn apply(&self, req: &mut RequestHeader) -> Result<()> {
        let spoofable: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-forwarded-") || n.as_str() == "forwarded")
            .cloned()
            .collect();
        for name in spoofable {
            req.remove_header(&name);
        }
        if req.headers.get(http::header::HOST).is_none() {
            // HTTP/2 clients send :authority only; HTTP/1.1 backends need Host.
            req.insert_header(http::header::HOST, self.authority)?;
        }
        if let Some(ip) = self.client {
            req.insert_header("X-Forwarded-For", ip.to_string())?;
        }
        req.insert_header("X-Forwarded-Proto", if self.tls { "https" } else { "http" })?;
        if let Some(port) = self.local_port {
            req.insert_header("X-Forwarded-Port", port.to_string())?;
        }
        req.insert_header("X-Forwarded-Host", self.authority)?;
        req.insert_header("X-Original-Host", self.authority)?;
        req.insert_header("X-Request-Id", self.request_id)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn values(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn client_forwarding_headers_are_replaced() {
        let mut r = request(&[
            ("Host", "www.example.com"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Evil", "1"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Request-Id", "spoofed"),
        ]);
        Forwarded {
            client: Some("192.0.2.1".parse().unwrap()),
            local_port: Some(8443),
            tls: true,
            authority: "www.example.com",
            request_id: "abc",
        }
        .apply(&mut r)
        .unwrap();
        assert_eq!(values(&r, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(values(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&r, "x-forwarded-port"), ["8443"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["www.example.com"]);
        assert_eq!(values(&r, "x-original-host"), ["www.example.com"]);
        assert_eq!(values(&r, "x-request-id"), ["abc"]);
        assert!(values(&r, "x-forwarded-evil").is_empty());
        assert!(values(&r, "forwarded").is_empty());
    }

    #[test]
    fn host_is_added_for_http2_clients() {
        let mut r = request(&[]);
        Forwarded {
            client: None,
            local_port: None,
            tls: false,
            authority: "a.example:8080",
            request_id: "id",
        }
        .apply(&mut r)
        .unwrap();
        assert_eq!(values(&r, "host"), ["a.example:8080"]);
        assert_eq!(values(&r, "x-forwarded-proto"), ["http"]);
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_request_id());
    }
}
