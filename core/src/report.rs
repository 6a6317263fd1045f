//! Records, statistics, storage and report formatting (the seed's Reporter section).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::Event;
use crate::lock::FencingToken;
use crate::plugin::ExecutionStatus;
use crate::resource::{Metadata, ResourceKey};

/// What one execution did, as recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    /// Execution id.
    pub id: String,
    /// The plugin that ran.
    pub plugin_name: String,
    /// The resource's runtime id.
    pub resource_id: String,
    /// The resource's name.
    pub resource_name: String,
    /// The resource's stable key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_key: Option<ResourceKey>,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: DateTime<Utc>,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Free-form data.
    #[serde(default)]
    pub metadata: Metadata,
    /// Who asked for it.
    #[serde(default)]
    pub principal: String,
    /// The campaign it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The campaign step it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The node that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The fencing token of the lease it ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<FencingToken>,
    /// Time from the fault to the resource being seen unhealthy.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_to_detect: Option<Duration>,
    /// Time from the fault to the resource being healthy again.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_to_recover: Option<Duration>,
}

/// Which events to return.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    /// Accepted types (empty: all).
    #[serde(default)]
    pub types: Vec<String>,
    /// Accepted sources (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Accepted resource ids or keys (empty: all).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Not before.
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    /// Not after.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// At most this many (None: all).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: usize,
}

impl EventQuery {
    /// True when the event meets every criterion (pagination aside).
    pub fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&e.type_))
            && (self.sources.is_empty() || self.sources.contains(&e.source))
            && (self.resources.is_empty()
                || e.resource.as_ref().is_some_and(|r| {
                    self.resources
                        .iter()
                        .any(|x| x == &r.id || x == r.key.as_str())
                }))
            && self.start_time.is_none_or(|t| e.timestamp >= t)
            && self.end_time.is_none_or(|t| e.timestamp <= t)
    }
}

/// Which execution records to return.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionQuery {
    /// Accepted plugins (empty: all).
    #[serde(default)]
    pub plugin_names: Vec<String>,
    /// Accepted resource ids or keys (empty: all).
    #[serde(default)]
    pub resource_ids: Vec<String>,
    /// Accepted statuses (empty: all).
    #[serde(default)]
    pub statuses: Vec<ExecutionStatus>,
    /// Accepted campaign (None: all).
    #[serde(default)]
    pub campaign: Option<String>,
    /// Started not before.
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    /// Started not after.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// At most this many (None: all).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: usize,
}

impl ExecutionQuery {
    /// True when the record meets every criterion (pagination aside).
    pub fn matches(&self, r: &ExecutionRecord) -> bool {
        (self.plugin_names.is_empty() || self.plugin_names.contains(&r.plugin_name))
            && (self.resource_ids.is_empty()
                || self.resource_ids.iter().any(|x| {
                    x == &r.resource_id || r.resource_key.as_ref().is_some_and(|k| k.as_str() == x)
                }))
            && (self.statuses.is_empty() || self.statuses.contains(&r.status))
            && self
                .campaign
                .as_ref()
                .is_none_or(|c| r.campaign.as_ref() == Some(c))
            && self.start_time.is_none_or(|t| r.start_time >= t)
            && self.end_time.is_none_or(|t| r.start_time <= t)
    }
}

/// Which records statistics and reports cover.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatisticsFilter {
    /// Accepted plugins (empty: all).
    #[serde(default)]
    pub plugin_names: Vec<String>,
    /// Accepted resource ids or keys (empty: all).
    #[serde(default)]
    pub resource_ids: Vec<String>,
    /// Accepted campaign (None: all).
    #[serde(default)]
    pub campaign: Option<String>,
    /// Not before.
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    /// Not after.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
}

impl StatisticsFilter {
    /// The equivalent unpaginated execution query.
    pub fn to_query(&self) -> ExecutionQuery {
        ExecutionQuery {
            plugin_names: self.plugin_names.clone(),
            resource_ids: self.resource_ids.clone(),
            campaign: self.campaign.clone(),
            start_time: self.start_time,
            end_time: self.end_time,
            ..Default::default()
        }
    }
}

/// The seed's ReportFilter is the same selection as statistics.
pub type ReportFilter = StatisticsFilter;

/// Aggregates over execution records.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Records counted.
    pub total_executions: usize,
    /// Succeeded.
    pub success_count: usize,
    /// Failed.
    pub failure_count: usize,
    /// Timed out.
    pub timeout_count: usize,
    /// Canceled.
    pub canceled_count: usize,
    /// success / total, 0 when there are none.
    pub success_rate: f64,
    /// Mean time to recovery over records that recovered.
    #[serde(with = "humantime_serde")]
    pub mttr: Duration,
    /// Mean duration.
    #[serde(with = "humantime_serde")]
    pub average_duration: Duration,
    /// Median duration.
    #[serde(with = "humantime_serde")]
    pub p50_duration: Duration,
    /// 95th percentile duration.
    #[serde(with = "humantime_serde")]
    pub p95_duration: Duration,
    /// 99th percentile duration.
    #[serde(with = "humantime_serde")]
    pub p99_duration: Duration,
    /// Shortest duration.
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// Longest duration.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Per plugin.
    pub by_plugin: BTreeMap<String, PluginStatistics>,
    /// Per resource.
    pub by_resource: BTreeMap<String, ResourceStatistics>,
}

/// Aggregates for one plugin.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatistics {
    /// Plugin name.
    pub plugin_name: String,
    /// Records counted.
    pub total_executions: usize,
    /// Succeeded.
    pub success_count: usize,
    /// Did not succeed.
    pub failure_count: usize,
    /// success / total.
    pub success_rate: f64,
    /// Mean duration.
    #[serde(with = "humantime_serde")]
    pub average_duration: Duration,
}

/// Aggregates for one resource.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatistics {
    /// Resource id (or key).
    pub resource_id: String,
    /// Resource name.
    pub resource_name: String,
    /// Records counted.
    pub total_executions: usize,
    /// Succeeded.
    pub success_count: usize,
    /// Did not succeed.
    pub failure_count: usize,
    /// success / total.
    pub success_rate: f64,
    /// Mean duration.
    #[serde(with = "humantime_serde")]
    pub average_duration: Duration,
}

/// Everything a formatter renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Title.
    pub title: String,
    /// When it was generated.
    pub generated_at: DateTime<Utc>,
    /// What it covers.
    pub filter: ReportFilter,
    /// Aggregates.
    pub statistics: Statistics,
    /// The records, oldest first.
    pub executions: Vec<ExecutionRecord>,
    /// The events, oldest first.
    pub events: Vec<Event>,
}

/// Renders a report in one format.
#[async_trait]
pub trait ReportFormatter: Send + Sync + 'static {
    /// Renders the report.
    async fn format(&self, report: &Report) -> Result<Vec<u8>>;
    /// The MIME type of the output.
    fn content_type(&self) -> &str;
    /// The format's name (json, markdown, html, ...).
    fn name(&self) -> &str;
}

/// Records executions and events and reports on them (the seed's Reporter).
#[async_trait]
pub trait Reporter: Send + Sync + 'static {
    /// Records an event.
    async fn record_event(&self, event: Event) -> Result<()>;
    /// Records an execution.
    async fn record_execution(&self, record: ExecutionRecord) -> Result<()>;
    /// Events that match, oldest first.
    async fn query_events(&self, query: &EventQuery) -> Result<Vec<Event>>;
    /// Records that match, oldest first.
    async fn query_executions(&self, query: &ExecutionQuery) -> Result<Vec<ExecutionRecord>>;
    /// Aggregates over the matching records.
    async fn compute_statistics(&self, filter: &StatisticsFilter) -> Result<Statistics>;
    /// Renders a report with the formatter registered under `format`.
    async fn generate_report(&self, format: &str, filter: &ReportFilter) -> Result<Vec<u8>>;
    /// Replaces the storage backend.
    async fn set_storage(&self, storage: Arc<dyn StorageBackend>) -> Result<()>;
    /// Registers a formatter under its name.
    fn register_formatter(&self, formatter: Arc<dyn ReportFormatter>) -> Result<()>;
}

/// A sort key of a storage query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortField {
    /// A top-level field of the stored JSON object.
    pub field: String,
    /// Largest first.
    #[serde(default)]
    pub descending: bool,
}

/// A storage query over one collection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Query {
    /// The collection to search.
    pub collection: String,
    /// Top-level fields that must equal these values.
    #[serde(default)]
    pub filter: serde_json::Map<String, serde_json::Value>,
    /// Sort order, first key first (default: key order).
    #[serde(default)]
    pub sort: Vec<SortField>,
    /// At most this many (None: all).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: usize,
}

impl Query {
    /// True when the value's top-level fields equal the filter's.
    pub fn matches(&self, value: &serde_json::Value) -> bool {
        self.filter
            .iter()
            .all(|(k, v)| value.get(k).is_some_and(|x| x == v))
    }

    /// Orders two values by the sort fields.
    pub fn compare(&self, a: &serde_json::Value, b: &serde_json::Value) -> std::cmp::Ordering {
        for s in &self.sort {
            let ord = compare_json(a.get(&s.field), b.get(&s.field));
            let ord = if s.descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    }
}

/// A total order over optional JSON values: missing < null < bool < number < string < other.
pub fn compare_json(
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
) -> std::cmp::Ordering {
    use serde_json::Value as V;
    use std::cmp::Ordering;
    fn rank(v: Option<&V>) -> u8 {
        match v {
            None => 0,
            Some(V::Null) => 1,
            Some(V::Bool(_)) => 2,
            Some(V::Number(_)) => 3,
            Some(V::String(_)) => 4,
            Some(_) => 5,
        }
    }
    match (a, b) {
        (Some(V::Bool(x)), Some(V::Bool(y))) => x.cmp(y),
        (Some(V::Number(x)), Some(V::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(V::String(x)), Some(V::String(y))) => x.cmp(y),
        (Some(x @ (V::Array(_) | V::Object(_))), Some(y @ (V::Array(_) | V::Object(_)))) => {
            x.to_string().cmp(&y.to_string())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Where records are kept (in memory, on disk, replicated).
#[async_trait]
pub trait StorageBackend: Send + Sync + 'static {
    /// Stores a value under a key in a collection, replacing any previous one.
    async fn save(&self, collection: &str, key: &str, value: serde_json::Value) -> Result<()>;
    /// Stores many values in one write; backends override this to batch the I/O.
    async fn save_batch(
        &self,
        collection: &str,
        items: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        for (k, v) in items {
            self.save(collection, &k, v).await?;
        }
        Ok(())
    }
    /// The value under a key, or a `NotFound` error.
    async fn load(&self, collection: &str, key: &str) -> Result<serde_json::Value>;
    /// Values that match the query, sorted and paginated.
    async fn query(&self, query: &Query) -> Result<Vec<serde_json::Value>>;
    /// Removes a key; removing a missing key is `Ok`.
    async fn delete(&self, collection: &str, key: &str) -> Result<()>;
    /// Flushes and closes.
    async fn close(&self) -> Result<()>;
}
