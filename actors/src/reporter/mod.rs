//! The reporter (the seed's Reporter): a [`ReporterActor`] batches execution records and
//! events into a [`StorageBackend`], and a [`ReporterHandle`] answers queries, computes
//! [`Statistics`] and renders reports with registered [`ReportFormatter`]s.
//!
//! Batching (seed property 96): records are buffered by the actor and written with one
//! `save_batch` per collection when [`ReporterConfig::batch_size`] records are pending or
//! every [`ReporterConfig::flush_interval`], whichever comes first. `record_*` returns once
//! the record is accepted into the batch; [`ReporterHandle::flush`] waits until everything
//! accepted so far is stored, and queries flush first so that they read their own writes.
//! At most [`ReporterConfig::max_pending`] records wait in memory: beyond that `record_*`
//! waits (back-pressure), and fails with `Overloaded` after
//! [`ReporterConfig::enqueue_timeout`]. A batch that fails to store is kept and retried at
//! the next interval; no record is dropped.
//!
//! Stopping: records are accepted before they are stored, so the actor must be stopped with a
//! drain ([`ReporterHandle::shutdown`], or `drain()` from a supervisor), which handles every
//! record already sent and stores the last batch. Killing it loses what was not yet stored;
//! callers that need a record durable before going on call [`ReporterHandle::flush`].

pub mod format;
pub mod stats;
pub mod storage;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    Error, Event, EventQuery, ExecutionQuery, ExecutionRecord, Query, Report, ReportFilter,
    ReportFormatter, Reporter, Result, Statistics, StatisticsFilter, StorageBackend,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metric_names;

pub use format::{HtmlFormatter, JsonFormatter, MarkdownFormatter};
pub use storage::{MemoryStorage, SledStorage};

/// The collection execution records are stored in.
pub const EXECUTIONS: &str = "executions";
/// The collection events are stored in.
pub const EVENTS: &str = "events";

/// How the reporter batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReporterConfig {
    /// A batch is written as soon as this many records are pending.
    pub batch_size: usize,
    /// Pending records are written at least this often.
    pub flush_interval: Duration,
    /// Records that may wait in memory before `record_*` waits.
    pub max_pending: usize,
    /// How long `record_*` waits for room before failing with `Overloaded`.
    pub enqueue_timeout: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        ReporterConfig {
            batch_size: 512,
            flush_interval: Duration::from_millis(200),
            max_pending: 65_536,
            enqueue_timeout: Duration::from_secs(10),
        }
    }
}

/// A record on its way into storage.
#[derive(Debug)]
enum Item {
    Event(Box<Event>),
    Execution(Box<ExecutionRecord>),
}

/// Messages of the [`ReporterActor`].
pub enum ReporterMessage {
    /// A record to batch; the permit is released once it is stored.
    Record(RecordItem),
    /// Write everything pending, then reply.
    Flush(RpcReplyPort<Result<()>>),
    /// Write everything pending to the current storage, then switch to another.
    SetStorage(Arc<dyn StorageBackend>, RpcReplyPort<Result<()>>),
    /// The flush interval elapsed.
    Tick,
}

impl ractor::Message for ReporterMessage {}

/// A record and the back-pressure permit it holds.
pub struct RecordItem {
    item: Item,
    _permit: OwnedSemaphorePermit,
}

/// Shared between the actor and its handles.
struct Shared {
    config: ReporterConfig,
    storage: RwLock<Arc<dyn StorageBackend>>,
    formatters: RwLock<BTreeMap<String, Arc<dyn ReportFormatter>>>,
    room: Arc<Semaphore>,
    /// The running actor: set by each start, so that handles follow a restart.
    actor: RwLock<Option<ActorRef<ReporterMessage>>>,
}

impl Shared {
    fn actor(&self) -> Result<ActorRef<ReporterMessage>> {
        self.actor
            .read()
            .expect("reporter lock poisoned")
            .clone()
            .ok_or_else(|| actor_gone("not started"))
    }

    fn storage(&self) -> Arc<dyn StorageBackend> {
        self.storage.read().expect("reporter lock poisoned").clone()
    }
}

/// What the [`ReporterActor`] is started with; also builds the handle.
#[derive(Clone)]
pub struct ReporterArgs {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReporterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterArgs")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl ReporterArgs {
    /// Arguments for a reporter over `storage`, with the JSON, Markdown and HTML formatters.
    pub fn new(storage: Arc<dyn StorageBackend>, config: ReporterConfig) -> Self {
        let config = ReporterConfig {
            batch_size: config.batch_size.max(1),
            max_pending: config.max_pending.max(config.batch_size.max(1)),
            ..config
        };
        let mut formatters: BTreeMap<String, Arc<dyn ReportFormatter>> = BTreeMap::new();
        for f in [
            Arc::new(JsonFormatter) as Arc<dyn ReportFormatter>,
            Arc::new(MarkdownFormatter),
            Arc::new(HtmlFormatter),
        ] {
            formatters.insert(f.name().to_owned(), f);
        }
        ReporterArgs {
            shared: Arc::new(Shared {
                config,
                storage: RwLock::new(storage),
                formatters: RwLock::new(formatters),
                room: Arc::new(Semaphore::new(config.max_pending)),
                actor: RwLock::new(None),
            }),
        }
    }

    /// The handle on the actor started (and restarted) with these arguments; it reaches
    /// whichever instance runs.
    pub fn handle(&self) -> ReporterHandle {
        ReporterHandle {
            shared: self.shared.clone(),
        }
    }
}

/// The actor's state: the batch being filled.
pub struct ReporterState {
    shared: Arc<Shared>,
    /// The pending records, kept typed (and holding their permits) until stored: a failed
    /// write is retried from them, and they are encoded once per attempt.
    pending: Vec<RecordItem>,
}

impl ReporterState {
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes the pending batch; on failure it stays pending for the next try (saving the
    /// same keys again is harmless).
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let storage = self.shared.storage();
        let started = std::time::Instant::now();
        let mut events = Vec::new();
        let mut executions = Vec::new();
        // A record that cannot be encoded never will be: it is reported and dropped.
        self.pending.retain(|it| match encode(&it.item) {
            Ok((collection, key, value)) => {
                if collection == EVENTS {
                    events.push((key, value));
                } else {
                    executions.push((key, value));
                }
                true
            }
            Err(e) => {
                tracing::error!(component = "reporter", error = %e, "record not encodable, dropped");
                false
            }
        });
        if !events.is_empty() {
            storage
                .save_batch(EVENTS, events)
                .await
                .map_err(|e| e.context("storing a batch of events"))?;
        }
        if !executions.is_empty() {
            storage
                .save_batch(EXECUTIONS, executions)
                .await
                .map_err(|e| e.context("storing a batch of execution records"))?;
        }
        let n = self.pending.len();
        // Dropping the items releases their permits.
        self.pending.clear();
        metrics::counter!(metric_names::REPORTER_BATCHES_TOTAL).increment(1);
        metrics::counter!(metric_names::REPORTER_RECORDS_STORED_TOTAL).increment(n as u64);
        metrics::histogram!(metric_names::REPORTER_BATCH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn flush_logged(&mut self) {
        if let Err(e) = self.flush().await {
            metrics::counter!(metric_names::REPORTER_FLUSH_FAILURES_TOTAL).increment(1);
            tracing::warn!(
                component = "reporter",
                pending = self.pending(),
                error = %e.chain_message(),
                "batch not stored, will retry"
            );
        }
    }
}

/// Batches records into storage (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReporterActor;

impl Actor for ReporterActor {
    type Msg = ReporterMessage;
    type State = ReporterState;
    type Arguments = ReporterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReporterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = args.shared.config.flush_interval;
        myself.send_interval(interval, || ReporterMessage::Tick);
        *args.shared.actor.write().expect("reporter lock poisoned") = Some(myself.clone());
        Ok(ReporterState {
            shared: args.shared,
            pending: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReporterMessage::Record(item) => {
                state.pending.push(item);
                if state.pending() >= state.shared.config.batch_size {
                    state.flush_logged().await;
                }
            }
            ReporterMessage::Tick => state.flush_logged().await,
            ReporterMessage::Flush(reply) => {
                let r = state.flush().await;
                let _ = reply.send(r);
            }
            ReporterMessage::SetStorage(storage, reply) => {
                let r = state.flush().await;
                if r.is_ok() {
                    *state
                        .shared
                        .storage
                        .write()
                        .expect("reporter lock poisoned") = storage;
                }
                let _ = reply.send(r);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_logged().await;
        Ok(())
    }
}

/// A sortable key: nanoseconds since the epoch, zero-padded, then the id.
fn time_key(t: chrono::DateTime<chrono::Utc>, id: &str) -> String {
    let nanos = t.timestamp_nanos_opt().unwrap_or(0).max(0);
    format!("{nanos:020}-{id}")
}

fn encode(item: &Item) -> Result<(&'static str, String, Value)> {
    let (collection, key, value) = match item {
        Item::Event(e) => (
            EVENTS,
            time_key(e.timestamp, &e.id),
            serde_json::to_value(e),
        ),
        Item::Execution(r) => (
            EXECUTIONS,
            time_key(r.start_time, &r.id),
            serde_json::to_value(r.as_ref()),
        ),
    };
    let value = value.map_err(|e| Error::invalid(format!("{collection} record"), e.to_string()))?;
    Ok((collection, key, value))
}

/// The reporter as the rest of the node sees it. Cheap to clone.
#[derive(Clone)]
pub struct ReporterHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReporterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterHandle")
            .field("config", &self.shared.config)
            .finish()
    }
}

fn actor_gone(e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("reporter actor: {e}"),
        source: None,
    }
}

impl ReporterHandle {
    /// Starts an unsupervised reporter actor over `storage`.
    pub async fn spawn(
        storage: Arc<dyn StorageBackend>,
        config: ReporterConfig,
    ) -> Result<(ReporterHandle, ractor::concurrency::JoinHandle<()>)> {
        let args = ReporterArgs::new(storage, config);
        let (_actor, join) = Actor::spawn(None, ReporterActor, args.clone())
            .await
            .map_err(actor_gone)?;
        Ok((args.handle(), join))
    }

    /// The running actor behind this handle.
    pub fn actor(&self) -> Result<ActorRef<ReporterMessage>> {
        self.shared.actor()
    }

    /// Waits until every record accepted so far is stored.
    pub async fn flush(&self) -> Result<()> {
        ractor::call!(self.shared.actor()?, ReporterMessage::Flush).map_err(actor_gone)?
    }

    /// Stops the actor after it has handled every record already sent and stored the last
    /// batch (a drain: a plain `stop` would drop records still in the mailbox).
    pub async fn shutdown(&self) -> Result<()> {
        let actor = self.shared.actor()?;
        actor
            .drain_and_wait(Some(self.shared.config.enqueue_timeout))
            .await
            .map_err(actor_gone)?;
        Ok(())
    }

    async fn enqueue(&self, item: Item) -> Result<()> {
        let permit = tokio::time::timeout(
            self.shared.config.enqueue_timeout,
            self.shared.room.clone().acquire_owned(),
        )
        .await
        .map_err(|_| Error::Overloaded {
            message: format!(
                "reporter: {} records waiting to be stored",
                self.shared.config.max_pending
            ),
        })?
        .map_err(actor_gone)?;
        self.shared
            .actor()?
            .send_message(ReporterMessage::Record(RecordItem {
                item,
                _permit: permit,
            }))
            .map_err(actor_gone)
    }

    /// Every stored record of a collection that passes `keep`, decoded, in key order.
    async fn load_all<T, F>(&self, collection: &str, query: Query, keep: F) -> Result<Vec<T>>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(&T) -> bool,
    {
        self.flush().await?;
        let values = self.shared.storage().query(&query).await?;
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let t: T = serde_json::from_value(v).map_err(|e| {
                Error::invalid(format!("stored {collection} record"), e.to_string())
            })?;
            if keep(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<ExecutionRecord>> {
        // Single-valued criteria are pushed down to the storage's equality filter.
        let mut filter = serde_json::Map::new();
        if let [p] = q.plugin_names.as_slice() {
            filter.insert("pluginName".into(), Value::String(p.clone()));
        }
        if let [s] = q.statuses.as_slice() {
            filter.insert(
                "status".into(),
                serde_json::to_value(s).unwrap_or(Value::Null),
            );
        }
        if let Some(c) = &q.campaign {
            filter.insert("campaign".into(), Value::String(c.clone()));
        }
        let query = Query {
            collection: EXECUTIONS.into(),
            filter,
            ..Default::default()
        };
        self.load_all(EXECUTIONS, query, |r| q.matches(r)).await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let mut filter = serde_json::Map::new();
        if let [t] = q.types.as_slice() {
            filter.insert("type".into(), Value::String(t.clone()));
        }
        if let [s] = q.sources.as_slice() {
            filter.insert("source".into(), Value::String(s.clone()));
        }
        let query = Query {
            collection: EVENTS.into(),
            filter,
            ..Default::default()
        };
        self.load_all(EVENTS, query, |e| q.matches(e)).await
    }
}

fn paginate<T>(items: Vec<T>, offset: usize, limit: Option<usize>) -> Vec<T> {
    let page = items.into_iter().skip(offset);
    match limit {
        Some(n) => page.take(n).collect(),
        None => page.collect(),
    }
}

fn check_record(r: &ExecutionRecord) -> Result<()> {
    let missing = |f: &str| {
        Error::invalid(
            format!("execution record {:?} {f}", r.id),
            "must not be empty",
        )
    };
    if r.id.is_empty() {
        return Err(Error::invalid("execution record id", "must not be empty"));
    }
    if r.plugin_name.is_empty() {
        return Err(missing("pluginName"));
    }
    if r.resource_id.is_empty() && r.resource_key.is_none() {
        return Err(missing("resourceId"));
    }
    if r.end_time < r.start_time {
        return Err(Error::invalid(
            format!("execution record {:?} endTime", r.id),
            "is before its startTime",
        ));
    }
    if r.status == ire_core::ExecutionStatus::Failed && r.error.is_empty() {
        return Err(missing("error (the record is failed)"));
    }
    Ok(())
}

fn check_event(e: &Event) -> Result<()> {
    if e.id.is_empty() {
        return Err(Error::invalid("event id", "must not be empty"));
    }
    if e.type_.is_empty() {
        return Err(Error::invalid(
            format!("event {:?} type", e.id),
            "must not be empty",
        ));
    }
    if e.source.is_empty() {
        return Err(Error::invalid(
            format!("event {:?} source", e.id),
            "must not be empty",
        ));
    }
    Ok(())
}

#[async_trait]
impl Reporter for ReporterHandle {
    async fn record_event(&self, event: Event) -> Result<()> {
        check_event(&event)?;
        self.enqueue(Item::Event(Box::new(event))).await
    }

    async fn record_execution(&self, record: ExecutionRecord) -> Result<()> {
        check_record(&record)?;
        self.enqueue(Item::Execution(Box::new(record))).await
    }

    async fn query_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        Ok(paginate(
            self.events(query).await?,
            query.offset,
            query.limit,
        ))
    }

    async fn query_executions(&self, query: &ExecutionQuery) -> Result<Vec<ExecutionRecord>> {
        Ok(paginate(
            self.executions(query).await?,
            query.offset,
            query.limit,
        ))
    }

    async fn compute_statistics(&self, filter: &StatisticsFilter) -> Result<Statistics> {
        let records = self.executions(&filter.to_query()).await?;
        Ok(stats::compute(&records))
    }

    async fn generate_report(&self, format: &str, filter: &ReportFilter) -> Result<Vec<u8>> {
        let formatter = {
            let formatters = self
                .shared
                .formatters
                .read()
                .expect("reporter lock poisoned");
            formatters.get(format).cloned().ok_or_else(|| {
                Error::invalid(
                    "report format",
                    format!(
                        "{format:?} is not registered (available: {})",
                        formatters.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?
        };
        let executions = self.executions(&filter.to_query()).await?;
        let statistics = stats::compute(&executions);
        let events = self
            .events(&EventQuery {
                resources: filter.resource_ids.clone(),
                start_time: filter.start_time,
                end_time: filter.end_time,
                ..Default::default()
            })
            .await?;
        let report = Report {
            title: match &filter.campaign {
                Some(c) => format!("ire report: campaign {c}"),
                None => "ire report".to_owned(),
            },
            generated_at: chrono::Utc::now(),
            filter: filter.clone(),
            statistics,
            executions,
            events,
        };
        formatter.format(&report).await
    }

    async fn set_storage(&self, storage: Arc<dyn StorageBackend>) -> Result<()> {
        ractor::call!(self.shared.actor()?, ReporterMessage::SetStorage, storage)
            .map_err(actor_gone)?
    }

    fn register_formatter(&self, formatter: Arc<dyn ReportFormatter>) -> Result<()> {
        let name = formatter.name().to_owned();
        if name.is_empty() {
            return Err(Error::invalid("report formatter name", "must not be empty"));
        }
        self.shared
            .formatters
            .write()
            .expect("reporter lock poisoned")
            .insert(name, formatter);
        Ok(())
    }
}
