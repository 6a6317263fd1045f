//! The seed's Statistics over execution records.
//!
//! Definitions (checked against a naive computation by `reporter_statistics.rs`):
//! - `failure_count` counts `failed` records; timeouts and cancellations have their own
//!   counts. Per plugin and per resource, `failure_count` is every record that did not
//!   succeed.
//! - `success_rate` is successes / total (0 when there are no records).
//! - Percentiles use the nearest-rank method: the smallest duration such that at least p%
//!   of the durations are at most it.
//! - `mttr` is the mean `time_to_recover` over the records that have one.
//! - `by_resource` is keyed by the resource's stable key when the record has one, else by
//!   its runtime id, so a recreated resource stays one row.

use std::collections::BTreeMap;
use std::time::Duration;

use ire_core::{
    ExecutionRecord, ExecutionStatus, PluginStatistics, ResourceStatistics, Statistics,
};

/// The nearest-rank percentile of sorted durations (`p` in 0..=100).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(total_nanos: u128, n: usize) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = total_nanos / n as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn rate(success: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        success as f64 / total as f64
    }
}

#[derive(Default)]
struct Group {
    name: String,
    total: usize,
    success: usize,
    nanos: u128,
}

impl Group {
    fn add(&mut self, r: &ExecutionRecord) {
        self.total += 1;
        if r.status == ExecutionStatus::Success {
            self.success += 1;
        }
        self.nanos += r.duration.as_nanos();
    }
}

/// Aggregates the records.
pub fn compute(records: &[ExecutionRecord]) -> Statistics {
    let mut s = Statistics {
        total_executions: records.len(),
        ..Default::default()
    };
    let mut durations = Vec::with_capacity(records.len());
    let mut total_nanos = 0u128;
    let mut recover_nanos = 0u128;
    let mut recovered = 0usize;
    let mut plugins: BTreeMap<&str, Group> = BTreeMap::new();
    let mut resources: BTreeMap<&str, Group> = BTreeMap::new();
    for r in records {
        match r.status {
            ExecutionStatus::Success => s.success_count += 1,
            ExecutionStatus::Failed => s.failure_count += 1,
            ExecutionStatus::Timeout => s.timeout_count += 1,
            ExecutionStatus::Canceled => s.canceled_count += 1,
            _ => {}
        }
        durations.push(r.duration);
        total_nanos += r.duration.as_nanos();
        if let Some(t) = r.time_to_recover {
            recover_nanos += t.as_nanos();
            recovered += 1;
        }
        plugins.entry(&r.plugin_name).or_default().add(r);
        let key = r
            .resource_key
            .as_ref()
            .map(|k| k.as_str())
            .unwrap_or(&r.resource_id);
        let g = resources.entry(key).or_default();
        if g.name.is_empty() {
            g.name = r.resource_name.clone();
        }
        g.add(r);
    }
    durations.sort_unstable();
    s.success_rate = rate(s.success_count, s.total_executions);
    s.mttr = mean(recover_nanos, recovered);
    s.average_duration = mean(total_nanos, durations.len());
    s.p50_duration = percentile(&durations, 50.0);
    s.p95_duration = percentile(&durations, 95.0);
    s.p99_duration = percentile(&durations, 99.0);
    s.min_duration = durations.first().copied().unwrap_or_default();
    s.max_duration = durations.last().copied().unwrap_or_default();
    s.by_plugin = plugins
        .into_iter()
        .map(|(name, g)| {
            (
                name.to_owned(),
                PluginStatistics {
                    plugin_name: name.to_owned(),
                    total_executions: g.total,
                    success_count: g.success,
                    failure_count: g.total - g.success,
                    success_rate: rate(g.success, g.total),
                    average_duration: mean(g.nanos, g.total),
                },
            )
        })
        .collect();
    s.by_resource = resources
        .into_iter()
        .map(|(id, g)| {
            (
                id.to_owned(),
                ResourceStatistics {
                    resource_id: id.to_owned(),
                    resource_name: g.name,
                    total_executions: g.total,
                    success_count: g.success,
                    failure_count: g.total - g.success,
                    success_rate: rate(g.success, g.total),
                    average_duration: mean(g.nanos, g.total),
                },
            )
        })
        .collect();
    s
}
