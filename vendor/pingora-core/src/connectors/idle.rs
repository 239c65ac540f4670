// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Idle connections kept for reuse by a [super::TransportConnector].
//!
//! A released connection is put in a list under its reuse key; nothing is spawned for it.
//! One task per pool looks at the idle connections twice a second and closes those whose
//! idle timeout passed or whose peer closed or sent data. A connection taken for reuse is
//! checked again by the taker. The pool holds at most `capacity` connections; the one idle
//! longest goes first.

use super::test_reusable_stream;
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often idle connections are checked for a passed idle timeout or a closed peer.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

struct Idle {
    stream: Stream,
    /// Release order across all keys, for evicting the connection idle longest.
    seq: u64,
    since: Instant,
    deadline: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

#[derive(Default)]
struct Slots {
    by_key: HashMap<u64, VecDeque<Idle>>,
    len: usize,
    seq: u64,
}

impl Slots {
    /// Takes out the connection released longest ago, under any key.
    fn pop_oldest(&mut self) -> Option<Idle> {
        let key = self
            .by_key
            .iter()
            .filter_map(|(key, q)| q.front().map(|idle| (idle.seq, *key)))
            .min()?
            .1;
        let q = self.by_key.get_mut(&key)?;
        let idle = q.pop_front();
        if q.is_empty() {
            self.by_key.remove(&key);
        }
        self.len -= usize::from(idle.is_some());
        idle
    }
}

/// The idle connections of one connector.
pub(crate) struct IdlePool {
    slots: Mutex<Slots>,
    capacity: usize,
    sweeping: AtomicBool,
    unexpected_data_conn_count: Arc<AtomicU64>,
}

/// Lets the pool know its sweeper is gone, however the task ends (a runtime shutting down
/// drops it without running it to the end).
struct Sweeping(Weak<IdlePool>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sweeping.store(false, Ordering::Release);
        }
    }
}

impl IdlePool {
    pub(crate) fn new(capacity: usize, unexpected_data_conn_count: Arc<AtomicU64>) -> Self {
        IdlePool {
            slots: Mutex::new(Slots::default()),
            capacity,
            sweeping: AtomicBool::new(false),
            unexpected_data_conn_count,
        }
    }

    /// Keeps `stream` for reuse under `key` until `idle_timeout` (none: until the pool needs
    /// the room or the peer closes). Returns how long each connection evicted to make room had
    /// been idle.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
    ) -> Vec<Duration> {
        if self.capacity == 0 || idle_timeout == Some(Duration::ZERO) {
            return Vec::new();
        }
        let now = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut slots = self.slots.lock();
            slots.seq += 1;
            let idle = Idle {
                stream,
                seq: slots.seq,
                since: now,
                deadline: idle_timeout.and_then(|t| now.checked_add(t)),
            };
            slots.by_key.entry(key).or_default().push_back(idle);
            slots.len += 1;
            while slots.len > self.capacity {
                match slots.pop_oldest() {
                    Some(idle) => evicted.push(idle),
                    None => break,
                }
            }
        }
        self.ensure_sweeper();
        // Closed here, outside the lock.
        evicted.into_iter().map(|idle| idle.since.elapsed()).collect()
    }

    /// The connection released last under `key` whose idle timeout has not passed.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut guard = self.slots.lock();
            let slots = &mut *guard;
            let mut found = None;
            if let Some(q) = slots.by_key.get_mut(&key) {
                while let Some(idle) = q.pop_back() {
                    if idle.expired(now) {
                        expired.push(idle);
                    } else {
                        found = Some(idle);
                        break;
                    }
                }
                if q.is_empty() {
                    slots.by_key.remove(&key);
                }
            }
            slots.len -= expired.len() + usize::from(found.is_some());
            found
        };
        drop(expired);
        found.map(|idle| idle.stream)
    }

    /// Closes every idle connection under `key`; returns how many.
    pub(crate) fn remove_key(&self, key: u64) -> usize {
        let removed = {
            let mut slots = self.slots.lock();
            let removed = slots.by_key.remove(&key).unwrap_or_default();
            slots.len -= removed.len();
            removed
        };
        removed.len()
    }

    /// Closes the idle connections whose idle timeout passed or whose peer closed or sent
    /// data.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut guard = self.slots.lock();
            let slots = &mut *guard;
            for q in slots.by_key.values_mut() {
                for mut idle in std::mem::take(q) {
                    if !idle.expired(now)
                        && test_reusable_stream(&mut idle.stream, &self.unexpected_data_conn_count)
                    {
                        q.push_back(idle);
                    } else {
                        closed.push(idle);
                    }
                }
            }
            slots.by_key.retain(|_, q| !q.is_empty());
            slots.len -= closed.len();
        }
        drop(closed);
    }

    /// Starts the pool's sweeper on the current runtime unless it runs.
    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let _sweeping = Sweeping(pool.clone());
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.sweep();
            }
        });
    }
}
