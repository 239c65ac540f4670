// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::protocols::digest::TimingDigest;
use crate::protocols::tls::{SslDigest, ALPN};
use crate::protocols::{Peek, Ssl, UniqueID, UniqueIDType};
use crate::tls::{self, ssl, tokio_ssl::SslStream as InnerSsl};
use crate::utils::tls::{get_organization, get_serial};
use log::warn;
use pingora_error::{ErrorType::*, OrErr, Result};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::io::{self, AsyncRead, AsyncWrite, ReadBuf};

#[cfg(feature = "boringssl")]
use pingora_boringssl as ssl_lib;

#[cfg(feature = "openssl")]
use pingora_openssl as ssl_lib;

use ssl_lib::{hash::MessageDigest, ssl::SslRef};

/// The TLS connection
#[derive(Debug)]
pub struct SslStream<T> {
    ssl: InnerSsl<T>,
    digest: Option<Arc<SslDigest>>,
    pub(super) timing: TimingDigest,
    /// Plaintext of small writes not yet given to the TLS library (see `poll_write`); empty,
    /// and without an allocation, whenever the stream is flushed.
    write_buf: Vec<u8>,
}

/// Writes up to this size are gathered into one TLS record until the stream is flushed.
const WRITE_COALESCE: usize = 4096;

impl<T> SslStream<T>
where
    T: AsyncRead + AsyncWrite + std::marker::Unpin,
{
    /// Create a new TLS connection from the given `stream`
    ///
    /// The caller needs to perform [`Self::connect()`] or [`Self::accept()`] to perform TLS
    /// handshake after.
    pub fn new(ssl: ssl::Ssl, stream: T) -> Result<Self> {
        let ssl = InnerSsl::new(ssl, stream)
            .explain_err(TLSHandshakeFailure, |e| format!("ssl stream error: {e}"))?;

        Ok(SslStream {
            ssl,
            digest: None,
            timing: Default::default(),
            write_buf: Vec::new(),
        })
    }

    /// Connect to the remote TLS server as a client
    pub async fn connect(&mut self) -> Result<(), ssl::Error> {
        Self::clear_error();
        let handshake_start = Instant::now();
        Pin::new(&mut self.ssl).connect().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = Some(Arc::new(SslDigest::from_ssl(self.ssl())));
        Ok(())
    }

    /// Finish the TLS handshake from client as a server
    pub async fn accept(&mut self) -> Result<(), ssl::Error> {
        Self::clear_error();
        let handshake_start = Instant::now();
        Pin::new(&mut self.ssl).accept().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = Some(Arc::new(SslDigest::from_ssl(self.ssl())));
        Ok(())
    }

    #[inline]
    fn clear_error() {
        let errs = tls::error::ErrorStack::get();
        if !errs.errors().is_empty() {
            warn!("Clearing dirty TLS error stack: {}", errs);
        }
    }
}

impl<T> SslStream<T> {
    pub fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.digest.clone()
    }

    /// Attempts to obtain a mutable reference to the SslDigest.
    /// This method returns `None` if the SslDigest is currently held by other references.
    pub(crate) fn ssl_digest_mut(&mut self) -> Option<&mut SslDigest> {
        Arc::get_mut(self.digest.as_mut()?)
    }
}

use std::ops::{Deref, DerefMut};

impl<T> Deref for SslStream<T> {
    type Target = InnerSsl<T>;

    fn deref(&self) -> &Self::Target {
        &self.ssl
    }
}

impl<T> DerefMut for SslStream<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ssl
    }
}

impl<T> AsyncRead for SslStream<T>
where
    T: AsyncRead + AsyncWrite + Peek + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // With nothing buffered in the TLS library and nothing arrived on the transport since
        // its last read found nothing, a TLS read can only fail with "would block", after
        // setting up its record buffer (allocated again on every read when buffers are
        // released while idle) and draining the error queue twice. Waiting on the transport's
        // readiness instead registers the same waker at a fraction of the cost.
        if !has_pending(self.ssl.ssl()) {
            // An error of the readiness poll is left to the read to report.
            if self.ssl.get_ref().poll_read_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_read(cx, buf)
    }
}

extern "C" {
    // Declared here because openssl-sys does not bind it (OpenSSL 1.1.0 and later, BoringSSL).
    fn SSL_has_pending(ssl: *const std::ffi::c_void) -> std::ffi::c_int;
}

/// Whether the TLS library holds read data, decrypted or not yet processed.
fn has_pending(ssl: &SslRef) -> bool {
    use foreign_types::ForeignTypeRef;
    // Safety: `ssl` is a valid SSL object for as long as the reference lives, and
    // SSL_has_pending only reads it.
    unsafe { SSL_has_pending(ssl.as_ptr() as *const std::ffi::c_void) == 1 }
}

impl<T> SslStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Gives the gathered small writes to the TLS library, as one record.
    fn poll_write_gathered(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        while !self.write_buf.is_empty() {
            Self::clear_error();
            match Pin::new(&mut self.ssl).poll_write(cx, &self.write_buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.write_buf.drain(..n.min(self.write_buf.len()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // An idle connection keeps no write buffer.
        self.write_buf = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Makes room for a write of `len` bytes, giving the gathered ones to the TLS library when
    /// both would not fit; `true` when the write is small enough to be gathered.
    fn poll_room_for(&mut self, cx: &mut Context, len: usize) -> Poll<io::Result<bool>> {
        if self.write_buf.len() + len > WRITE_COALESCE {
            ready!(self.poll_write_gathered(cx))?;
        }
        Poll::Ready(Ok(len < WRITE_COALESCE))
    }
}

impl<T> AsyncWrite for SslStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Small writes are gathered until the stream is flushed or the next write would not fit,
    /// so that a response header and a short body, written one after the other, become one
    /// TLS record (one encryption and one record header instead of two) — what a write buffer
    /// in front of TLS does in other servers. Like the transport's own write buffer below,
    /// this relies on writers flushing before they wait for the peer.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if ready!(this.poll_room_for(cx, buf.len()))? {
            this.write_buf.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Self::clear_error();
        Pin::new(&mut this.ssl).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        ready!(self.poll_write_gathered(cx))?;
        // No TLS call here: flushing only flushes the transport below, so the error queue
        // (which only TLS calls consult) need not be drained.
        Pin::new(&mut self.ssl).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        ready!(self.poll_write_gathered(cx))?;
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let this = &mut *self;
        if ready!(this.poll_room_for(cx, total))? {
            for b in bufs {
                this.write_buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        Self::clear_error();
        Pin::new(&mut this.ssl).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl<T> UniqueID for SslStream<T>
where
    T: UniqueID,
{
    fn id(&self) -> UniqueIDType {
        self.ssl.get_ref().id()
    }
}

impl<T> Ssl for SslStream<T> {
    fn get_ssl(&self) -> Option<&ssl::SslRef> {
        Some(self.ssl())
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.ssl_digest()
    }

    /// Return selected ALPN if any
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        let ssl = self.get_ssl()?;
        ALPN::from_wire_selected(ssl.selected_alpn_protocol()?)
    }
}

impl SslDigest {
    pub fn from_ssl(ssl: &SslRef) -> Self {
        let cipher = match ssl.current_cipher() {
            Some(c) => c.name(),
            None => "",
        };

        let (cert_digest, org, sn) = match ssl.peer_certificate() {
            Some(cert) => {
                let cert_digest = match cert.digest(MessageDigest::sha256()) {
                    Ok(c) => c.as_ref().to_vec(),
                    Err(_) => Vec::new(),
                };
                (cert_digest, get_organization(&cert), get_serial(&cert).ok())
            }
            None => (Vec::new(), None, None),
        };

        SslDigest::new(cipher, ssl.version_str(), org, sn, cert_digest)
    }
}

// TODO: implement Peek if needed
impl<T> Peek for SslStream<T> {}
