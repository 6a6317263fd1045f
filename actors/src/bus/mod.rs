//! The node's event bus (the seed's EventBus): in-process publish-subscribe with bounded
//! per-subscriber buffers, and a [`bridge`] that forwards events to the other nodes of the
//! cluster.
//!
//! # Slow subscribers
//!
//! Every subscription has its own bounded buffer ([`BusConfig::subscriber_buffer`]). When a
//! subscriber's buffer is full, the bus drops the *new* event for that subscriber only and
//! counts it (`ire_bus_events_dropped_total`, and [`LocalEventBus::dropped_events`] per
//! subscription). The publisher never waits and the other subscribers are not affected: a
//! subscriber that cannot keep up loses events rather than stalling the node. Nothing in the
//! bus is an unbounded queue: [`EventBus::publish_async`] goes through a bounded queue too and
//! fails with `Overloaded` when it is full.
//!
//! # Cost of a delivery
//!
//! A published event is allocated once and shared (`Arc`) by every subscriber that matches;
//! the filters are evaluated by the publisher, so a subscriber is only woken for events it
//! wants. Each subscriber's buffer is a fixed lock-free queue with its waker (`bus/buffer.rs`),
//! so a delivery is a reference-count increment, one compare-and-swap and a wake-up.

pub mod bridge;
mod buffer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use ire_core::{Error, Event, EventBus, EventFilter, Result, SharedEvent, Subscription};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metric_names;
use buffer::{Buffer, BufferReader, Pushed};

pub use bridge::{BusBridge, BusBridgeArgs, BusBridgeMessage, ForwardedEvent, ORIGIN_NODE_KEY};

/// Sizes of the bus's bounded buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusConfig {
    /// Events buffered per subscriber before new ones are dropped for it.
    pub subscriber_buffer: usize,
    /// Events queued by `publish_async` before it fails with `Overloaded`.
    pub async_queue: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            subscriber_buffer: 1024,
            async_queue: 8192,
        }
    }
}

/// One subscriber as the bus sees it.
struct Slot {
    id: String,
    filter: EventFilter,
    buffer: Arc<Buffer>,
}

struct BusInner {
    config: BusConfig,
    /// Copy-on-write list: a publish takes a snapshot under a short read lock, so
    /// subscribing never blocks a delivery in progress.
    slots: RwLock<Arc<Vec<Arc<Slot>>>>,
    closed: AtomicBool,
    async_tx: Mutex<Option<mpsc::Sender<Event>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    published: metrics::Counter,
    delivered: metrics::Counter,
    dropped: metrics::Counter,
    subscribers: metrics::Gauge,
}

impl BusInner {
    fn snapshot(&self) -> Arc<Vec<Arc<Slot>>> {
        self.slots.read().expect("bus lock poisoned").clone()
    }

    /// Puts the event in every matching subscriber's buffer, without waiting.
    fn deliver(&self, event: Event) {
        self.published.increment(1);
        let slots = self.snapshot();
        // One allocation per publish: subscribers share the event instead of each copying
        // it (a copy of an event with its two maps costs more than the delivery itself).
        let event: SharedEvent = Arc::new(event);
        let mut delivered = 0u64;
        for slot in slots.iter().filter(|s| s.filter.matches(&event)) {
            delivered += self.offer(slot, Arc::clone(&event));
        }
        self.delivered.increment(delivered);
    }

    /// Offers one event to one subscriber; 1 when it was buffered.
    fn offer(&self, slot: &Slot, event: SharedEvent) -> u64 {
        match slot.buffer.push(event) {
            Pushed::Buffered => 1,
            Pushed::Full => {
                self.dropped.increment(1);
                tracing::debug!(
                    component = "bus",
                    subscription = %slot.id,
                    "subscriber buffer full, event dropped"
                );
                0
            }
            // The subscriber went away; its slot is being removed.
            Pushed::Closed => 0,
        }
    }

    fn remove(&self, id: &str) {
        let mut guard = self.slots.write().expect("bus lock poisoned");
        if let Some(gone) = guard.iter().find(|s| s.id == id) {
            // Publishers still holding the old list skip it from now on.
            gone.buffer.close();
            let next: Vec<Arc<Slot>> = guard.iter().filter(|s| s.id != id).cloned().collect();
            *guard = Arc::new(next);
            self.subscribers.set(guard.len() as f64);
        }
    }
}

/// The in-process event bus. Cheap to clone; clones share the same subscribers.
///
/// Must be created inside a Tokio runtime (it spawns the `publish_async` dispatcher).
/// Metric handles are taken from the recorder installed when the bus is created.
#[derive(Clone)]
pub struct LocalEventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for LocalEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEventBus")
            .field("config", &self.inner.config)
            .field("subscribers", &self.subscriber_count())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl LocalEventBus {
    /// A bus with default buffer sizes.
    pub fn new() -> Self {
        Self::with_config(BusConfig::default())
    }

    /// A bus with the given buffer sizes (each at least 1).
    pub fn with_config(config: BusConfig) -> Self {
        let config = BusConfig {
            subscriber_buffer: config.subscriber_buffer.max(1),
            async_queue: config.async_queue.max(1),
        };
        let (tx, mut rx) = mpsc::channel::<Event>(config.async_queue);
        let inner = Arc::new(BusInner {
            config,
            slots: RwLock::new(Arc::new(Vec::new())),
            closed: AtomicBool::new(false),
            async_tx: Mutex::new(Some(tx)),
            dispatcher: Mutex::new(None),
            published: metrics::counter!(metric_names::BUS_EVENTS_PUBLISHED_TOTAL),
            delivered: metrics::counter!(metric_names::BUS_EVENTS_DELIVERED_TOTAL),
            dropped: metrics::counter!(metric_names::BUS_EVENTS_DROPPED_TOTAL),
            subscribers: metrics::gauge!(metric_names::BUS_SUBSCRIBERS),
        });
        // The dispatcher holds only a weak reference: dropping every bus handle ends it.
        let weak: Weak<BusInner> = Arc::downgrade(&inner);
        let handle = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match weak.upgrade() {
                    Some(inner) => inner.deliver(event),
                    None => break,
                }
            }
        });
        *inner.dispatcher.lock().expect("bus lock poisoned") = Some(handle);
        LocalEventBus { inner }
    }

    /// The number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.inner.snapshot().len()
    }

    /// Events dropped for a subscription because its buffer was full (None: no such
    /// subscription).
    pub fn dropped_events(&self, subscription_id: &str) -> Option<u64> {
        self.inner
            .snapshot()
            .iter()
            .find(|s| s.id == subscription_id)
            .map(|s| s.buffer.dropped())
    }

    /// True once [`EventBus::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Canceled {
                message: "event bus is closed".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl Default for LocalEventBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for LocalEventBus {
    async fn publish(&self, event: Event) -> Result<()> {
        self.check_open()?;
        self.inner.deliver(event);
        Ok(())
    }

    async fn publish_async(&self, event: Event) -> Result<()> {
        self.check_open()?;
        let tx = self
            .inner
            .async_tx
            .lock()
            .expect("bus lock poisoned")
            .clone();
        let Some(tx) = tx else {
            return Err(Error::Canceled {
                message: "event bus is closed".into(),
            });
        };
        tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded {
                message: format!(
                    "event bus async queue is full ({} events)",
                    self.inner.config.async_queue
                ),
            },
            mpsc::error::TrySendError::Closed(_) => Error::Canceled {
                message: "event bus is closed".into(),
            },
        })
    }

    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription> {
        self.check_open()?;
        let id = uuid::Uuid::new_v4().to_string();
        let buffer = Buffer::new(self.inner.config.subscriber_buffer);
        let slot = Arc::new(Slot {
            id: id.clone(),
            filter,
            buffer: buffer.clone(),
        });
        {
            let mut guard = self.inner.slots.write().expect("bus lock poisoned");
            // Re-checked under the lock so that a subscription cannot outlive `close`.
            self.check_open()?;
            let mut next: Vec<Arc<Slot>> = guard.as_ref().clone();
            next.push(slot);
            *guard = Arc::new(next);
            self.inner.subscribers.set(guard.len() as f64);
        }
        let weak = Arc::downgrade(&self.inner);
        let sub_id = id.clone();
        Ok(Subscription::new(id, BufferReader(buffer), move || {
            if let Some(inner) = weak.upgrade() {
                inner.remove(&sub_id);
            }
        }))
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Events already accepted by publish_async are delivered before subscriptions end.
        drop(
            self.inner
                .async_tx
                .lock()
                .expect("bus lock poisoned")
                .take(),
        );
        let dispatcher = self
            .inner
            .dispatcher
            .lock()
            .expect("bus lock poisoned")
            .take();
        if let Some(handle) = dispatcher {
            let _ = handle.await;
        }
        // Every subscription ends once its buffer is read.
        let mut guard = self.inner.slots.write().expect("bus lock poisoned");
        for slot in guard.iter() {
            slot.buffer.close();
        }
        *guard = Arc::new(Vec::new());
        self.inner.subscribers.set(0.0);
        Ok(())
    }
}
