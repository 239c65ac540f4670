//! Client certificates at the front door (`tls.client_auth`): a listener that requires them
//! lets a client finish its handshake only with a certificate that chains to the configured
//! CA, or whose public key is pinned, or both when both are set — the same two trust rules
//! pinion applies to backends. A refused client gets a TLS alert; nothing it sends is read.

use crate::tls::{Pin, PinSet};
use log::info;
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::ssl::{SslRef, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Ref, X509StoreContextRef, X509VerifyResult, X509};
use std::fmt;
use std::sync::Arc;

/// Default for `client_auth.verify_depth`: intermediates allowed between the client's
/// certificate and the CA (nginx's `ssl_verify_depth` default is 1; 2 allows one more level).
pub const DEFAULT_VERIFY_DEPTH: u32 = 2;

/// OpenSSL's `X509_V_ERR_CERT_NOT_YET_VALID` and `X509_V_ERR_CERT_HAS_EXPIRED` (x509_vfy.h):
/// a certificate outside its validity is refused even where only a pin decides.
const CERT_NOT_YET_VALID: i32 = 9;
const CERT_HAS_EXPIRED: i32 = 10;

/// What a listener asks of its clients' certificates.
pub struct ClientAuth {
    /// Trusted roots for the client's chain; `None` when only pins decide.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Client keys let in; empty when only the CA decides.
    pub pins: PinSet,
    /// Certificates allowed between the client's and a trusted root.
    pub verify_depth: u32,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("pins", &self.pins)
            .field("verify_depth", &self.verify_depth)
            .finish()
    }
}

impl ClientAuth {
    /// Makes the handshake on `ssl` require a client certificate that passes [`Self::verdict`].
    /// The verify mode is set first, so that a failure to set up the CA store still refuses
    /// every client (fail closed).
    pub fn require(self: &Arc<Self>, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        let policy = self.clone();
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |preverified, ctx| policy.verdict(preverified, ctx),
        );
        ssl.param_mut()
            .set_depth(i32::try_from(self.verify_depth).unwrap_or(i32::MAX));
        let mut store = X509StoreBuilder::new()?;
        for cert in self.ca.iter().flat_map(|c| c.iter()) {
            store.add_cert(cert.clone())?;
        }
        ssl.set_verify_cert_store(store.build())
    }

    /// OpenSSL's question for each certificate of the client's chain (and each problem with
    /// it): may the handshake go on? The chain must verify against the CA when one is set; the
    /// client's own certificate must be valid now and, when pins are set, carry a pinned key.
    fn verdict(&self, preverified: bool, ctx: &mut X509StoreContextRef) -> bool {
        let error = ctx.error();
        let depth = ctx.error_depth();
        let out_of_date = [CERT_NOT_YET_VALID, CERT_HAS_EXPIRED].contains(&error.as_raw());
        if !preverified && (self.ca.is_some() || out_of_date) {
            info!(
                "client certificate refused at depth {depth}: {}",
                error.error_string()
            );
            return false;
        }
        if depth != 0 {
            return true;
        }
        match ctx.current_cert().map(|c| self.pinned(c)) {
            Some(Ok(())) => true,
            Some(Err(why)) => {
                info!("client certificate refused: {why}");
                false
            }
            None => {
                info!("client certificate refused: OpenSSL gave no certificate to check");
                false
            }
        }
    }

    /// Whether `cert`'s key is pinned (always, without pins).
    fn pinned(&self, cert: &X509Ref) -> Result<(), String> {
        if self.pins.is_empty() {
            return Ok(());
        }
        match Pin::of_cert(cert) {
            Ok(pin) if self.pins.contains(&pin) => Ok(()),
            Ok(pin) => Err(format!("its key {pin} is not pinned")),
            Err(e) => Err(format!("its public key cannot be read: {e}")),
        }
    }

    /// Checks an established connection once more, resumed sessions included (they skip the
    /// certificate exchange): a certificate must have been presented, its chain verified when a
    /// CA is set, its key pinned when pins are set, and it must still be valid.
    pub fn established(&self, ssl: &SslRef) -> Result<(), String> {
        let cert = ssl
            .peer_certificate()
            .ok_or_else(|| "no client certificate".to_owned())?;
        if self.ca.is_some() && ssl.verify_result() != X509VerifyResult::OK {
            return Err(format!(
                "its chain did not verify: {}",
                ssl.verify_result().error_string()
            ));
        }
        self.pinned(&cert)?;
        let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
        if cert.not_after() < now || cert.not_before() > now {
            return Err("it is outside its validity period".to_owned());
        }
        Ok(())
    }
}

/// What the handshake of a client on a listener with `client_auth` came to, kept with the
/// connection (Pingora's TLS digest extension): the proxy closes a connection whose client
/// was not accepted before reading anything from it.
#[derive(Debug, Clone, Copy)]
pub struct ClientCheck {
    /// The client's certificate passed [`ClientAuth::established`].
    pub accepted: bool,
}
