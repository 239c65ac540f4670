//! Verifying a presented chain up to a pinned key (`scope: chain` pins).
//!
//! OpenSSL does the path validation: the pinned certificate is the only trust anchor of a
//! store with `X509_V_FLAG_PARTIAL_CHAIN`, the rest of what the server sent is untrusted
//! material. So signatures are checked from the leaf up to the pinned key, every certificate's
//! dates are checked, and issuers must be CAs allowed to sign certificates; a pinned
//! intermediate sent beside a leaf it did not sign verifies nothing.

use super::whitelist::PathKey;
use super::{name_matches, names_of, Pin};
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Ref, X509StoreContext, X509};

/// Deepest chain considered; far beyond any real one.
const MAX_DEPTH: usize = 16;

/// Of `anchors` (each chain pin's key, with the certificate it was read from when known), the
/// keys that the presented chain verifies up to, each with its depth (0 = the leaf).
pub fn verified_anchors(
    leaf: &X509Ref,
    chain: Option<&StackRef<X509>>,
    anchors: &[(Pin, Option<X509>)],
) -> Vec<PathKey> {
    let presented: Vec<(Pin, &X509Ref)> = std::iter::once(leaf)
        .chain(chain.into_iter().flat_map(|c| c.iter()))
        .take(MAX_DEPTH)
        .filter_map(|c| Pin::of_cert(c).ok().map(|p| (p, c)))
        .collect();
    let mut out = Vec::new();
    for (pin, file_cert) in anchors {
        let trusted: Vec<&X509Ref> = presented
            .iter()
            .filter(|(p, _)| p == pin)
            .map(|(_, c)| *c)
            .chain(file_cert.as_deref())
            .collect();
        if trusted.is_empty() {
            continue;
        }
        if let Some(top) = verify_to(leaf, chain, &trusted) {
            out.push(PathKey {
                pin: *pin,
                depth: u8::try_from(top).unwrap_or(u8::MAX),
            });
        }
    }
    out
}

/// The depth of the trusted certificate the chain from `leaf` verifies up to, if it does.
fn verify_to(
    leaf: &X509Ref,
    chain: Option<&StackRef<X509>>,
    trusted: &[&X509Ref],
) -> Option<usize> {
    let mut store = X509StoreBuilder::new().ok()?;
    for cert in trusted {
        store.add_cert((*cert).to_owned()).ok()?;
    }
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN).ok()?;
    let store = store.build();
    let mut untrusted = Stack::new().ok()?;
    for cert in chain.into_iter().flat_map(|c| c.iter()).take(MAX_DEPTH) {
        untrusted.push(cert.to_owned()).ok()?;
    }
    let mut ctx = X509StoreContext::new().ok()?;
    ctx.init(&store, leaf, &untrusted, |c| {
        let ok = c.verify_cert()?;
        Ok(ok.then(|| c.chain().map_or(0, |built| built.len().saturating_sub(1))))
    })
    .ok()
    .flatten()
}

/// Whether the leaf's names cover `host` (DNS names of its SAN, else its CN).
pub fn name_ok(leaf: &X509Ref, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names_of(leaf).iter().any(|n| name_matches(n, &host))
}

/// One certificate of a presented chain, for diagnostics and pin proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainKey {
    /// Its key's pin.
    pub pin: Pin,
    /// Its subject, `CN=..., O=...`.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its `notAfter` as OpenSSL prints it.
    pub not_after: String,
    /// Its depth on the path that verifies from the leaf (0 = the leaf), `None` when the
    /// leaf's chain does not verify up to it.
    pub depth: Option<u8>,
}

/// Every certificate the server presented, leaf first, with its depth on the verified path.
pub fn describe(leaf: &X509Ref, chain: Option<&StackRef<X509>>) -> Vec<ChainKey> {
    let mut out = Vec::new();
    let others = chain.into_iter().flat_map(|c| c.iter());
    for (i, cert) in std::iter::once(leaf)
        .chain(others)
        .take(MAX_DEPTH)
        .enumerate()
    {
        let Ok(pin) = Pin::of_cert(cert) else {
            continue;
        };
        if i > 0
            && out
                .iter()
                .any(|k: &ChainKey| k.pin == pin && k.depth == Some(0))
        {
            continue; // the leaf again, as the first entry of the chain
        }
        let depth = if i == 0 {
            Some(0)
        } else {
            verify_to(leaf, chain, &[cert]).and_then(|d| u8::try_from(d).ok())
        };
        out.push(ChainKey {
            pin,
            subject: dn(cert.subject_name()),
            issuer: dn(cert.issuer_name()),
            not_after: cert.not_after().to_string(),
            depth,
        });
    }
    out
}

/// A distinguished name as `CN=api.internal, O=Example`.
pub fn dn(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::certs::{Ca, Identity};
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::X509Builder;

    fn stack(certs: &[&X509]) -> Stack<X509> {
        let mut s = Stack::new().unwrap();
        for c in certs {
            s.push((*c).clone()).unwrap();
        }
        s
    }

    fn pin(c: &X509Ref) -> Pin {
        Pin::of_cert(c).unwrap()
    }

    #[test]
    fn a_leaf_verifies_up_to_its_pinned_intermediate_and_root() {
        let root = Ca::new("Root").unwrap();
        let int = root.intermediate("Issuing").unwrap();
        let leaf = int.issue(&["api.internal"]).unwrap();
        let sent = stack(&[&leaf.cert, &int.identity.cert]);
        let anchors = vec![(pin(&int.identity.cert), None)];
        let path = verified_anchors(&leaf.cert, Some(&sent), &anchors);
        assert_eq!(
            path,
            vec![PathKey {
                pin: pin(&int.identity.cert),
                depth: 1
            }]
        );
        // The root is not sent: its pin matches only with its certificate from a file.
        let root_pin = pin(&root.identity.cert);
        assert!(verified_anchors(&leaf.cert, Some(&sent), &[(root_pin, None)]).is_empty());
        let with_file = [(root_pin, Some(root.identity.cert.clone()))];
        assert_eq!(
            verified_anchors(&leaf.cert, Some(&sent), &with_file)[0].depth,
            2
        );
    }

    #[test]
    fn a_pinned_intermediate_sent_beside_a_leaf_it_did_not_sign_verifies_nothing() {
        let root = Ca::new("Root").unwrap();
        let pinned = root.intermediate("Pinned").unwrap();
        let other = Ca::new("Other").unwrap().intermediate("Other").unwrap();
        let leaf = other.issue(&["api.internal"]).unwrap();
        let sent = stack(&[&leaf.cert, &pinned.identity.cert]);
        let anchors = vec![(pin(&pinned.identity.cert), None)];
        assert!(verified_anchors(&leaf.cert, Some(&sent), &anchors).is_empty());
        // A self-signed leaf with the pinned name as issuer does not verify either.
        let fake = Identity::self_signed(&["api.internal"]).unwrap();
        assert!(verified_anchors(&fake.cert, Some(&sent), &anchors).is_empty());
    }

    #[test]
    fn an_expired_intermediate_breaks_the_path() {
        let root = Ca::new("Root").unwrap();
        let key = root.identity.key.clone();
        // An intermediate whose validity ended yesterday, with its own key.
        let int_key = Identity::self_signed(&["x"]).unwrap().key;
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Expired").unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(root.identity.cert.subject_name())
            .unwrap();
        b.set_pubkey(&int_key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        let past = Asn1Time::from_unix(crate::upstream::unix_now() - 86_400).unwrap();
        b.set_not_after(&past).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let expired = Ca {
            identity: Identity {
                cert: b.build(),
                key: int_key,
            },
        };
        let leaf = expired.issue(&["api.internal"]).unwrap();
        let sent = stack(&[&leaf.cert, &expired.identity.cert]);
        let anchors = vec![(pin(&expired.identity.cert), None)];
        assert!(verified_anchors(&leaf.cert, Some(&sent), &anchors).is_empty());
        let root_anchor = [(pin(&root.identity.cert), Some(root.identity.cert.clone()))];
        assert!(verified_anchors(&leaf.cert, Some(&sent), &root_anchor).is_empty());
    }

    #[test]
    fn describe_marks_the_depth_of_each_sent_certificate_on_the_path() {
        let root = Ca::new("Root").unwrap();
        let int = root.intermediate("Issuing").unwrap();
        let stray = Ca::new("Stray").unwrap();
        let leaf = int.issue(&["api.internal"]).unwrap();
        let sent = stack(&[&leaf.cert, &int.identity.cert, &stray.identity.cert]);
        let keys = describe(&leaf.cert, Some(&sent));
        let depths: Vec<Option<u8>> = keys.iter().map(|k| k.depth).collect();
        assert_eq!(depths, vec![Some(0), Some(1), None]);
        assert_eq!(keys[1].subject, "CN=Issuing");
        assert_eq!(keys[1].issuer, "CN=Root");
    }

    #[test]
    fn names_follow_the_san_with_wildcards() {
        let leaf = Identity::self_signed(&["*.svc.internal", "api.internal"]).unwrap();
        assert!(name_ok(&leaf.cert, "a.svc.internal"));
        assert!(name_ok(&leaf.cert, "API.internal"));
        assert!(!name_ok(&leaf.cert, "other.internal"));
    }
}
