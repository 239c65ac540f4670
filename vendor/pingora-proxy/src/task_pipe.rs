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

//! A bounded single-producer, single-consumer channel for the tasks that the downstream and
//! upstream halves of one HTTP/1 proxied request pass to each other.
//!
//! It offers the part of `tokio::sync::mpsc` that `proxy_1to1` uses (`send`, `reserve`,
//! `try_reserve`, `Permit::send`, `is_closed`, `recv`) with the same semantics, for a fraction
//! of the cost: the two halves are polled by one task (`try_join!`), so the channel is never
//! contended, and a channel created per request should not pay for tokio's lock-free block list
//! and semaphore (two allocations per channel and one atomic permit release per loop turn). Here
//! one allocation holds the slots, one uncontended lock guards them, and one waker waits on each
//! side.

use std::fmt;
use std::future::poll_fn;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

/// The receiving half is gone: nothing sent can be received any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task pipe closed")
    }
}

impl std::error::Error for Closed {}

/// Why [`Sender::try_reserve`] gave no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryReserveError {
    /// Every slot is taken or promised; [`Sender::reserve`] waits for one.
    Full,
    /// The receiving half is gone.
    Closed,
}

impl fmt::Display for TryReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("task pipe full"),
            Self::Closed => f.write_str("task pipe closed"),
        }
    }
}

impl std::error::Error for TryReserveError {}

struct State<T, const N: usize> {
    slots: [Option<T>; N],
    head: usize,
    len: usize,
    /// Slots promised to live permits.
    reserved: usize,
    sender_alive: bool,
    receiver_alive: bool,
    receiver_waker: Option<Waker>,
    /// Everything waiting for a free slot. Usually empty or the one task that polls both halves.
    sender_wakers: Vec<Waker>,
}

impl<T, const N: usize> State<T, N> {
    fn has_room(&self) -> bool {
        self.len + self.reserved < N
    }

    fn push(&mut self, value: T) {
        let tail = (self.head + self.len) % N;
        self.slots[tail] = Some(value);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let value = self.slots[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        value
    }

    fn wait_for_room(&mut self, waker: &Waker) {
        if !self.sender_wakers.iter().any(|w| w.will_wake(waker)) {
            self.sender_wakers.push(waker.clone());
        }
    }
}

type Shared<T, const N: usize> = Arc<Mutex<State<T, N>>>;

fn lock<T, const N: usize>(shared: &Shared<T, N>) -> MutexGuard<'_, State<T, N>> {
    // Nothing in here panics while holding the lock; a poisoned lock is still consistent.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

/// A channel of at most `N` values in flight, counting promised ones.
pub(crate) fn channel<T, const N: usize>() -> (Sender<T, N>, Receiver<T, N>) {
    let shared = Arc::new(Mutex::new(State {
        slots: std::array::from_fn(|_| None),
        head: 0,
        len: 0,
        reserved: 0,
        sender_alive: true,
        receiver_alive: true,
        receiver_waker: None,
        sender_wakers: Vec::new(),
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending half.
pub(crate) struct Sender<T, const N: usize> {
    shared: Shared<T, N>,
}

impl<T, const N: usize> Sender<T, N> {
    /// Sends `value`, waiting for a free slot; fails once the receiver is gone.
    pub(crate) async fn send(&self, value: T) -> Result<(), Closed> {
        self.reserve().await?.send(value);
        Ok(())
    }

    /// Waits for a free slot and promises it to the returned permit.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_, T, N>, Closed> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if !state.receiver_alive {
                return Poll::Ready(Err(Closed));
            }
            if state.has_room() {
                state.reserved += 1;
                return Poll::Ready(Ok(()));
            }
            state.wait_for_room(cx.waker());
            Poll::Pending
        })
        .await?;
        Ok(Permit { sender: self })
    }

    /// Promises a free slot to the returned permit if there is one now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T, N>, TryReserveError> {
        let mut state = lock(&self.shared);
        if !state.receiver_alive {
            return Err(TryReserveError::Closed);
        }
        if !state.has_room() {
            return Err(TryReserveError::Full);
        }
        state.reserved += 1;
        Ok(Permit { sender: self })
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        !lock(&self.shared).receiver_alive
    }
}

impl<T, const N: usize> Drop for Sender<T, N> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.sender_alive = false;
            state.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A slot promised to one value; dropping it unused gives the slot back.
pub(crate) struct Permit<'a, T, const N: usize> {
    sender: &'a Sender<T, N>,
}

impl<T, const N: usize> Permit<'_, T, N> {
    /// Puts `value` into the promised slot. If the receiver is gone the value is dropped, as
    /// nobody can receive it.
    pub(crate) fn send(self, value: T) {
        let (waker, unsent) = {
            let mut state = lock(&self.sender.shared);
            state.reserved -= 1;
            if state.receiver_alive {
                state.push(value);
                (state.receiver_waker.take(), None)
            } else {
                (None, Some(value))
            }
        };
        // The slot is used, not given back: skip `Drop`.
        mem::forget(self);
        drop(unsent);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T, const N: usize> Drop for Permit<'_, T, N> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = lock(&self.sender.shared);
            state.reserved -= 1;
            mem::take(&mut state.sender_wakers)
        };
        wake_all(wakers);
    }
}

impl<T, const N: usize> fmt::Debug for Permit<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

/// The receiving half.
pub(crate) struct Receiver<T, const N: usize> {
    shared: Shared<T, N>,
}

impl<T, const N: usize> Receiver<T, N> {
    /// The next value; `None` once the sender is gone and everything it sent was received.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let (value, wakers) = {
                let mut state = lock(&self.shared);
                match state.pop() {
                    Some(value) => (value, mem::take(&mut state.sender_wakers)),
                    None if !state.sender_alive => return Poll::Ready(None),
                    None => {
                        match &mut state.receiver_waker {
                            Some(w) if w.will_wake(cx.waker()) => {}
                            slot => *slot = Some(cx.waker().clone()),
                        }
                        return Poll::Pending;
                    }
                }
            };
            wake_all(wakers);
            Poll::Ready(Some(value))
        })
        .await
    }
}

impl<T, const N: usize> Drop for Receiver<T, N> {
    fn drop(&mut self) {
        let (queued, wakers) = {
            let mut state = lock(&self.shared);
            state.receiver_alive = false;
            let mut queued = Vec::new();
            while let Some(v) = state.pop() {
                queued.push(v);
            }
            (queued, mem::take(&mut state.sender_wakers))
        };
        // Dropped outside the lock: a value's drop may do anything.
        drop(queued);
        wake_all(wakers);
    }
}

#[cfg(test)]
mod tests {
    // Only std, so that this file's tests also run on their own:
    // `rustc --edition 2021 --test src/task_pipe.rs` (the crate's tests need its dev-dependencies).
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    /// Polls `f` once: `Some` of its output if it is ready.
    fn now<F: Future>(f: F) -> Option<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(f).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn values_arrive_in_order_and_recv_ends_when_the_sender_is_gone() {
        let (tx, mut rx) = channel::<u32, 4>();
        for i in 0..4 {
            assert_eq!(now(tx.send(i)), Some(Ok(())));
        }
        assert_eq!(now(tx.send(9)), None, "a full pipe makes the sender wait");
        assert_eq!(now(rx.recv()), Some(Some(0)));
        assert_eq!(now(tx.send(4)), Some(Ok(())));
        assert_eq!(now(rx.recv()), Some(Some(1)));
        drop(tx);
        for i in 2..5 {
            assert_eq!(now(rx.recv()), Some(Some(i)));
        }
        assert_eq!(now(rx.recv()), Some(None));
        assert_eq!(now(rx.recv()), Some(None));
    }

    #[test]
    fn an_empty_pipe_makes_the_receiver_wait() {
        let (tx, mut rx) = channel::<u32, 2>();
        assert_eq!(now(rx.recv()), None);
        tx.try_reserve().unwrap().send(3);
        assert_eq!(now(rx.recv()), Some(Some(3)));
        assert_eq!(now(rx.recv()), None);
    }

    #[test]
    fn permits_count_against_capacity_and_give_their_slot_back_when_dropped() {
        let (tx, mut rx) = channel::<u32, 2>();
        let a = tx.try_reserve().unwrap();
        let b = tx.try_reserve().unwrap();
        assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Full);
        assert!(now(tx.reserve()).is_none());
        drop(a);
        let c = tx.try_reserve().unwrap();
        b.send(1);
        c.send(2);
        assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Full);
        assert_eq!(now(rx.recv()), Some(Some(1)));
        assert!(tx.try_reserve().is_ok());
    }

    #[test]
    fn a_waiting_sender_is_woken_when_a_slot_frees_and_a_waiting_receiver_when_a_value_comes() {
        let (tx, mut rx) = channel::<u32, 1>();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);

        tx.try_reserve().unwrap().send(7);
        let mut reserve = Box::pin(tx.reserve());
        assert!(reserve.as_mut().poll(&mut cx).is_pending());
        assert_eq!(now(rx.recv()), Some(Some(7)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(Ok(permit)) = reserve.as_mut().poll(&mut cx) else {
            panic!("a slot was freed");
        };
        drop(reserve);

        let mut recv = Box::pin(rx.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        permit.send(8);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(recv.as_mut().poll(&mut cx), Poll::Ready(Some(8)));
    }

    #[test]
    fn a_dropped_permit_wakes_a_waiting_sender() {
        let (tx, _rx) = channel::<u32, 1>();
        let permit = tx.try_reserve().unwrap();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut reserve = Box::pin(tx.reserve());
        assert!(reserve.as_mut().poll(&mut cx).is_pending());
        drop(permit);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(reserve.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    }

    #[test]
    fn a_gone_receiver_fails_senders_wakes_the_waiting_ones_and_drops_what_was_queued() {
        let (tx, rx) = channel::<Arc<()>, 1>();
        let value = Arc::new(());
        tx.try_reserve().unwrap().send(value.clone());
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut reserve = Box::pin(tx.reserve());
        assert!(reserve.as_mut().poll(&mut cx).is_pending());

        drop(rx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(matches!(
            reserve.as_mut().poll(&mut cx),
            Poll::Ready(Err(Closed))
        ));
        drop(reserve);
        assert!(tx.is_closed());
        assert_eq!(tx.try_reserve().unwrap_err(), TryReserveError::Closed);
        assert_eq!(now(tx.send(value.clone())), Some(Err(Closed)));
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_permit_taken_before_the_receiver_went_drops_its_value() {
        let (tx, rx) = channel::<Arc<()>, 1>();
        let value = Arc::new(());
        let permit = tx.try_reserve().unwrap();
        drop(rx);
        permit.send(value.clone());
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_waiting_receiver_is_woken_when_the_sender_is_gone() {
        let (tx, mut rx) = channel::<u32, 1>();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut recv = Box::pin(rx.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(recv.as_mut().poll(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn the_ring_wraps_around() {
        let (tx, mut rx) = channel::<usize, 3>();
        for i in 0..20 {
            tx.try_reserve().unwrap().send(i);
            if i % 2 == 1 {
                tx.try_reserve().unwrap().send(100 + i);
                assert_eq!(now(rx.recv()), Some(Some(i - 1)));
                assert_eq!(now(rx.recv()), Some(Some(i)));
                assert_eq!(now(rx.recv()), Some(Some(100 + i)));
            }
        }
    }
}
