//! A server's health as probes see it: consecutive successes and failures against the pool's
//! thresholds, the reason it is out of rotation, and what certificate it presented.

use crate::upstream::PresentedCert;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// A server's health; servers start healthy and probes move them.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// An address that joined while running, not yet probed: its first passing probe puts it in
    /// rotation.
    pending: bool,
    successes: u32,
    failures: u32,
    reason: Option<String>,
    seen: Option<PresentedCert>,
}

/// A snapshot for logs and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// In rotation.
    pub healthy: bool,
    /// Why it is out of rotation, or the last probe failure.
    pub reason: Option<String>,
    /// The pin of the last certificate it presented to a probe.
    pub pin: Option<String>,
    /// That certificate's expiry.
    pub not_after: Option<String>,
    /// The same, as seconds since the Unix epoch.
    pub not_after_unix: Option<i64>,
    /// The chain it presented when its chain or name last failed verification (leaf first);
    /// empty once a handshake verifies again.
    pub chain: Vec<String>,
    /// Everything recorded of the last certificate it presented.
    pub seen: Option<PresentedCert>,
}

/// A change of rotation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The server left rotation.
    Down,
    /// The server is back in rotation.
    Up,
    /// An address that joined while running passed its first probe and is in rotation.
    Joined,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            healthy: AtomicBool::new(true),
            state: Mutex::new(State::default()),
        }
    }
}

impl Health {
    /// The health of an address that joined the pool while running: out of rotation until its
    /// first probe passes.
    pub fn pending() -> Health {
        Health {
            healthy: AtomicBool::new(false),
            state: Mutex::new(State {
                pending: true,
                reason: Some("new address, waiting for its first probe".into()),
                ..State::default()
            }),
        }
    }

    /// Whether the server is in rotation.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the certificate the server presented (to a probe or a request).
    pub fn presented(&self, cert: &PresentedCert) {
        self.lock().seen = Some(cert.clone());
    }

    /// The last certificate it presented, if any.
    pub fn seen(&self) -> Option<PresentedCert> {
        self.lock().seen.clone()
    }

    /// Records a probe result; returns the transition it caused, if any.
    pub fn record(
        &self,
        result: Result<(), String>,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> Option<Transition> {
        let mut s = self.lock();
        let healthy = self.is_healthy();
        match result {
            Ok(()) => {
                s.failures = 0;
                s.successes = s.successes.saturating_add(1);
                if !healthy && (s.successes >= healthy_threshold || s.pending) {
                    let joined = std::mem::take(&mut s.pending);
                    s.reason = None;
                    self.healthy.store(true, Ordering::Relaxed);
                    return Some(if joined {
                        Transition::Joined
                    } else {
                        Transition::Up
                    });
                }
                if healthy {
                    s.reason = None;
                }
            }
            Err(reason) => {
                s.successes = 0;
                s.failures = s.failures.saturating_add(1);
                s.reason = Some(reason);
                if healthy && s.failures >= unhealthy_threshold {
                    self.healthy.store(false, Ordering::Relaxed);
                    return Some(Transition::Down);
                }
            }
        }
        None
    }

    /// A snapshot.
    pub fn report(&self) -> HealthReport {
        let s = self.lock();
        let seen = s.seen.as_ref();
        HealthReport {
            healthy: self.is_healthy(),
            reason: s.reason.clone(),
            pin: seen.map(|c| c.pin.to_string()),
            not_after: seen.map(|c| c.not_after.clone()),
            not_after_unix: seen.and_then(|c| c.not_after_unix),
            chain: seen.map(|c| c.chain.clone()).unwrap_or_default(),
            seen: s.seen.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_move_a_server_out_and_back() {
        let h = Health::default();
        assert_eq!(h.record(Err("refused".into()), 2, 2), None);
        assert!(h.is_healthy());
        assert_eq!(
            h.record(Err("refused".into()), 2, 2),
            Some(Transition::Down)
        );
        assert!(!h.is_healthy());
        assert_eq!(h.report().reason.as_deref(), Some("refused"));
        assert_eq!(h.record(Ok(()), 2, 2), None);
        assert!(!h.is_healthy());
        assert_eq!(h.record(Ok(()), 2, 2), Some(Transition::Up));
        assert!(h.is_healthy());
        assert_eq!(h.report().reason, None);
    }

    #[test]
    fn a_new_address_joins_on_its_first_passing_probe() {
        let h = Health::pending();
        assert!(!h.is_healthy());
        assert_eq!(h.record(Err("refused".into()), 3, 2), None);
        assert!(!h.is_healthy());
        assert_eq!(h.record(Ok(()), 3, 2), Some(Transition::Joined));
        assert!(h.is_healthy());
        h.record(Err("x".into()), 1, 2);
        assert_eq!(
            h.record(Ok(()), 1, 2),
            None,
            "thresholds apply once it joined"
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let h = Health::default();
        h.record(Err("x".into()), 2, 1);
        h.record(Ok(()), 2, 1);
        assert_eq!(h.record(Err("x".into()), 2, 1), None);
        assert!(h.is_healthy());
    }
}
