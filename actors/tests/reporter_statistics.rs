//! Seed property 35: statistics match a naive computation over the same records.

use std::time::Duration;

use ire_actors::reporter::stats;
use ire_core::{ExecutionRecord, ExecutionStatus};
use proptest::prelude::*;

fn record_strategy() -> impl Strategy<Value = ExecutionRecord> {
    (
        prop::sample::select(vec!["kill", "delay", "stress"]),
        0u8..4,
        prop::sample::select(vec![
            ExecutionStatus::Success,
            ExecutionStatus::Failed,
            ExecutionStatus::Timeout,
            ExecutionStatus::Canceled,
        ]),
        0u64..10_000,
        prop::option::of(0u64..5_000),
    )
        .prop_map(|(plugin, res, status, ms, ttr)| {
            let start = chrono::Utc::now();
            ExecutionRecord {
                id: uuid::Uuid::new_v4().to_string(),
                plugin_name: plugin.into(),
                resource_id: format!("id-{res}"),
                resource_name: format!("web-{res}"),
                resource_key: None,
                start_time: start,
                end_time: start,
                duration: Duration::from_millis(ms),
                status,
                error: if status == ExecutionStatus::Failed {
                    "boom".into()
                } else {
                    String::new()
                },
                metadata: Default::default(),
                principal: String::new(),
                campaign: None,
                step: None,
                node: None,
                fencing_token: None,
                time_to_detect: None,
                time_to_recover: ttr.map(Duration::from_millis),
            }
        })
}

/// The nearest-rank percentile, written the slow and obvious way.
fn naive_percentile(durations: &[Duration], p: f64) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = durations.to_vec();
    sorted.sort();
    // The smallest value v such that at least p% of the values are <= v.
    for v in &sorted {
        let at_most = sorted.iter().filter(|d| *d <= v).count() as f64;
        if at_most / sorted.len() as f64 * 100.0 >= p - 1e-9 {
            return *v;
        }
    }
    *sorted.last().unwrap()
}

proptest! {
    #[test]
    fn statistics_match_a_naive_computation(records in prop::collection::vec(record_strategy(), 0..120)) {
        let s = stats::compute(&records);
        let n = records.len();
        let count = |st| records.iter().filter(|r| r.status == st).count();
        prop_assert_eq!(s.total_executions, n);
        prop_assert_eq!(s.success_count, count(ExecutionStatus::Success));
        prop_assert_eq!(s.failure_count, count(ExecutionStatus::Failed));
        prop_assert_eq!(s.timeout_count, count(ExecutionStatus::Timeout));
        prop_assert_eq!(s.canceled_count, count(ExecutionStatus::Canceled));
        let rate = if n == 0 { 0.0 } else { count(ExecutionStatus::Success) as f64 / n as f64 };
        prop_assert!((s.success_rate - rate).abs() < 1e-12);

        let durations: Vec<Duration> = records.iter().map(|r| r.duration).collect();
        let avg = if n == 0 { Duration::ZERO } else { durations.iter().sum::<Duration>() / n as u32 };
        prop_assert!(s.average_duration.abs_diff(avg) <= Duration::from_nanos(1));
        prop_assert_eq!(s.min_duration, durations.iter().min().copied().unwrap_or_default());
        prop_assert_eq!(s.max_duration, durations.iter().max().copied().unwrap_or_default());
        prop_assert_eq!(s.p50_duration, naive_percentile(&durations, 50.0));
        prop_assert_eq!(s.p95_duration, naive_percentile(&durations, 95.0));
        prop_assert_eq!(s.p99_duration, naive_percentile(&durations, 99.0));

        let ttrs: Vec<Duration> = records.iter().filter_map(|r| r.time_to_recover).collect();
        let mttr = if ttrs.is_empty() { Duration::ZERO } else { ttrs.iter().sum::<Duration>() / ttrs.len() as u32 };
        prop_assert!(s.mttr.abs_diff(mttr) <= Duration::from_nanos(1));

        for (name, p) in &s.by_plugin {
            let mine: Vec<&ExecutionRecord> = records.iter().filter(|r| &r.plugin_name == name).collect();
            prop_assert_eq!(p.total_executions, mine.len());
            let ok = mine.iter().filter(|r| r.status == ExecutionStatus::Success).count();
            prop_assert_eq!(p.success_count, ok);
            prop_assert_eq!(p.failure_count, mine.len() - ok);
        }
        prop_assert_eq!(s.by_plugin.values().map(|p| p.total_executions).sum::<usize>(), n);
        for (id, r) in &s.by_resource {
            let mine = records.iter().filter(|x| &x.resource_id == id).count();
            prop_assert_eq!(r.total_executions, mine);
            prop_assert_eq!(&r.resource_name, &id.replace("id-", "web-"));
        }
        prop_assert_eq!(s.by_resource.values().map(|p| p.total_executions).sum::<usize>(), n);
    }
}

#[test]
fn percentiles_of_one_to_a_hundred_are_the_ranks() {
    let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    let s = |p| stats::percentile(&d, p);
    assert_eq!(s(50.0), Duration::from_millis(50));
    assert_eq!(s(95.0), Duration::from_millis(95));
    assert_eq!(s(99.0), Duration::from_millis(99));
    assert_eq!(stats::percentile(&[], 50.0), Duration::ZERO);
}
