//! One subscriber's bounded buffer: a lock-free queue the publisher pushes into and the
//! subscription pops from, with the subscriber's waker.
//!
//! Why not a tokio channel: a delivery is the bus's unit of work (16 per event with 16
//! subscribers), and a bounded tokio `mpsc` spends several atomic read-modify-writes per
//! message on its semaphore and block list. A fixed array queue needs one compare-and-swap
//! to push and one to pop, and the waker is touched once per delivery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crossbeam_queue::ArrayQueue;
use futures::task::AtomicWaker;
use ire_core::{EventSource, SharedEvent};

/// The state a publisher and one subscription share.
pub(crate) struct Buffer {
    queue: ArrayQueue<SharedEvent>,
    waker: AtomicWaker,
    /// Set once no more events will be pushed (unsubscribed, or the bus closed).
    closed: AtomicBool,
    /// Events this subscriber lost because its buffer was full.
    dropped: AtomicU64,
}

/// What [`Buffer::push`] did with an event.
pub(crate) enum Pushed {
    /// Buffered; the subscriber was woken.
    Buffered,
    /// The buffer was full: the event was dropped for this subscriber and counted.
    Full,
    /// The subscription has ended.
    Closed,
}

impl Buffer {
    /// An empty buffer holding up to `capacity` events (at least 1).
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Buffer {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        })
    }

    /// Offers an event without waiting.
    pub(crate) fn push(&self, event: SharedEvent) -> Pushed {
        if self.closed.load(Ordering::Acquire) {
            return Pushed::Closed;
        }
        match self.queue.push(event) {
            Ok(()) => {
                self.waker.wake();
                Pushed::Buffered
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Pushed::Full
            }
        }
    }

    /// Ends the stream once the buffered events are read.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Events dropped so far because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The subscription's end of a [`Buffer`].
pub(crate) struct BufferReader(pub(crate) Arc<Buffer>);

impl EventSource for BufferReader {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedEvent>> {
        let buffer = &self.0;
        if let Some(e) = buffer.queue.pop() {
            return Poll::Ready(Some(e));
        }
        // Register before looking again, so that a push between the first look and the
        // registration still wakes this task.
        buffer.waker.register(cx.waker());
        if let Some(e) = buffer.queue.pop() {
            return Poll::Ready(Some(e));
        }
        if buffer.closed.load(Ordering::Acquire) {
            // Every push happened before `closed` was set: one more look sees them all.
            return Poll::Ready(buffer.queue.pop());
        }
        Poll::Pending
    }

    fn close(&mut self) {
        self.0.close();
    }
}
