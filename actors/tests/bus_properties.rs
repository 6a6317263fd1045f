//! The event bus against seed properties 38-42, and its slow-subscriber policy.

use std::time::Duration;

use ire_actors::bus::{BusConfig, LocalEventBus};
use ire_core::{Error, Event, EventBus, EventFilter, SharedEvent, Subscription};
use proptest::prelude::*;

const DEADLINE: Duration = Duration::from_secs(5);

/// Reads events until none arrives for a short while.
async fn drain(sub: &mut Subscription) -> Vec<SharedEvent> {
    let mut out = Vec::new();
    while let Some(e) = sub.recv_timeout(Duration::from_millis(50)).await {
        out.push(e);
    }
    out
}

fn event_strategy() -> impl Strategy<Value = Event> {
    (
        prop::sample::select(vec!["fault.injected", "fault.reverted", "resource.healthy"]),
        prop::sample::select(vec!["engine", "monitor"]),
        prop::option::of(prop::sample::select(vec!["c1", "c2"])),
    )
        .prop_map(|(t, s, c)| {
            let e = Event::new(t, s);
            match c {
                Some(c) => e.with_metadata("campaign", c),
                None => e,
            }
        })
}

fn filter_strategy() -> impl Strategy<Value = EventFilter> {
    (
        prop::collection::vec(
            prop::sample::select(vec!["fault.*", "fault.injected", "resource.healthy"]),
            0..2,
        ),
        prop::collection::vec(prop::sample::select(vec!["engine", "monitor"]), 0..2),
        prop::option::of(prop::sample::select(vec!["c1", "c2"])),
    )
        .prop_map(|(types, sources, campaign)| EventFilter {
            types: types.into_iter().map(String::from).collect(),
            sources: sources.into_iter().map(String::from).collect(),
            metadata: campaign
                .map(|c| [("campaign".to_owned(), c.to_owned())].into())
                .unwrap_or_default(),
        })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Properties 38, 39 and 42: every subscription receives exactly the published events
    /// that meet all of its filter's criteria (types, sources, metadata), in publish order.
    #[test]
    fn each_subscriber_receives_exactly_the_matching_events_in_order(
        filters in prop::collection::vec(filter_strategy(), 1..5),
        events in prop::collection::vec(event_strategy(), 0..40),
        use_async in any::<bool>(),
    ) {
        rt().block_on(async {
            let bus = LocalEventBus::new();
            let mut subs = Vec::new();
            for f in &filters {
                subs.push(bus.subscribe(f.clone()).await.unwrap());
            }
            for e in &events {
                if use_async {
                    bus.publish_async(e.clone()).await.unwrap();
                } else {
                    bus.publish(e.clone()).await.unwrap();
                }
            }
            if use_async {
                bus.close().await.unwrap(); // delivers what was queued, then ends the streams
            }
            for (f, sub) in filters.iter().zip(subs.iter_mut()) {
                let want: Vec<String> = events.iter().filter(|e| naive_match(f, e)).map(|e| e.id.clone()).collect();
                let mut got = Vec::new();
                while got.len() < want.len() {
                    match sub.recv_timeout(DEADLINE).await {
                        Some(e) => got.push(e.id.clone()),
                        None => break,
                    }
                }
                // Nothing beyond the matching events is waiting.
                prop_assert!(sub.try_recv().is_none());
                prop_assert_eq!(got, want);
            }
            Ok(())
        })?;
    }
}

/// The filter semantics written out independently of `EventFilter::matches`.
fn naive_match(f: &EventFilter, e: &Event) -> bool {
    let type_ok = f.types.is_empty()
        || f.types.iter().any(|t| {
            if let Some(p) = t.strip_suffix('*') {
                e.type_.starts_with(p)
            } else {
                *t == e.type_
            }
        });
    let source_ok = f.sources.is_empty() || f.sources.contains(&e.source);
    let meta_ok = f
        .metadata
        .iter()
        .all(|(k, v)| e.metadata.get(k).map(String::as_str) == Some(v.as_str()));
    type_ok && source_ok && meta_ok
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let bus = LocalEventBus::new();
    let mut a = bus.subscribe(EventFilter::default()).await.unwrap();
    let mut b = bus.subscribe(EventFilter::default()).await.unwrap();
    bus.publish(Event::new("x", "t")).await.unwrap();
    a.unsubscribe().unwrap();
    assert_eq!(bus.subscriber_count(), 1);
    bus.publish(Event::new("y", "t")).await.unwrap();
    // The event queued before unsubscribing can still be read; then the stream ends.
    assert_eq!(a.recv().await.unwrap().type_, "x");
    assert!(a.recv().await.is_none());
    let got: Vec<String> = drain(&mut b)
        .await
        .into_iter()
        .map(|e| e.type_.clone())
        .collect();
    assert_eq!(got, ["x", "y"]);
}

#[tokio::test]
async fn dropping_a_subscription_detaches_it() {
    let bus = LocalEventBus::new();
    let sub = bus.subscribe(EventFilter::default()).await.unwrap();
    assert_eq!(bus.subscriber_count(), 1);
    drop(sub);
    assert_eq!(bus.subscriber_count(), 0);
}

#[tokio::test]
async fn close_ends_every_subscription_after_queued_events() {
    let bus = LocalEventBus::new();
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(bus.subscribe(EventFilter::default()).await.unwrap());
    }
    for i in 0..10 {
        bus.publish_async(Event::new(format!("e{i}"), "t"))
            .await
            .unwrap();
    }
    bus.close().await.unwrap();
    bus.close().await.unwrap(); // idempotent
    for sub in &mut subs {
        let mut n = 0;
        // Every event accepted before close is delivered, then the stream ends.
        while let Some(_e) = tokio::time::timeout(DEADLINE, sub.recv()).await.unwrap() {
            n += 1;
        }
        assert_eq!(n, 10);
        sub.unsubscribe().unwrap(); // after close: still fine
    }
    assert!(matches!(
        bus.publish(Event::new("late", "t")).await,
        Err(Error::Canceled { .. })
    ));
    assert!(bus.publish_async(Event::new("late", "t")).await.is_err());
    assert!(bus.subscribe(EventFilter::default()).await.is_err());
}

#[tokio::test]
async fn a_slow_subscriber_stalls_neither_the_publisher_nor_the_others() {
    let bus = LocalEventBus::with_config(BusConfig {
        subscriber_buffer: 8,
        async_queue: 64,
    });
    let slow = bus.subscribe(EventFilter::default()).await.unwrap(); // never read
    let mut fast = bus.subscribe(EventFilter::default()).await.unwrap();
    let n = 5_000u64;
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            match tokio::time::timeout(DEADLINE, fast.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
        got
    });
    let publisher = async {
        for i in 0..n {
            bus.publish(Event::new("tick", "t").with_data("i", i))
                .await
                .unwrap();
            if i % 4 == 0 {
                tokio::task::yield_now().await; // let the fast reader keep up
            }
        }
    };
    tokio::time::timeout(DEADLINE, publisher)
        .await
        .expect("the publisher was stalled by a slow subscriber");
    assert_eq!(reader.await.unwrap(), n, "the fast subscriber lost events");
    // The slow one kept its buffer's worth and the rest were counted as its lag.
    assert_eq!(bus.dropped_events(slow.id()), Some(n - 8));
}

#[tokio::test(flavor = "current_thread")]
async fn publish_async_rejects_when_its_queue_is_full() {
    let bus = LocalEventBus::with_config(BusConfig {
        subscriber_buffer: 8,
        async_queue: 4,
    });
    // On a current-thread runtime the dispatcher cannot run until this task yields.
    for _ in 0..4 {
        bus.publish_async(Event::new("e", "t")).await.unwrap();
    }
    let err = bus.publish_async(Event::new("e", "t")).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err}");
    assert!(err.is_retryable());
}

#[test]
fn no_wake_up_is_lost_when_publisher_and_subscribers_run_on_different_threads() {
    // Subscribers park and wake thousands of times while the publisher runs on another
    // worker: a lost wake-up would leave one of them waiting forever (the deadline fails).
    rt().block_on(async {
        let n = 20_000u64;
        let bus = LocalEventBus::with_config(BusConfig {
            subscriber_buffer: n as usize,
            async_queue: 64,
        });
        let mut readers = Vec::new();
        for _ in 0..4 {
            let mut sub = bus.subscribe(EventFilter::default()).await.unwrap();
            readers.push(tokio::spawn(async move {
                let mut next = 0u64;
                while next < n {
                    let e = tokio::time::timeout(DEADLINE, sub.recv())
                        .await
                        .expect("a subscriber was never woken")
                        .expect("the subscription ended early");
                    assert_eq!(e.data["i"], next, "events out of order");
                    next += 1;
                }
            }));
        }
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    bus.publish(Event::new("tick", "t").with_data("i", i))
                        .await
                        .unwrap();
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        publisher.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_subscription_is_a_stream_and_can_be_polled_without_waiting() {
    use futures::StreamExt;
    let bus = LocalEventBus::new();
    let mut sub = bus.subscribe(EventFilter::default()).await.unwrap();
    assert!(sub.try_recv().is_none(), "nothing published yet");
    bus.publish(Event::new("a", "t")).await.unwrap();
    bus.publish(Event::new("b", "t")).await.unwrap();
    assert_eq!(sub.try_recv().unwrap().type_, "a");
    assert_eq!(sub.next().await.unwrap().type_, "b");
    bus.close().await.unwrap();
    assert!(sub.next().await.is_none(), "the stream ends with the bus");
}
