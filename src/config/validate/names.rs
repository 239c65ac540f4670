//! Server names: how a pool resolves them, and the one lookup made while loading.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawPool;
use crate::config::{PoolConfig, Resolution, ResolveOnStart};
use std::net::SocketAddr;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn resolution(&mut self, raw: &RawPool, path: &KeyPath) -> Resolution {
        let every = self.number(
            path.key("resolve_seconds"),
            raw.resolve_seconds,
            30,
            1..=86_400,
            "1 to 86400 seconds",
        );
        let on_start = match raw.resolve_on_start.as_deref() {
            None | Some("optional") => ResolveOnStart::Optional,
            Some("required") => ResolveOnStart::Required,
            Some(other) => {
                self.err(
                    path.key("resolve_on_start"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "optional or required",
                    },
                );
                ResolveOnStart::Optional
            }
        };
        Resolution {
            every: Duration::from_secs(every),
            on_start,
        }
    }

    /// Looks every server name up once (not in an offline check); a name that does not resolve
    /// is an error only in a pool with `resolve_on_start: required`.
    pub(super) fn look_up(
        &mut self,
        pools: &[PoolConfig],
        resolvers: &[SocketAddr],
        path: &KeyPath,
    ) -> crate::dns::Answers {
        let mut names: Vec<String> = pools
            .iter()
            .flat_map(|p| p.servers.iter().filter_map(|s| s.host().map(str::to_owned)))
            .collect();
        names.sort();
        names.dedup();
        let answers = match self.resolve {
            crate::config::Resolve::Names => crate::dns::lookup_all_blocking(resolvers, &names),
            crate::config::Resolve::Offline => crate::dns::Answers::new(),
        };
        for (p, pool) in pools.iter().enumerate() {
            if pool.resolution.on_start != ResolveOnStart::Required {
                continue;
            }
            for (i, entry) in pool.servers.iter().enumerate() {
                let Some(host) = entry.host() else { continue };
                let reason = match answers.get(host) {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => e.to_string(),
                    None => "names are not resolved in an offline check".to_owned(),
                };
                let at = path.index(p).key("servers").index(i);
                self.err(
                    at,
                    Problem::Unresolved {
                        name: entry.label.clone(),
                        reason,
                    },
                );
            }
        }
        answers
    }
}
