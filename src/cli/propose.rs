//! `pinion preflight --propose OUT.yaml`: per pool, the pins its servers would need, written
//! as YAML ready to review and paste over the pool's `tls.pins`.
//!
//! Each key the servers present on their verified path is proposed once: the leaf's with the
//! default scope, keys above it with `scope: chain`. Keys already on the whitelist are marked,
//! and pins of the configuration that no server presents now are kept (a staged next key must
//! not be lost by pasting), so the pasted list never takes away what the configuration has.

use super::preflight::Row;
use crate::config::Config;
use crate::tls::{rfc3339, Pin, PinEntry, PinScope};
use std::fmt::Write as _;

/// A proposed key and what is known of it.
struct Proposed {
    pin: Pin,
    scope: PinScope,
    /// Comment lines: where it was seen, subject, issuer, expiry, depth.
    notes: Vec<String>,
    /// The configuration's entries for this key (their windows are kept).
    existing: Vec<PinEntry>,
}

/// The proposal for `config`'s pools from preflight's `rows` (made with diagnosis on).
pub fn render(config: &Config, rows: &[Row], now: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Pins proposed by `pinion preflight --propose` at {} for {}.",
        rfc3339(now),
        config.file.display()
    );
    out.push_str(
        "# Review every key before you whitelist it: paste a pool's `pins:` list over that pool's\n\
         # `tls.pins`, then run `pinion -t`. The leaf's key matches only the leaf; a `scope: chain`\n\
         # key (an intermediate or your own issuing CA) survives renewals with new leaf keys.\n",
    );
    out.push_str("pools:\n");
    for pool in &config.pools {
        let Some(tls) = &pool.tls else { continue };
        let mut proposed: Vec<Proposed> = Vec::new();
        let mut silent = Vec::new();
        for row in rows.iter().filter(|r| r.pool == pool.name) {
            if row.keys.is_empty() {
                silent.push(format!(
                    "{}: nothing presented ({})",
                    row.server,
                    row.problem.as_deref().unwrap_or("no certificate")
                ));
            }
            for key in &row.keys {
                let Some(depth) = key.depth else {
                    silent.push(format!(
                        "{}: sent {} (issuer {}) outside the verified path; not proposed",
                        row.server, key.subject, key.issuer
                    ));
                    continue;
                };
                let scope = if depth == 0 {
                    PinScope::Leaf
                } else {
                    PinScope::Chain
                };
                let note = format!(
                    "{} depth {depth}{}: subject \"{}\", issuer \"{}\", expires {}",
                    row.server,
                    if depth == 0 { " (leaf)" } else { "" },
                    key.subject,
                    key.issuer,
                    key.not_after
                );
                match proposed
                    .iter_mut()
                    .find(|p| p.pin == key.pin && p.scope == scope)
                {
                    Some(p) => p.notes.push(note),
                    None => proposed.push(Proposed {
                        pin: key.pin,
                        scope,
                        notes: vec![note],
                        existing: Vec::new(),
                    }),
                }
            }
        }
        let mut unseen = Vec::new();
        for entry in tls.pins.iter() {
            match proposed
                .iter_mut()
                .find(|p| p.pin == entry.pin && p.scope == entry.scope)
            {
                Some(p) => p.existing.push(entry.clone()),
                None => unseen.push(entry.clone()),
            }
        }
        let mut files = Vec::new();
        let _ = writeln!(out, "  - name: {}", yaml_str(&pool.name));
        out.push_str("    tls:\n      pins:\n");
        for line in &silent {
            let _ = writeln!(out, "        # {line}");
        }
        for p in &proposed {
            for note in &p.notes {
                let _ = writeln!(out, "        # {note}");
            }
            if p.existing.is_empty() {
                out.push_str("        # NEW: not whitelisted yet\n");
                entry(&mut out, p.pin, p.scope, None, None);
            } else {
                out.push_str("        # already whitelisted\n");
                for e in &p.existing {
                    existing(&mut out, e, &mut files);
                }
            }
        }
        for e in &unseen {
            out.push_str(
                "        # already whitelisted, presented by no server now (a staged key?): remove it once it is no longer needed\n",
            );
            existing(&mut out, e, &mut files);
        }
        if proposed.is_empty() && unseen.is_empty() {
            out.push_str("        []\n");
        }
    }
    out
}

/// A `cert:` entry already written: file, scope and window.
type WrittenFile = (String, PinScope, Option<i64>, Option<i64>);

/// An entry of the configuration as it was written: a `cert:` file stays a file (a chain pin's
/// certificate may be the anchor the server does not send), once per file.
fn existing(out: &mut String, e: &PinEntry, files: &mut Vec<WrittenFile>) {
    match &e.cert_file {
        Some(f) if files.contains(&(f.clone(), e.scope, e.not_before, e.not_after)) => {}
        Some(f) => {
            files.push((f.clone(), e.scope, e.not_before, e.not_after));
            let _ = writeln!(out, "        - cert: {}", yaml_str(f));
            window(out, e.scope, e.not_before, e.not_after);
        }
        None => entry(out, e.pin, e.scope, e.not_before, e.not_after),
    }
}

fn entry(out: &mut String, pin: Pin, scope: PinScope, nb: Option<i64>, na: Option<i64>) {
    let _ = writeln!(out, "        - sha256: \"{pin}\"");
    window(out, scope, nb, na);
}

fn window(out: &mut String, scope: PinScope, nb: Option<i64>, na: Option<i64>) {
    if scope == PinScope::Chain {
        out.push_str("          scope: chain\n");
    }
    if let Some(t) = nb {
        let _ = writeln!(out, "          not_before: \"{}\"", rfc3339(t));
    }
    if let Some(t) = na {
        let _ = writeln!(out, "          not_after: \"{}\"", rfc3339(t));
    }
}

/// A YAML scalar for a name: quoted with JSON escapes (JSON strings are YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
