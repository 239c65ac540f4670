//! `pools[].h2c`, `pools[].tls.http2` and `pools[].max_streams_per_connection`: the HTTP
//! version spoken to a pool's servers.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawPool;
use crate::upstream::{HttpVersion, UpstreamHttp};

impl Validator<'_> {
    pub(super) fn upstream_http(&mut self, raw: &RawPool, path: &KeyPath) -> UpstreamHttp {
        let tls_choice = raw.tls.as_ref().and_then(|t| t.http2.as_ref());
        let mut version = self.choice(
            path.key("tls").key("http2"),
            tls_choice.map(|w| w.0.as_str()),
            &[
                ("false", HttpVersion::H1),
                ("true", HttpVersion::H2),
                ("auto", HttpVersion::Auto),
            ],
            HttpVersion::H1,
            "true, false or auto",
        );
        match (raw.h2c, raw.tls.is_some()) {
            (Some(true), true) => self.err(path.key("h2c"), Problem::H2cWithTls),
            (Some(true), false) => version = HttpVersion::H2,
            _ => {}
        }
        let max_streams = self.number(
            path.key("max_streams_per_connection"),
            raw.max_streams_per_connection,
            100,
            1..=10_000,
            "1 to 10000 streams",
        );
        UpstreamHttp {
            version,
            max_streams: usize::try_from(max_streams).unwrap_or(100),
        }
    }
}
