//! `server.user` / `server.group`: the process gives up root once its listeners are bound, so
//! that ports below 1024 can be served without running as root (SPEC "server"). Pingora's own
//! switch happens when it daemonizes, before any listener is bound, and never in the
//! foreground; pinion therefore does it itself, in both modes.

use async_trait::async_trait;
use log::{error, info, warn};
use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};
use nix::unistd::{Gid, Group, Uid, User};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest the listeners may take to bind before privileges are dropped regardless.
const BIND_DEADLINE: Duration = Duration::from_secs(30);
/// How often the process's own sockets are looked at while waiting.
const POLL: Duration = Duration::from_millis(5);

/// Errors looking up the identity to switch to.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `server.user` names no account.
    #[error("server.user: no user named {0:?}")]
    NoUser(String),
    /// `server.group` names no group.
    #[error("server.group: no group named {0:?}")]
    NoGroup(String),
    /// The account database could not be read.
    #[error("cannot look up {name:?}: {source}")]
    Lookup { name: String, source: nix::Error },
}

/// The identity to become, resolved before start so that a typo stops start-up.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` keeps the user (only `group` was given).
    uid: Option<Uid>,
    gid: Gid,
    /// For the log.
    name: String,
}

impl Identity {
    /// The identity `user`/`group` name; `None` when neither is set, or when the process is
    /// not root (nothing to give up; as nginx, say so and go on).
    pub fn resolve(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<Identity>, PrivilegeError> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        if !Uid::effective().is_root() {
            warn!("server.user/server.group ignored: the process does not run as root");
            return Ok(None);
        }
        let lookup = |name: &str, source| PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        };
        let account = match user {
            Some(name) => Some(
                User::from_name(name)
                    .map_err(|e| lookup(name, e))?
                    .ok_or_else(|| PrivilegeError::NoUser(name.to_owned()))?,
            ),
            None => None,
        };
        let gid = match (group, &account) {
            (Some(name), _) => {
                Group::from_name(name)
                    .map_err(|e| lookup(name, e))?
                    .ok_or_else(|| PrivilegeError::NoGroup(name.to_owned()))?
                    .gid
            }
            (None, Some(u)) => u.gid,
            (None, None) => Gid::effective(),
        };
        Ok(Some(Identity {
            uid: account.as_ref().map(|u| u.uid),
            gid,
            name: format!(
                "{}:{}",
                user.unwrap_or("root"),
                group.map_or_else(|| gid.to_string(), str::to_owned)
            ),
        }))
    }

    /// Switches the whole process (every thread: glibc applies set*id to all of them) to this
    /// identity.
    fn apply(&self) -> nix::Result<()> {
        nix::unistd::setgroups(&[self.gid])?;
        nix::unistd::setgid(self.gid)?;
        if let Some(uid) = self.uid {
            nix::unistd::setuid(uid)?;
        }
        Ok(())
    }
}

/// A background service that waits until every address is bound by this process, then drops
/// to the identity. It runs after a daemon's fork, like every service.
pub struct Dropper {
    identity: Identity,
    addrs: Vec<SocketAddr>,
}

impl Dropper {
    /// Drops to `identity` once all of `addrs` are bound.
    pub fn new(identity: Identity, addrs: Vec<SocketAddr>) -> Dropper {
        Dropper { identity, addrs }
    }
}

#[async_trait]
impl BackgroundService for Dropper {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let deadline = Instant::now() + BIND_DEADLINE;
        while !all_bound(&self.addrs) {
            if Instant::now() > deadline {
                warn!("listeners not all bound after {BIND_DEADLINE:?}; dropping privileges now");
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        match self.identity.apply() {
            Ok(()) => info!("running as {} from now on", self.identity.name),
            Err(e) => {
                // Serving on as root, when the operator asked otherwise, is not an option.
                error!("cannot switch to {}: {e}; stopping", self.identity.name);
                std::process::exit(1);
            }
        }
    }
}

/// Whether a socket of this process is bound to each of `addrs`.
fn all_bound(addrs: &[SocketAddr]) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    let bound: Vec<SocketAddr> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|fd| getsockname::<SockaddrStorage>(fd).ok())
        .filter_map(|a| socket_addr(&a))
        .collect();
    addrs.iter().all(|a| bound.contains(a))
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    if a.family().is_some() {
        return a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_address_is_found_among_the_process_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bound = listener.local_addr().unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let mut addrs = vec![bound];
        addrs.extend(v6.as_ref().map(|l| l.local_addr().unwrap()));
        assert!(all_bound(&addrs));
        drop(listener);
        assert!(!all_bound(&[bound]), "released: no longer bound");
    }

    #[test]
    fn an_unknown_user_or_group_stops_start_up() {
        if !Uid::effective().is_root() {
            // Not root: the settings are ignored, with a warning.
            assert!(Identity::resolve(Some("no-such-user-x"), None)
                .unwrap()
                .is_none());
            return;
        }
        assert!(matches!(
            Identity::resolve(Some("no-such-user-x"), None),
            Err(PrivilegeError::NoUser(_))
        ));
        assert!(matches!(
            Identity::resolve(None, Some("no-such-group-x")),
            Err(PrivilegeError::NoGroup(_))
        ));
        assert!(Identity::resolve(None, None).unwrap().is_none());
    }
}
