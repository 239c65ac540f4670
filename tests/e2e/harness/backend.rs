//! Recording backends on 127.0.0.1:0 (the library's loopback origin).

use super::certs::Identity;
use pinion::demo::backend as lib;
use std::ops::Deref;

/// A running backend.
pub struct Backend {
    inner: lib::Backend,
    pub port: u16,
}

impl Backend {
    /// An HTTPS backend presenting `identity`.
    pub fn https(name: &str, identity: &Identity) -> Backend {
        Backend::wrap(lib::Backend::https(name, identity, "127.0.0.1:0").unwrap())
    }

    /// An HTTPS backend presenting `identity` followed by `chain` (the leaf's issuer first).
    pub fn https_chain(name: &str, identity: &Identity, chain: &[&openssl::x509::X509]) -> Backend {
        let chain: Vec<openssl::x509::X509> = chain.iter().map(|c| (*c).clone()).collect();
        Backend::wrap(
            lib::Backend::https_with_chain(name, identity, &chain, "127.0.0.1:0").unwrap(),
        )
    }

    /// An HTTPS backend presenting `identity` on `bind` (e.g. `127.0.0.2:PORT`).
    pub fn https_at(name: &str, identity: &Identity, bind: &str) -> Backend {
        Backend::wrap(lib::Backend::https(name, identity, bind).unwrap())
    }

    /// A plain-HTTP backend.
    pub fn plain(name: &str) -> Backend {
        Backend::wrap(lib::Backend::plain(name, "127.0.0.1:0").unwrap())
    }

    fn wrap(inner: lib::Backend) -> Backend {
        let port = inner.port();
        Backend { inner, port }
    }
}

impl Backend {
    /// Requests received so far, without the gateway's health probes.
    pub fn requests(&self) -> Vec<lib::Recorded> {
        self.inner
            .requests()
            .into_iter()
            .filter(|r| r.header("user-agent") != Some("pinion-probe"))
            .collect()
    }

    /// Every request received, probes included.
    pub fn inner_requests(&self) -> Vec<lib::Recorded> {
        self.inner.requests()
    }

    /// Health probes received so far.
    pub fn probes(&self) -> usize {
        self.inner.requests().len() - self.requests().len()
    }
}

impl Deref for Backend {
    type Target = lib::Backend;
    fn deref(&self) -> &lib::Backend {
        &self.inner
    }
}

/// The value of a header that must appear exactly once.
pub fn one<'a>(r: &'a lib::Recorded, name: &str) -> Option<&'a str> {
    let all = r.all(name);
    assert!(
        all.len() <= 1,
        "{name} appears {} times: {all:?}",
        all.len()
    );
    all.first().copied()
}
