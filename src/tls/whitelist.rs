//! A pool's whitelist: pins with a scope (the leaf's key, or a key anywhere in the verified
//! chain) and an optional validity window, and the judgement of what a backend presented.
//!
//! The request path asks [`Whitelist::judge`] on every request, new and reused connections
//! alike, so the common case (leaf pins without windows) is a short scan that reads no clock.

use super::Pin;
use openssl::x509::X509;
use std::fmt;

/// Which key of the presented chain a pin may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PinScope {
    /// The leaf certificate's key only (chain, name and dates are not checked).
    Leaf,
    /// Any key on the verified path from the leaf up to it: signatures and dates checked.
    Chain,
}

impl PinScope {
    /// The YAML and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PinScope::Leaf => "leaf",
            PinScope::Chain => "chain",
        }
    }
}

/// Where a pin stands in its window at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    /// Its `not_before` is still ahead.
    Staged,
    /// It matches.
    Active,
    /// Its `not_after` has passed.
    Expired,
}

impl PinState {
    /// The `/status` and `/metrics` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PinState::Staged => "staged",
            PinState::Active => "active",
            PinState::Expired => "expired",
        }
    }
}

impl fmt::Display for PinState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One whitelisted key.
#[derive(Clone)]
pub struct PinEntry {
    /// The key.
    pub pin: Pin,
    /// Where in the chain it may match.
    pub scope: PinScope,
    /// Seconds since the Unix epoch before which it does not match.
    pub not_before: Option<i64>,
    /// Seconds since the Unix epoch after which it does not match.
    pub not_after: Option<i64>,
    /// The certificate it was read from (`cert:` entries): a chain pin uses it as the anchor
    /// when the server does not send that certificate itself (a root, typically).
    pub cert: Option<X509>,
    /// The `cert:` file it was read from, as written in the configuration.
    pub cert_file: Option<String>,
}

impl fmt::Debug for PinEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinEntry")
            .field("pin", &self.pin)
            .field("scope", &self.scope)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PinEntry {
    fn eq(&self, other: &PinEntry) -> bool {
        (self.pin, self.scope, self.not_before, self.not_after)
            == (other.pin, other.scope, other.not_before, other.not_after)
    }
}

impl Eq for PinEntry {}

impl PinEntry {
    /// A leaf pin without a window.
    pub fn leaf(pin: Pin) -> PinEntry {
        PinEntry {
            pin,
            scope: PinScope::Leaf,
            not_before: None,
            not_after: None,
            cert: None,
            cert_file: None,
        }
    }

    /// Its state at `now` (seconds since the Unix epoch).
    pub fn state(&self, now: i64) -> PinState {
        if self.not_before.is_some_and(|t| now < t) {
            PinState::Staged
        } else if self.not_after.is_some_and(|t| now > t) {
            PinState::Expired
        } else {
            PinState::Active
        }
    }

    fn has_window(&self) -> bool {
        self.not_before.is_some() || self.not_after.is_some()
    }
}

/// A key on the verified path of a presented chain: its pin and its depth (0 = the leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathKey {
    /// The key.
    pub pin: Pin,
    /// 0 for the leaf, 1 for its issuer, and so on.
    pub depth: u8,
}

/// What a backend presented, as far as the whitelist needs it.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The leaf's key.
    pub leaf: Pin,
    /// Keys of the pool's chain pins that the chain verified up to (with `name_ok`).
    pub path: &'a [PathKey],
    /// Whether the leaf's name matched, where a chain match requires it.
    pub name_ok: bool,
}

/// The pin that accepted a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The matching key.
    pub pin: Pin,
    /// Its scope.
    pub scope: PinScope,
    /// Its depth in the chain (0 = the leaf).
    pub depth: u8,
}

/// Why the whitelist did not accept what a backend presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No pin names the leaf's key or a key on its verified path.
    NotWhitelisted,
    /// A pin names it, but only outside its window.
    Inactive(PinState),
    /// A chain pin verified, but the certificate's name does not match.
    NameMismatch,
}

/// A pool's whitelist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    entries: Vec<PinEntry>,
    windows: bool,
}

impl Whitelist {
    /// A whitelist from entries; exact duplicates removed, in a stable order.
    pub fn new(mut entries: Vec<PinEntry>) -> Whitelist {
        entries.sort_by(|a, b| {
            (a.pin, a.scope, a.not_before, a.not_after).cmp(&(
                b.pin,
                b.scope,
                b.not_before,
                b.not_after,
            ))
        });
        entries.dedup();
        let windows = entries.iter().any(PinEntry::has_window);
        Whitelist { entries, windows }
    }

    /// Leaf pins without windows (tests and simple callers).
    pub fn of_leaves(pins: impl IntoIterator<Item = Pin>) -> Whitelist {
        Whitelist::new(pins.into_iter().map(PinEntry::leaf).collect())
    }

    /// Whether there are no pins (the pool trusts by CA only).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any pin has `scope: chain`.
    pub fn has_chain(&self) -> bool {
        self.entries.iter().any(|e| e.scope == PinScope::Chain)
    }

    /// The entries, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &PinEntry> {
        self.entries.iter()
    }

    /// The chain pins, for the handshake hook: each distinct key with the certificate it was
    /// read from, if any.
    pub fn chain_anchors(&self) -> Vec<(Pin, Option<X509>)> {
        let mut out: Vec<(Pin, Option<X509>)> = Vec::new();
        for e in self.entries.iter().filter(|e| e.scope == PinScope::Chain) {
            match out.iter_mut().find(|(p, _)| *p == e.pin) {
                Some((_, cert)) if cert.is_none() => cert.clone_from(&e.cert),
                Some(_) => {}
                None => out.push((e.pin, e.cert.clone())),
            }
        }
        out
    }

    /// Whether `pin` is named by some entry, in any scope and state.
    pub fn names(&self, pin: &Pin) -> bool {
        self.entries.iter().any(|e| e.pin == *pin)
    }

    /// Judges what a backend presented at `now` (read only when some pin has a window). Of
    /// several pins that accept it, the one nearest the leaf is named (the leaf's own first).
    pub fn judge(&self, seen: Presented<'_>, now: impl Fn() -> i64) -> Result<Match, Miss> {
        let now = if self.windows { now() } else { 0 };
        let mut miss = Miss::NotWhitelisted;
        let mut best: Option<Match> = None;
        for e in &self.entries {
            let depth = match e.scope {
                PinScope::Leaf if e.pin == seen.leaf => 0,
                PinScope::Leaf => continue,
                PinScope::Chain => match seen.path.iter().find(|k| k.pin == e.pin) {
                    Some(k) => k.depth,
                    None => continue,
                },
            };
            if self.windows {
                let state = e.state(now);
                if state != PinState::Active {
                    if miss == Miss::NotWhitelisted {
                        miss = Miss::Inactive(state);
                    }
                    continue;
                }
            }
            if e.scope == PinScope::Chain && !seen.name_ok {
                miss = Miss::NameMismatch;
                continue;
            }
            if depth == 0 && e.scope == PinScope::Leaf {
                return Ok(Match {
                    pin: e.pin,
                    scope: e.scope,
                    depth,
                });
            }
            if best.is_none_or(|b| (depth, e.scope) < (b.depth, b.scope)) {
                best = Some(Match {
                    pin: e.pin,
                    scope: e.scope,
                    depth,
                });
            }
        }
        best.ok_or(miss)
    }

    /// Warnings about a server that presented `seen` with a certificate expiring at
    /// `cert_not_after`, looking `warn_secs` ahead of `now`.
    pub fn warnings(
        &self,
        seen: Presented<'_>,
        cert_not_after: Option<i64>,
        now: i64,
        warn_secs: i64,
    ) -> Vec<PinWarning> {
        let horizon = now.saturating_add(warn_secs);
        let mut out = Vec::new();
        let matching: Vec<&PinEntry> = self
            .entries
            .iter()
            .filter(|e| e.state(now) == PinState::Active)
            .filter(|e| match e.scope {
                PinScope::Leaf => e.pin == seen.leaf,
                PinScope::Chain => seen.name_ok && seen.path.iter().any(|k| k.pin == e.pin),
            })
            .collect();
        if !matching.is_empty()
            && matching
                .iter()
                .all(|e| e.not_after.is_some_and(|t| t <= horizon))
        {
            let ends = matching
                .iter()
                .filter_map(|e| e.not_after)
                .max()
                .unwrap_or(now);
            out.push(PinWarning::PinWindowEnding { ends });
        }
        if let Some(expires) = cert_not_after.filter(|t| *t <= horizon) {
            // A renewal brings a new leaf key: only another pin that is still (or will be)
            // in force can accept it.
            let spare = self.entries.iter().any(|e| {
                e.pin != seen.leaf
                    && e.state(now) != PinState::Expired
                    && e.not_after.is_none_or(|t| t > horizon)
            });
            if !spare {
                out.push(PinWarning::CertificateExpiring { expires });
            }
        }
        out
    }
}

/// A condition that will refuse a backend soon unless the operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinWarning {
    /// Every pin that accepts the presented key stops matching at `ends`.
    PinWindowEnding {
        /// The latest end of those windows (seconds since the Unix epoch).
        ends: i64,
    },
    /// The certificate expires at `expires` and no other pin would accept a new key.
    CertificateExpiring {
        /// The certificate's `notAfter` (seconds since the Unix epoch).
        expires: i64,
    },
}

impl PinWarning {
    /// Every reason, in `/metrics` order.
    pub const REASONS: [&'static str; 2] = ["pin_window_ending", "certificate_expiring"];

    /// The `/metrics` reason label.
    pub fn reason(self) -> &'static str {
        match self {
            PinWarning::PinWindowEnding { .. } => Self::REASONS[0],
            PinWarning::CertificateExpiring { .. } => Self::REASONS[1],
        }
    }
}

impl fmt::Display for PinWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinWarning::PinWindowEnding { ends } => write!(
                f,
                "every pin accepting the presented key stops matching at {}: stage the next pin",
                rfc3339(*ends)
            ),
            PinWarning::CertificateExpiring { expires } => write!(
                f,
                "the certificate expires at {} and no other pin of the pool would accept a renewed key: pin the next key or a chain key",
                rfc3339(*expires)
            ),
        }
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Parses an RFC 3339 instant into seconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Pin {
        Pin([n; 32])
    }

    fn entry(n: u8, scope: PinScope, nb: Option<i64>, na: Option<i64>) -> PinEntry {
        PinEntry {
            pin: p(n),
            scope,
            not_before: nb,
            not_after: na,
            cert: None,
            cert_file: None,
        }
    }

    fn seen(leaf: u8, path: &[PathKey]) -> Presented<'_> {
        Presented {
            leaf: p(leaf),
            path,
            name_ok: true,
        }
    }

    #[test]
    fn a_leaf_pin_matches_only_the_leaf() {
        let w = Whitelist::of_leaves([p(1)]);
        assert_eq!(
            w.judge(seen(1, &[]), || 0),
            Ok(Match {
                pin: p(1),
                scope: PinScope::Leaf,
                depth: 0
            })
        );
        let path = [PathKey {
            pin: p(1),
            depth: 1,
        }];
        assert_eq!(w.judge(seen(2, &path), || 0), Err(Miss::NotWhitelisted));
    }

    #[test]
    fn a_chain_pin_matches_at_its_verified_depth_and_needs_the_name() {
        let w = Whitelist::new(vec![entry(9, PinScope::Chain, None, None)]);
        let path = [PathKey {
            pin: p(9),
            depth: 2,
        }];
        assert_eq!(w.judge(seen(1, &path), || 0).map(|m| m.depth), Ok(2));
        assert_eq!(w.judge(seen(9, &[]), || 0), Err(Miss::NotWhitelisted));
        let wrong_name = Presented {
            name_ok: false,
            ..seen(1, &path)
        };
        assert_eq!(w.judge(wrong_name, || 0), Err(Miss::NameMismatch));
    }

    #[test]
    fn the_pin_nearest_the_leaf_is_named_when_several_accept() {
        let w = Whitelist::new(vec![
            entry(9, PinScope::Chain, None, None),
            entry(8, PinScope::Chain, None, None),
            entry(1, PinScope::Leaf, None, None),
        ]);
        let path = [
            PathKey {
                pin: p(9),
                depth: 2,
            },
            PathKey {
                pin: p(8),
                depth: 1,
            },
        ];
        assert_eq!(w.judge(seen(1, &path), || 0).map(|m| m.pin), Ok(p(1)));
        assert_eq!(w.judge(seen(2, &path), || 0).map(|m| m.depth), Ok(1));
    }

    #[test]
    fn staged_and_expired_pins_do_not_match() {
        let w = Whitelist::new(vec![entry(1, PinScope::Leaf, Some(100), Some(200))]);
        assert_eq!(
            w.judge(seen(1, &[]), || 99),
            Err(Miss::Inactive(PinState::Staged))
        );
        assert!(w.judge(seen(1, &[]), || 100).is_ok());
        assert!(w.judge(seen(1, &[]), || 200).is_ok());
        assert_eq!(
            w.judge(seen(1, &[]), || 201),
            Err(Miss::Inactive(PinState::Expired))
        );
    }

    #[test]
    fn another_active_entry_for_the_same_key_still_matches() {
        let w = Whitelist::new(vec![
            entry(1, PinScope::Leaf, None, Some(50)),
            entry(1, PinScope::Leaf, Some(40), None),
        ]);
        assert!(w.judge(seen(1, &[]), || 60).is_ok());
    }

    #[test]
    fn windows_are_read_only_when_some_pin_has_one() {
        let w = Whitelist::of_leaves([p(1)]);
        let clock_read = std::cell::Cell::new(false);
        let _ = w.judge(seen(1, &[]), || {
            clock_read.set(true);
            0
        });
        assert!(!clock_read.get());
    }

    #[test]
    fn a_pin_window_ending_soon_warns_when_it_is_all_that_accepts_the_key() {
        let day = 86_400;
        let w = Whitelist::new(vec![entry(1, PinScope::Leaf, None, Some(10 * day))]);
        let warnings = w.warnings(seen(1, &[]), None, 0, 14 * day);
        assert_eq!(
            warnings,
            vec![PinWarning::PinWindowEnding { ends: 10 * day }]
        );
        assert!(w.warnings(seen(1, &[]), None, 0, 7 * day).is_empty());
        let w = Whitelist::new(vec![
            entry(1, PinScope::Leaf, None, Some(10 * day)),
            entry(1, PinScope::Leaf, None, None),
        ]);
        assert!(w.warnings(seen(1, &[]), None, 0, 14 * day).is_empty());
    }

    #[test]
    fn an_expiring_certificate_warns_unless_another_pin_would_accept_a_new_key() {
        let day = 86_400;
        let only_leaf = Whitelist::of_leaves([p(1)]);
        assert_eq!(
            only_leaf.warnings(seen(1, &[]), Some(5 * day), 0, 14 * day),
            vec![PinWarning::CertificateExpiring { expires: 5 * day }]
        );
        assert!(only_leaf
            .warnings(seen(1, &[]), Some(30 * day), 0, 14 * day)
            .is_empty());
        let with_backup = Whitelist::new(vec![
            entry(1, PinScope::Leaf, None, None),
            entry(2, PinScope::Leaf, Some(3 * day), None),
        ]);
        assert!(with_backup
            .warnings(seen(1, &[]), Some(5 * day), 0, 14 * day)
            .is_empty());
        let chain = Whitelist::new(vec![entry(9, PinScope::Chain, None, None)]);
        let path = [PathKey {
            pin: p(9),
            depth: 1,
        }];
        assert!(chain
            .warnings(seen(1, &path), Some(5 * day), 0, 14 * day)
            .is_empty());
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2027-01-02T03:04:05Z").unwrap();
        assert_eq!(rfc3339(t), "2027-01-02T03:04:05Z");
        assert_eq!(parse_rfc3339("2027-01-02T04:04:05+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2027-01-02"), None);
    }
}
