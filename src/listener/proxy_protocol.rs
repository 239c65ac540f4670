//! The PROXY protocol (v1 text and v2 binary) in front of HTTP or TLS: an L4 load balancer
//! tells who the client is. On a listener with `proxy_protocol: true` a connection without a
//! valid header is closed without a response; the address in the header becomes the client
//! address for X-Forwarded-For, logs and `ip_hash`.

use super::BindIndex;
use async_trait::async_trait;
use log::debug;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, UniqueID};
use pingora::{Error, ErrorType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a connection may take to send its PROXY header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (addresses plus TLVs).
const V2_MAX: usize = 4096;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Neither a v1 nor a v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that does not follow the specification.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection ended or failed first.
    #[error("connection ended before the PROXY header was complete")]
    Truncated,
}

/// Reads one PROXY header; `Ok(None)` for LOCAL or UNKNOWN (health checks of the balancer),
/// which keep the connection's own address.
pub async fn read_header<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 12];
    s.read_exact(&mut start[..5])
        .await
        .map_err(|_| ProxyHeaderError::Truncated)?;
    if &start[..5] == b"PROXY" {
        return read_v1(s).await;
    }
    if start[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyHeaderError::Missing);
    }
    s.read_exact(&mut start[5..])
        .await
        .map_err(|_| ProxyHeaderError::Truncated)?;
    if start != V2_SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    read_v2(s).await
}

async fn read_v1<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    // Byte by byte: nothing after the CRLF may be consumed, it belongs to TLS or HTTP.
    let mut line = b"PROXY".to_vec();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        s.read_exact(&mut byte)
            .await
            .map_err(|_| ProxyHeaderError::Truncated)?;
        line.push(byte[0]);
    }
    parse_v1(&line)
}

/// Parses a complete v1 line, CRLF included.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| ProxyHeaderError::Malformed("v1 line is not ASCII"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(ProxyHeaderError::Malformed("v1 line without CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::Missing);
    }
    let family = parts
        .next()
        .ok_or(ProxyHeaderError::Malformed("v1 line without protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields.as_slice() else {
        return Err(ProxyHeaderError::Malformed(
            "v1 line needs 4 address fields",
        ));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyHeaderError::Malformed("bad TCP4 source address"))?,
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyHeaderError::Malformed("bad TCP6 source address"))?,
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let port: u16 = sport
        .parse()
        .map_err(|_| ProxyHeaderError::Malformed("bad source port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

async fn read_v2<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|_| ProxyHeaderError::Truncated)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len > V2_MAX {
        return Err(ProxyHeaderError::Malformed(
            "v2 header longer than 4096 bytes",
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .await
        .map_err(|_| ProxyHeaderError::Truncated)?;
    parse_v2(head[0], head[1], &body)
}

/// Parses a v2 header from its version/command byte, family byte and address block.
pub fn parse_v2(
    ver_cmd: u8,
    family: u8,
    body: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    }
    let short = ProxyHeaderError::Malformed("v2 address block too short");
    match family >> 4 {
        1 => {
            let b = body.get(..12).ok_or(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        2 => {
            let b = body.get(..36).ok_or(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)))
        }
        // AF_UNSPEC and AF_UNIX carry no IP client address.
        0 | 3 => Ok(None),
        _ => Err(ProxyHeaderError::Malformed("unknown v2 address family")),
    }
}

/// Which sockets expect a PROXY header; reads it before TLS, or before HTTP on plain listeners.
#[derive(Debug, Clone)]
pub struct ProxyProtocolGate {
    binds: BindIndex,
}

impl ProxyProtocolGate {
    /// A gate for the given sockets.
    pub fn new(binds: BindIndex) -> ProxyProtocolGate {
        ProxyProtocolGate { binds }
    }

    /// Whether any socket expects the header.
    pub fn is_empty(&self) -> bool {
        self.binds.is_empty()
    }

    pub(super) fn expects(&self, digest: Option<Arc<SocketDigest>>) -> bool {
        let local = digest.and_then(|d| d.local_addr().and_then(PingoraAddr::as_inet).copied());
        local.is_some_and(|l| self.binds.lookup(l).is_some())
    }

    /// Reads the header and records the client address as the connection's peer.
    pub(super) async fn accept<S>(&self, stream: &mut S, fd: i32) -> Result<(), ProxyHeaderError>
    where
        S: AsyncRead + GetSocketDigest + Unpin + ?Sized,
    {
        let client = tokio::time::timeout(HEADER_TIMEOUT, read_header(stream))
            .await
            .map_err(|_| ProxyHeaderError::Truncated)??;
        if let Some(client) = client {
            let digest = SocketDigest::from_raw_fd(fd);
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(client)));
            stream.set_socket_digest(digest);
        }
        Ok(())
    }
}

#[async_trait]
impl PreTlsProcess for ProxyProtocolGate {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        if !self.expects(stream.get_socket_digest()) {
            return Ok(());
        }
        let fd = stream.id();
        self.accept(stream, fd).await.map_err(|e| {
            debug!("closing connection: {e}");
            Error::because(ErrorType::ReadError, "PROXY protocol", e).into_down()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn v1_headers_give_the_client_address_and_consume_only_the_line() {
        let mut input: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let client = read_header(&mut input).await.unwrap();
        assert_eq!(client, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(input, b"GET / HTTP/1.1\r\n");
        let mut v6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 443\r\n";
        assert_eq!(
            read_header(&mut v6).await.unwrap(),
            Some("[2001:db8::1]:1000".parse().unwrap())
        );
        let mut unknown: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(read_header(&mut unknown).await.unwrap(), None);
    }

    #[tokio::test]
    async fn v2_headers_give_the_client_address_and_skip_tlvs() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 15]);
        h.extend_from_slice(&[203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb]);
        h.extend_from_slice(&[0x04, 0, 0]); // an empty TLV
        h.extend_from_slice(b"rest");
        let mut input = h.as_slice();
        assert_eq!(
            read_header(&mut input).await.unwrap(),
            Some("203.0.113.9:8080".parse().unwrap())
        );
        assert_eq!(input, b"rest");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read_header(&mut local.as_slice()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        for bad in [
            b"GET / HTTP/1.1\r\n\r\n".as_slice(),
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 nope 1.2.3.4 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c000000000000",
            b"PROXY TCP4 1.2.3.4",
        ] {
            let mut input = bad;
            assert!(
                read_header(&mut input).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(read_header(&mut long.as_slice()).await.is_err());
    }
}
