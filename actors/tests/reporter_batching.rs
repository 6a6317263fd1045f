//! Seed property 96: the reporter batches writes; and no record is lost on the way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ire_actors::reporter::{MemoryStorage, ReporterConfig, ReporterHandle, EXECUTIONS};
use ire_core::testsuite::eventually;
use ire_core::{
    Error, ErrorClass, Event, ExecutionQuery, ExecutionRecord, ExecutionStatus, Query, Reporter,
    Result, StorageBackend,
};
use serde_json::Value;

/// Counts the writes that reach the inner store; can fail the first `fail_first` batches.
#[derive(Default)]
struct CountingStorage {
    inner: MemoryStorage,
    writes: AtomicUsize,
    fail_first: AtomicUsize,
}

#[async_trait]
impl StorageBackend for CountingStorage {
    async fn save(&self, c: &str, k: &str, v: Value) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.save(c, k, v).await
    }
    async fn save_batch(&self, c: &str, items: Vec<(String, Value)>) -> Result<()> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::other(ErrorClass::Retryable, "disk full", None));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.save_batch(c, items).await
    }
    async fn load(&self, c: &str, k: &str) -> Result<Value> {
        self.inner.load(c, k).await
    }
    async fn query(&self, q: &Query) -> Result<Vec<Value>> {
        self.inner.query(q).await
    }
    async fn delete(&self, c: &str, k: &str) -> Result<()> {
        self.inner.delete(c, k).await
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

fn record(i: usize) -> ExecutionRecord {
    let start = chrono::Utc::now();
    ExecutionRecord {
        id: format!("exec-{i}"),
        plugin_name: "kill".into(),
        resource_id: format!("id-{}", i % 7),
        resource_name: format!("web-{}", i % 7),
        resource_key: None,
        start_time: start,
        end_time: start + chrono::Duration::milliseconds(5),
        duration: Duration::from_millis(5),
        status: ExecutionStatus::Success,
        error: String::new(),
        metadata: Default::default(),
        principal: "ops".into(),
        campaign: None,
        step: None,
        node: None,
        fencing_token: None,
        time_to_detect: None,
        time_to_recover: None,
    }
}

async fn stored(s: &CountingStorage) -> usize {
    s.inner
        .query(&Query {
            collection: EXECUTIONS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn writes_are_batched_by_size() {
    let storage = Arc::new(CountingStorage::default());
    let (reporter, _join) = ReporterHandle::spawn(
        storage.clone(),
        ReporterConfig {
            batch_size: 100,
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..1000 {
        reporter.record_execution(record(i)).await.unwrap();
    }
    eventually(Duration::from_secs(5), "1000 records stored", || async {
        (stored(&storage).await == 1000).then_some(())
    })
    .await;
    let writes = storage.writes.load(Ordering::SeqCst);
    assert_eq!(
        writes, 10,
        "1000 records in batches of 100 took {writes} writes"
    );
}

#[tokio::test]
async fn a_partial_batch_is_written_when_the_interval_elapses() {
    let storage = Arc::new(CountingStorage::default());
    let (reporter, _join) = ReporterHandle::spawn(
        storage.clone(),
        ReporterConfig {
            batch_size: 1000,
            flush_interval: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..3 {
        reporter.record_execution(record(i)).await.unwrap();
    }
    reporter
        .record_event(Event::new("fault.injected", "engine"))
        .await
        .unwrap();
    // Nobody flushes: the interval does.
    eventually(
        Duration::from_secs(5),
        "the partial batch stored",
        || async { (stored(&storage).await == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        storage.writes.load(Ordering::SeqCst),
        2,
        "one write per collection"
    );
}

#[tokio::test]
async fn a_batch_that_fails_to_store_is_retried_not_dropped() {
    let storage = Arc::new(CountingStorage::default());
    storage.fail_first.store(2, Ordering::SeqCst);
    let (reporter, _join) = ReporterHandle::spawn(
        storage.clone(),
        ReporterConfig {
            batch_size: 10,
            flush_interval: Duration::from_millis(30),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..25 {
        reporter.record_execution(record(i)).await.unwrap();
    }
    eventually(Duration::from_secs(5), "every record stored", || async {
        (stored(&storage).await == 25).then_some(())
    })
    .await;
    let all = reporter
        .query_executions(&ExecutionQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
}

#[tokio::test]
async fn queries_read_their_own_writes() {
    let (reporter, _join) = ReporterHandle::spawn(
        Arc::new(MemoryStorage::new()),
        ReporterConfig {
            batch_size: 1000,
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    reporter.record_execution(record(1)).await.unwrap();
    let got = reporter
        .query_executions(&ExecutionQuery::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn set_storage_moves_pending_records_to_the_old_store_first() {
    let first = Arc::new(CountingStorage::default());
    let second = Arc::new(CountingStorage::default());
    let (reporter, _join) = ReporterHandle::spawn(
        first.clone(),
        ReporterConfig {
            batch_size: 1000,
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    reporter.record_execution(record(1)).await.unwrap();
    reporter.set_storage(second.clone()).await.unwrap();
    reporter.record_execution(record(2)).await.unwrap();
    reporter.flush().await.unwrap();
    assert_eq!(stored(&first).await, 1);
    assert_eq!(stored(&second).await, 1);
}

#[tokio::test]
async fn handles_follow_the_actor_when_a_supervisor_restarts_it() {
    use ire_actors::reporter::{ReporterActor, ReporterArgs};
    use ractor::Actor;
    let storage = Arc::new(CountingStorage::default());
    let args = ReporterArgs::new(storage.clone(), ReporterConfig::default());
    let handle = args.handle();
    let (first, join) = Actor::spawn(None, ReporterActor, args.clone())
        .await
        .unwrap();
    handle.record_execution(record(1)).await.unwrap();
    // A drain handles what was sent and stores the last batch.
    first.drain().unwrap();
    join.await.unwrap();
    assert_eq!(stored(&storage).await, 1);
    // What a supervisor does: start it again with the same arguments.
    let (_second, _join) = Actor::spawn(None, ReporterActor, args).await.unwrap();
    handle.record_execution(record(2)).await.unwrap();
    assert_eq!(
        handle
            .query_executions(&ExecutionQuery::default())
            .await
            .unwrap()
            .len(),
        2
    );
}
