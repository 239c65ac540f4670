//! `/metrics` series for pins: every pin's state per pool, the warnings that come before a
//! refusal, and the keys a `pin_mode: report` pool saw but does not whitelist.

use super::{esc, header};
use crate::pool::pins::server_pins;
use crate::pool::Pool;
use crate::tls::PinWarning;
use std::fmt::Write as _;

/// Appends the pin series for `pools` at `now` (seconds since the Unix epoch).
pub(super) fn render(out: &mut String, pools: &[Pool], now: i64) {
    header(
        out,
        "pinion_pin_state",
        "gauge",
        "Each pin of each pool, 1 in its current state (staged, active, expired).",
    );
    for pool in pools {
        let Some(tls) = &pool.tls else { continue };
        for e in tls.pins.iter() {
            let _ = writeln!(
                out,
                "pinion_pin_state{{pool=\"{}\",pin=\"{}\",scope=\"{}\",state=\"{}\"}} 1",
                esc(&pool.name),
                e.pin,
                e.scope.as_str(),
                e.state(now).as_str()
            );
        }
    }
    header(
        out,
        "pinion_pin_warning",
        "gauge",
        "1 while a server's pins will soon stop accepting it: pin_window_ending (every pin accepting its key ends within warn_days) or certificate_expiring (it expires within warn_days and no other pin would accept a new key).",
    );
    for pool in pools {
        for server in pool.servers().iter() {
            let Some(view) = server_pins(pool, server, now) else {
                continue;
            };
            for reason in PinWarning::REASONS {
                let on = view.warnings.iter().any(|w| w.reason() == reason);
                let _ = writeln!(
                    out,
                    "pinion_pin_warning{{pool=\"{}\",server=\"{}\",reason=\"{reason}\"}} {}",
                    esc(&pool.name),
                    esc(&server.label),
                    u8::from(on)
                );
            }
        }
    }
    header(
        out,
        "pinion_pin_unlisted_keys",
        "gauge",
        "Distinct keys presented to a pin_mode: report pool that its pins do not accept.",
    );
    for pool in pools {
        let Some(tls) = &pool.tls else { continue };
        if tls.pin_mode != crate::config::PinMode::Report {
            continue;
        }
        let _ = writeln!(
            out,
            "pinion_pin_unlisted_keys{{pool=\"{}\"}} {}",
            esc(&pool.name),
            pool.unlisted.len()
        );
    }
}
