//! Headers toward the backend: the request target's authority and the X-Forwarded-* set.

use crate::config::ForwardedFor;
use crate::listener::client_auth::ClientIdentity;
use crate::listener::Cidr;
use crate::routing::HeaderRewrite;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr, Result};
use rand::RngCore;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    // By hand rather than through `fmt`: this runs on every request.
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// What the gateway tells the backend about the client connection.
pub struct Forwarded<'a> {
    /// The connection's peer (the PROXY header's address, with `proxy_protocol`).
    pub peer: Option<SocketAddr>,
    /// Whether the peer is a trusted proxy, whose forwarding headers are kept.
    pub trusted: bool,
    /// The X-Forwarded-For entry format.
    pub format: ForwardedFor,
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
    /// Sets the forwarding headers. From an untrusted peer every X-Forwarded-* and Forwarded
    /// header is replaced, and the other client-address headers backends believe (X-Real-IP,
    /// True-Client-IP, CF-Connecting-IP) are removed; from a trusted proxy they are kept and
    /// X-Forwarded-For is extended.
    pub fn apply(&self, req: &mut RequestHeader) -> Result<()> {
        // Client-certificate headers come from the gateway only, whoever the peer is; from an
        // untrusted peer the client-address headers go too. Only the names the request
        // carries are looked at: nothing is allocated when there are none.
        let dropped: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| {
                n.as_str().starts_with("x-client-cert") || (!self.trusted && spoofable(n.as_str()))
            })
            .cloned()
            .collect();
        for name in dropped {
            req.remove_header(&name);
        }
        let previous_hops = if self.trusted {
            let list: Vec<&str> = req
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            (!list.is_empty()).then(|| list.join(", "))
        } else {
            None
        };
        // Host and the six headers below: each map grows once, not at every doubling.
        req.reserve_headers(7);
        if req.headers.get(http::header::HOST).is_none() {
            // HTTP/2 clients send :authority only; HTTP/1.1 backends need Host.
            req.insert_header(http::header::HOST, self.authority)?;
        }
        if let Some(peer) = self.peer {
            // One allocation, sized for the longest entry (`[v6 address]:port`).
            let hops = previous_hops.as_deref().unwrap_or_default();
            let mut value = Vec::with_capacity(hops.len() + 2 + 48);
            if !hops.is_empty() {
                value.extend_from_slice(hops.as_bytes());
                value.extend_from_slice(b", ");
            }
            match self.format {
                ForwardedFor::Ip => crate::access_log::write_ip(&mut value, peer.ip()),
                ForwardedFor::IpPort => {
                    let _ = write!(value, "{peer}");
                }
            }
            // From a Vec the value takes the bytes over; nothing is copied.
            let value = HeaderValue::try_from(value)
                .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid X-Forwarded-For")?;
            put(req, &X_FORWARDED_FOR, value, false);
        }
        let keep = self.trusted;
        let proto = HeaderValue::from_static(if self.tls { "https" } else { "http" });
        put(req, &X_FORWARDED_PROTO, proto, keep);
        if let Some(port) = self.local_port {
            put(req, &X_FORWARDED_PORT, HeaderValue::from(port), keep);
        }
        // The client's Host value is shared with the request buffer: cloning it copies nothing.
        let host = match req.headers.get(http::header::HOST) {
            Some(v) if v.as_bytes() == self.authority.as_bytes() => v.clone(),
            _ => HeaderValue::from_str(self.authority)
                .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid authority")?,
        };
        put(req, &X_FORWARDED_HOST, host.clone(), keep);
        put(req, &X_ORIGINAL_HOST, host, keep);
        // The id in use is decided in request_filter (kept from a trusted proxy or new).
        let id = HeaderValue::from_str(self.request_id)
            .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid request id")?;
        put(req, &X_REQUEST_ID, id, false);
        Ok(())
    }
}

/// Whether a header names the client or its connection and so is only believed from a trusted
/// proxy. Checked on the names the request already has: nothing is looked up or allocated for the
/// headers it does not carry.
fn spoofable(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded" | "x-real-ip" | "true-client-ip" | "cf-connecting-ip"
        )
}

/// A header pinion sets: its name parsed once, and its spelling on the wire.
struct Name(HeaderName, &'static str);

static X_FORWARDED_FOR: Name = Name(
    HeaderName::from_static("x-forwarded-for"),
    "X-Forwarded-For",
);
static X_FORWARDED_PROTO: Name = Name(
    HeaderName::from_static("x-forwarded-proto"),
    "X-Forwarded-Proto",
);
static X_FORWARDED_PORT: Name = Name(
    HeaderName::from_static("x-forwarded-port"),
    "X-Forwarded-Port",
);
static X_FORWARDED_HOST: Name = Name(
    HeaderName::from_static("x-forwarded-host"),
    "X-Forwarded-Host",
);
static X_ORIGINAL_HOST: Name = Name(
    HeaderName::from_static("x-original-host"),
    "X-Original-Host",
);
static X_REQUEST_ID: Name = Name(HeaderName::from_static("x-request-id"), "X-Request-Id");

static X_CLIENT_CERT: Name = Name(HeaderName::from_static("x-client-cert"), "X-Client-Cert");
static X_CLIENT_CERT_SUBJECT: Name = Name(
    HeaderName::from_static("x-client-cert-subject"),
    "X-Client-Cert-Subject",
);
static X_CLIENT_CERT_ISSUER: Name = Name(
    HeaderName::from_static("x-client-cert-issuer"),
    "X-Client-Cert-Issuer",
);
static X_CLIENT_CERT_SERIAL: Name = Name(
    HeaderName::from_static("x-client-cert-serial"),
    "X-Client-Cert-Serial",
);
static X_CLIENT_CERT_NOT_AFTER: Name = Name(
    HeaderName::from_static("x-client-cert-not-after"),
    "X-Client-Cert-Not-After",
);
static X_CLIENT_CERT_PIN: Name = Name(
    HeaderName::from_static("x-client-cert-pin"),
    "X-Client-Cert-Pin",
);
static X_FORWARDED_CLIENT_CERT: Name = Name(
    HeaderName::from_static("x-forwarded-client-cert"),
    "X-Forwarded-Client-Cert",
);
static X_CLIENT_CERT_VERIFY: Name = Name(
    HeaderName::from_static("x-client-cert-verify"),
    "X-Client-Cert-Verify",
);

/// Tells the backend who the client is (`tls.client_auth.headers`): `X-Client-Cert-Verify`
/// always (`SUCCESS`, `NONE`, `FAILED:<reason>`), and for a presented certificate its subject,
/// issuer, serial, end of validity, pin and the percent-encoded PEM (nginx's
/// `$ssl_client_escaped_cert`). The client's own headers of these names were removed by
/// [`Forwarded::apply`].
pub fn client_certificate(req: &mut RequestHeader, identity: &ClientIdentity, xfcc: bool) {
    fn set(req: &mut RequestHeader, name: &Name, value: &str) {
        match HeaderValue::from_str(value) {
            Ok(v) => put(req, name, v, false),
            Err(_) => log::debug!("{} not sent: not a valid header value", name.1),
        }
    }
    set(req, &X_CLIENT_CERT_VERIFY, &identity.verify_label());
    if let Some(c) = &identity.certificate {
        set(req, &X_CLIENT_CERT_SUBJECT, &c.subject);
        set(req, &X_CLIENT_CERT_ISSUER, &c.issuer);
        set(req, &X_CLIENT_CERT_SERIAL, &c.serial);
        set(req, &X_CLIENT_CERT_NOT_AFTER, &c.not_after);
        set(req, &X_CLIENT_CERT_PIN, &c.pin);
        set(req, &X_CLIENT_CERT, &c.escaped_pem);
    }
    if xfcc {
        // The gateway's element replaces what arrived (Envoy's SANITIZE_SET); a client
        // without a verified certificate is sent none.
        match identity
            .certificate
            .as_ref()
            .filter(|_| identity.verified())
        {
            Some(c) => set(req, &X_FORWARDED_CLIENT_CERT, &c.xfcc()),
            None => {
                req.remove_header(&X_FORWARDED_CLIENT_CERT.0);
            }
        }
    }
}

/// Sets a header, unless `keep` and the request already has one. The name is not parsed or
/// copied again: for names outside the standard set that would cost two allocations a header.
fn put(req: &mut RequestHeader, name: &Name, value: HeaderValue, keep: bool) {
    if keep && req.headers.contains_key(&name.0) {
        return;
    }
    req.insert_header_named(name.0.clone(), name.1, value);
}

/// From a trusted proxy: the client is the last X-Forwarded-For entry that is not itself a
/// trusted proxy (entries are `ip`, `ip:port` or `[ipv6]:port`).
pub fn forwarded_client(req: &RequestHeader, trusted: &[Cidr]) -> Option<IpAddr> {
    let entries: Vec<IpAddr> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_entry)
        .collect();
    entries
        .iter()
        .rev()
        .find(|ip| !trusted.iter().any(|c| c.contains(**ip)))
        .or(entries.first())
        .copied()
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// A request id sent by a trusted proxy, when it is a sane token.
pub fn incoming_request_id(req: &RequestHeader) -> Option<String> {
    let v = req.headers.get("x-request-id")?.to_str().ok()?.trim();
    let sane = !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| v.to_owned())
}

/// Applies a route's request header changes.
pub fn rewrite_request(req: &mut RequestHeader, rw: &HeaderRewrite) -> Result<()> {
    for name in &rw.remove {
        req.remove_header(name);
    }
    for (name, value) in &rw.set {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Applies a route's response header changes.
pub fn rewrite_response(resp: &mut ResponseHeader, rw: &HeaderRewrite) -> Result<()> {
    for name in &rw.remove {
        resp.remove_header(name);
    }
    for (name, value) in &rw.set {
        resp.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
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
            ("X-Real-IP", "6.6.6.6"),
            ("True-Client-IP", "6.6.6.6"),
            ("CF-Connecting-IP", "6.6.6.6"),
        ]);
        Forwarded {
            peer: Some("192.0.2.1:5000".parse().unwrap()),
            trusted: false,
            format: ForwardedFor::Ip,
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
        for name in ["x-real-ip", "true-client-ip", "cf-connecting-ip"] {
            assert!(values(&r, name).is_empty(), "{name} is removed");
        }
    }

    #[test]
    fn host_is_added_for_http2_clients() {
        let mut r = request(&[]);
        Forwarded {
            peer: None,
            trusted: false,
            format: ForwardedFor::Ip,
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
    fn trusted_proxies_keep_and_extend_forwarding_headers() {
        let mut r = request(&[
            ("Host", "www.example.com"),
            ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Real-IP", "203.0.113.7"),
        ]);
        Forwarded {
            peer: Some("10.0.0.3:41000".parse().unwrap()),
            trusted: true,
            format: ForwardedFor::IpPort,
            local_port: Some(8080),
            tls: false,
            authority: "www.example.com",
            request_id: "id",
        }
        .apply(&mut r)
        .unwrap();
        assert_eq!(
            values(&r, "x-forwarded-for"),
            ["203.0.113.7, 10.0.0.2, 10.0.0.3:41000"]
        );
        assert_eq!(values(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&r, "x-forwarded-port"), ["443"]);
        assert_eq!(values(&r, "x-forwarded-host"), ["public.example"]);
        assert_eq!(
            values(&r, "x-real-ip"),
            ["203.0.113.7"],
            "kept from a trusted proxy"
        );
    }

    #[test]
    fn the_forwarded_client_is_the_last_untrusted_hop() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let r = request(&[(
            "X-Forwarded-For",
            "198.51.100.1, 203.0.113.7:5000, 10.0.0.2",
        )]);
        assert_eq!(
            forwarded_client(&r, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        let r = request(&[("X-Forwarded-For", "10.0.0.9")]);
        assert_eq!(
            forwarded_client(&r, &trusted),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(forwarded_client(&request(&[]), &trusted), None);
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_request_id());
    }
}
