//! `pinion_grpc_responses_total`: gRPC calls by listener and the gRPC status they ended with
//! (the backend's, or the one pinion answered a failure with).

use super::{carried_by_listener, esc, header, Metrics};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// gRPC status codes are 0 to 16.
const CODES: usize = 17;

/// Per listener, calls by gRPC status.
pub(super) type GrpcCounters = Vec<Arc<[AtomicU64; CODES]>>;

/// The counters of `listeners`, carried from `previous` by listener name.
pub(super) fn carried(listeners: &[String], previous: Option<&Metrics>) -> GrpcCounters {
    carried_by_listener(listeners, previous, |m| &m.grpc)
}

impl Metrics {
    /// Counts a gRPC call on `listener` that ended with `code` (out-of-range codes count as 2,
    /// UNKNOWN).
    pub fn grpc(&self, listener: usize, code: u8) {
        let slot = if usize::from(code) < CODES { code } else { 2 };
        if let Some(c) = self
            .grpc
            .get(listener)
            .and_then(|c| c.get(usize::from(slot)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn render_grpc(&self, out: &mut String) {
        header(
            out,
            "pinion_grpc_responses_total",
            "counter",
            "gRPC calls by listener and the gRPC status they ended with.",
        );
        for (listener, counters) in self.listeners.iter().zip(&self.grpc) {
            for (code, c) in counters.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "pinion_grpc_responses_total{{listener=\"{}\",grpc_status=\"{code}\"}} {n}",
                        esc(listener)
                    );
                }
            }
        }
    }
}
