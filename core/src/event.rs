//! Events and the event bus contract (the seed's Event, EventBus, EventFilter, Subscription).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::resource::{Labels, Metadata, Resource};

/// Well-known event types. Others are free-form.
pub mod event_type {
    /// An execution started.
    pub const EXECUTION_STARTED: &str = "execution.started";
    /// An execution made progress.
    pub const EXECUTION_PROGRESS: &str = "execution.progress";
    /// An execution finished (any status).
    pub const EXECUTION_FINISHED: &str = "execution.finished";
    /// A fault was injected.
    pub const FAULT_INJECTED: &str = "fault.injected";
    /// A fault was reverted.
    pub const FAULT_REVERTED: &str = "fault.reverted";
    /// A resource was seen unhealthy.
    pub const RESOURCE_UNHEALTHY: &str = "resource.unhealthy";
    /// A resource was seen healthy again.
    pub const RESOURCE_HEALTHY: &str = "resource.healthy";
    /// A resource changed (from an adapter watch).
    pub const RESOURCE_CHANGED: &str = "resource.changed";
}

/// Something that happened, published on the bus and recorded by the reporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Free-form type, dotted (see [`event_type`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// Who emitted it (component or plugin name).
    pub source: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The resource it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Payload.
    #[serde(default)]
    pub data: Metadata,
    /// String metadata used for filtering (execution_id, campaign, node, ...).
    #[serde(default)]
    pub metadata: Labels,
}

impl Event {
    /// A new event of `type_` from `source`, now, with a fresh id.
    pub fn new(type_: impl Into<String>, source: impl Into<String>) -> Self {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            type_: type_.into(),
            source: source.into(),
            timestamp: Utc::now(),
            resource: None,
            data: Metadata::new(),
            metadata: Labels::new(),
        }
    }

    /// Sets the resource.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Adds a payload entry.
    pub fn with_data(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Which events a subscriber wants: an event passes only if it meets every criterion.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Accepted types; a pattern ending in `*` matches a prefix (empty: all).
    #[serde(default)]
    pub types: Vec<String>,
    /// Accepted sources (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Metadata entries the event must carry with these values.
    #[serde(default)]
    pub metadata: Labels,
}

impl EventFilter {
    /// True when the event meets every criterion.
    pub fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| type_matches(t, &e.type_)))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == &e.source))
            && self
                .metadata
                .iter()
                .all(|(k, v)| e.metadata.get(k) == Some(v))
    }
}

fn type_matches(pattern: &str, type_: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => type_.starts_with(prefix),
        None => pattern == type_,
    }
}

/// An event as subscribers receive it: shared, because one published event goes to every
/// matching subscriber and copying it for each would cost more than delivering it.
pub type SharedEvent = Arc<Event>;

/// Where a subscription's events come from: a bus implements it for its per-subscriber
/// buffers. Polled rather than async so that receiving needs no allocation per event.
pub trait EventSource: Send + 'static {
    /// The next event (`Ready(Some)`), the end of the stream (`Ready(None)`), or `Pending`
    /// with `cx`'s waker woken when either becomes available.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedEvent>>;
    /// Stops delivery: events already buffered can still be read, then the stream ends.
    fn close(&mut self);
}

impl EventSource for mpsc::Receiver<SharedEvent> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SharedEvent>> {
        mpsc::Receiver::poll_recv(self, cx)
    }

    fn close(&mut self) {
        mpsc::Receiver::close(self)
    }
}

/// A live subscription: events arrive on [`Subscription::recv`] (or as a
/// [`futures::Stream`]) until it is unsubscribed or the bus closes, after which `recv`
/// returns `None`.
pub struct Subscription {
    id: String,
    events: Box<dyn EventSource>,
    on_unsubscribe: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// A subscription reading from `events`; `on_unsubscribe` detaches it from its bus.
    pub fn new(
        id: impl Into<String>,
        events: impl EventSource,
        on_unsubscribe: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Subscription {
            id: id.into(),
            events: Box::new(events),
            on_unsubscribe: Some(Box::new(on_unsubscribe)),
        }
    }

    /// The subscription's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event, or `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<SharedEvent> {
        std::future::poll_fn(|cx| self.events.poll_recv(cx)).await
    }

    /// The next event within `timeout`, or `None`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<SharedEvent> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// An event already buffered, without waiting (`None`: nothing buffered, or ended).
    pub fn try_recv(&mut self) -> Option<SharedEvent> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.events.poll_recv(&mut cx) {
            Poll::Ready(e) => e,
            Poll::Pending => None,
        }
    }

    /// Stops delivery; events already queued can still be read, then `recv` returns `None`.
    pub fn unsubscribe(&mut self) -> Result<()> {
        if let Some(f) = self.on_unsubscribe.take() {
            f();
        }
        self.events.close();
        Ok(())
    }
}

impl futures::Stream for Subscription {
    type Item = SharedEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SharedEvent>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.on_unsubscribe.take() {
            f();
        }
    }
}

/// Publish-subscribe messaging between components (the seed's EventBus).
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Delivers the event to every matching subscriber's buffer before returning.
    async fn publish(&self, event: Event) -> Result<()>;
    /// Queues the event for delivery and returns at once.
    async fn publish_async(&self, event: Event) -> Result<()>;
    /// Subscribes to events that match the filter.
    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription>;
    /// Ends every subscription; later publishes fail.
    async fn close(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_needs_every_criterion() {
        let e = Event::new("fault.injected", "engine").with_metadata("campaign", "c1");
        let mut f = EventFilter {
            types: vec!["fault.*".into()],
            ..Default::default()
        };
        assert!(f.matches(&e));
        f.sources = vec!["monitor".into()];
        assert!(!f.matches(&e));
        f.sources = vec!["engine".into()];
        f.metadata.insert("campaign".into(), "c2".into());
        assert!(!f.matches(&e));
        f.metadata.insert("campaign".into(), "c1".into());
        assert!(f.matches(&e));
    }
}
