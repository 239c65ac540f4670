//! Client certificates at the front door (`tls.client_auth`): a listener that requires them
//! lets a client finish its handshake only with a certificate that chains to the configured
//! CA, or whose public key is pinned, or both when both are set — the same two trust rules
//! pinion applies to backends. A refused client gets a TLS alert; nothing it sends is read.

use crate::tls::{Pin, PinSet};
use log::info;
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::ssl::{SslRef, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{
    CrlStatus, X509Crl, X509NameRef, X509Ref, X509StoreContextRef, X509VerifyResult, X509,
};
use std::fmt;
use std::sync::Arc;

/// Default for `client_auth.verify_depth`: intermediates allowed between the client's
/// certificate and the CA (nginx's `ssl_verify_depth` default is 1; 2 allows one more level).
pub const DEFAULT_VERIFY_DEPTH: u32 = 2;

/// OpenSSL's `X509_V_ERR_CERT_NOT_YET_VALID` and `X509_V_ERR_CERT_HAS_EXPIRED` (x509_vfy.h):
/// a certificate outside its validity is refused even where only a pin decides.
const CERT_NOT_YET_VALID: i32 = 9;
const CERT_HAS_EXPIRED: i32 = 10;

/// Why a client certificate was refused, as the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No certificate (counted where pinion sees it: resumed sessions, `optional` routes).
    NoCertificate,
    /// The chain does not verify against `ca`.
    Untrusted,
    /// The key is not on `pins`.
    NotPinned,
    /// Outside its validity period.
    Expired,
    /// Listed in one of `crl`'s revocation lists.
    Revoked,
}

impl Refusal {
    /// Every reason, in the order of the metric's slots.
    pub const ALL: [Refusal; 5] = [
        Refusal::NoCertificate,
        Refusal::Untrusted,
        Refusal::NotPinned,
        Refusal::Expired,
        Refusal::Revoked,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::Untrusted => "untrusted",
            Refusal::NotPinned => "not_pinned",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
        }
    }
}

/// Counts a refusal (the listener's metric).
pub type Report = Arc<dyn Fn(Refusal) + Send + Sync>;

/// Whether a client certificate is a condition of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// No acceptable certificate, no connection.
    Require,
    /// Asked for; the connection goes on without one (or with one that fails the checks), and
    /// routes with `client_certificate: required` answer 403.
    Optional,
}

/// What a listener asks of its clients' certificates.
pub struct ClientAuth {
    /// Whether the handshake requires the certificate.
    pub mode: ClientAuthMode,
    /// Pass the client's identity to backends in `X-Client-Cert*` headers.
    pub headers: bool,
    /// Also in Envoy's `X-Forwarded-Client-Cert` (replacing any the client or a proxy sent).
    pub xfcc: bool,
    /// Trusted roots for the client's chain; `None` when only pins decide.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Client keys let in; empty when only the CA decides.
    pub pins: PinSet,
    /// Certificates allowed between the client's and a trusted root.
    pub verify_depth: u32,
    /// Revocation lists: a certificate of the client's chain listed by its issuer's CRL is
    /// refused.
    pub crls: Vec<X509Crl>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("pins", &self.pins)
            .field("verify_depth", &self.verify_depth)
            .field("crls", &self.crls.len())
            .field("mode", &self.mode)
            .field("headers", &self.headers)
            .field("xfcc", &self.xfcc)
            .finish()
    }
}

impl ClientAuth {
    /// Makes the handshake on `ssl` ask for a client certificate; with `require`, one that
    /// passes [`Self::verdict`] is a condition of the handshake. The verify mode is set first,
    /// so that a failure to set up the CA store still refuses every client (fail closed).
    pub fn apply(self: &Arc<Self>, ssl: &mut SslRef, report: Report) -> Result<(), ErrorStack> {
        let policy = self.clone();
        match self.mode {
            ClientAuthMode::Require => ssl.set_verify_callback(
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                move |preverified, ctx| match policy.verdict(preverified, ctx) {
                    Ok(()) => true,
                    Err(why) => {
                        report(why);
                        false
                    }
                },
            ),
            // The handshake goes on whatever the certificate; `identify` judges it after.
            ClientAuthMode::Optional => ssl.set_verify_callback(SslVerifyMode::PEER, |_, _| true),
        }
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
    fn verdict(&self, preverified: bool, ctx: &mut X509StoreContextRef) -> Result<(), Refusal> {
        let error = ctx.error();
        let depth = ctx.error_depth();
        let out_of_date = [CERT_NOT_YET_VALID, CERT_HAS_EXPIRED].contains(&error.as_raw());
        if !preverified && (self.ca.is_some() || out_of_date) {
            info!(
                "client certificate refused at depth {depth}: {}",
                error.error_string()
            );
            return Err(if out_of_date {
                Refusal::Expired
            } else {
                Refusal::Untrusted
            });
        }
        if let Some(cert) = ctx.current_cert() {
            if let Err(why) = self.not_revoked(cert) {
                info!("client certificate refused at depth {depth}: {why}");
                return Err(Refusal::Revoked);
            }
        }
        if depth != 0 {
            return Ok(());
        }
        match ctx.current_cert().map(|c| self.pinned(c)) {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => {
                info!("client certificate refused: {why}");
                Err(Refusal::NotPinned)
            }
            None => {
                info!("client certificate refused: OpenSSL gave no certificate to check");
                Err(Refusal::NotPinned)
            }
        }
    }

    /// Whether a CRL of `cert`'s issuer lists it.
    fn not_revoked(&self, cert: &X509Ref) -> Result<(), String> {
        let issuer = cert.issuer_name();
        let listed = self.crls.iter().any(|crl| {
            crl.issuer_name()
                .try_cmp(issuer)
                .is_ok_and(|o| o == std::cmp::Ordering::Equal)
                && matches!(
                    crl.get_by_serial(cert.serial_number()),
                    CrlStatus::Revoked(_)
                )
        });
        if listed {
            Err(format!("serial {} is revoked", serial_hex(cert)))
        } else {
            Ok(())
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
    pub fn established(&self, ssl: &SslRef) -> Result<(), (Refusal, String)> {
        let cert = ssl
            .peer_certificate()
            .ok_or_else(|| (Refusal::NoCertificate, "no client certificate".to_owned()))?;
        if self.ca.is_some() && ssl.verify_result() != X509VerifyResult::OK {
            return Err((
                Refusal::Untrusted,
                format!(
                    "its chain did not verify: {}",
                    ssl.verify_result().error_string()
                ),
            ));
        }
        self.pinned(&cert)
            .map_err(|why| (Refusal::NotPinned, why))?;
        self.not_revoked(&cert)
            .map_err(|why| (Refusal::Revoked, why))?;
        let now = Asn1Time::days_from_now(0).map_err(|e| (Refusal::Expired, e.to_string()))?;
        if cert.not_after() < now || cert.not_before() > now {
            return Err((
                Refusal::Expired,
                "it is outside its validity period".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A client's certificate as the handshake left it, kept with the connection (Pingora's TLS
/// digest extension) for the proxy: whether it passed the checks, and what backends are told.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// `None` when the client presented no certificate; the refusal reason when it failed.
    pub verdict: Result<(), Option<String>>,
    /// Why it failed, for the metric.
    pub refusal: Option<Refusal>,
    /// What the certificate says, when there is one.
    pub certificate: Option<Presented>,
}

/// The fields of a presented client certificate, formatted as nginx's `$ssl_client_*`.
#[derive(Debug, Clone)]
pub struct Presented {
    /// Subject, RFC 2253 (`CN=alice,O=Example`).
    pub subject: String,
    /// Issuer, RFC 2253.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// End of validity (`Nov 29 07:00:00 2026 GMT`).
    pub not_after: String,
    /// SHA-256 of the SubjectPublicKeyInfo, base64, as `pinion pin` prints it.
    pub pin: String,
    /// The PEM certificate, percent-encoded (nginx's `$ssl_client_escaped_cert`).
    pub escaped_pem: String,
    /// SHA-256 of the DER certificate, lower-case hex (Envoy's XFCC `Hash`).
    pub hash: String,
}

impl Presented {
    /// The `X-Forwarded-Client-Cert` element Envoy writes for this certificate.
    pub fn xfcc(&self) -> String {
        let quoted = self.subject.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "Hash={};Cert=\"{}\";Subject=\"{quoted}\"",
            self.hash, self.escaped_pem
        )
    }
}

impl ClientIdentity {
    /// Whether a certificate came and passed the checks.
    pub fn verified(&self) -> bool {
        self.verdict.is_ok()
    }

    /// `SUCCESS`, `NONE` or `FAILED:<reason>`, as in `X-Client-Cert-Verify`.
    pub fn verify_label(&self) -> String {
        match &self.verdict {
            Ok(()) => "SUCCESS".to_owned(),
            Err(None) => "NONE".to_owned(),
            Err(Some(why)) => format!("FAILED:{why}"),
        }
    }
}

impl ClientAuth {
    /// Judges and describes the client of an established connection (resumed sessions too,
    /// which skip the certificate exchange).
    pub fn identify(&self, ssl: &SslRef) -> ClientIdentity {
        let certificate = ssl.peer_certificate();
        let (verdict, refusal) = match (&certificate, self.established(ssl)) {
            (_, Ok(())) => (Ok(()), None),
            (None, Err((why, _))) => (Err(None), Some(why)),
            (Some(_), Err((why, text))) => (Err(Some(text)), Some(why)),
        };
        ClientIdentity {
            verdict,
            refusal,
            certificate: certificate.as_deref().map(describe),
        }
    }
}

fn describe(cert: &X509Ref) -> Presented {
    let pem = cert
        .to_pem()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    Presented {
        subject: rfc2253(cert.subject_name()),
        issuer: rfc2253(cert.issuer_name()),
        serial: serial_hex(cert),
        not_after: cert.not_after().to_string(),
        pin: Pin::of_cert(cert)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        escaped_pem: percent_encode(&pem),
        hash: cert
            .digest(MessageDigest::sha256())
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default(),
    }
}

fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|n| n.to_hex_str().map(|h| h.to_string()))
        .unwrap_or_default()
}

/// A distinguished name as RFC 2253 writes it: last entry first, `,` between, with `,`, `+`,
/// `"`, `\`, `<`, `>`, `;` escaped; characters a header cannot carry become `?`.
fn rfc2253(name: &X509NameRef) -> String {
    let mut out = String::new();
    for entry in name.entries().collect::<Vec<_>>().iter().rev() {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(entry.object().nid().short_name().unwrap_or("?"));
        out.push('=');
        let value = entry.data().to_string().unwrap_or_default();
        for c in value.chars() {
            if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
                out.push('\\');
            }
            out.push(if c.is_control() { '?' } else { c });
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}
