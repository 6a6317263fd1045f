//! Seed properties 33, 34, 36 and 37: complete records, queries with filters and
//! pagination, formatters chosen by name (built-in and custom), custom storage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ire_actors::reporter::{MemoryStorage, ReporterConfig, ReporterHandle};
use ire_core::testsuite::ResourceBuilder;
use ire_core::{
    Event, EventQuery, ExecutionQuery, ExecutionRecord, ExecutionStatus, Report, ReportFilter,
    ReportFormatter, Reporter, Result,
};

fn record(i: usize, plugin: &str, status: ExecutionStatus) -> ExecutionRecord {
    let start = chrono::Utc::now() - chrono::Duration::seconds(600 - i as i64 * 10);
    ExecutionRecord {
        id: format!("exec-{i}"),
        plugin_name: plugin.into(),
        resource_id: format!("id-{}", i % 3),
        resource_name: format!("redis-{}", i % 3),
        resource_key: Some(format!("compose/shop/redis/{}", i % 3).parse().unwrap()),
        start_time: start,
        end_time: start + chrono::Duration::seconds(4),
        duration: Duration::from_secs(4),
        status,
        error: if status == ExecutionStatus::Failed {
            "container did not stop".into()
        } else {
            String::new()
        },
        metadata: Default::default(),
        principal: "ops".into(),
        campaign: Some("cache".into()),
        step: Some("kill-cache".into()),
        node: Some("node-1".into()),
        fencing_token: None,
        time_to_detect: Some(Duration::from_millis(800 + 100 * i as u64)),
        time_to_recover: (status == ExecutionStatus::Success)
            .then(|| Duration::from_secs(3 + i as u64 % 4)),
    }
}

async fn reporter() -> ReporterHandle {
    ReporterHandle::spawn(Arc::new(MemoryStorage::new()), ReporterConfig::default())
        .await
        .unwrap()
        .0
}

async fn seeded() -> ReporterHandle {
    let r = reporter().await;
    for i in 0..30 {
        let (plugin, status) = match i % 5 {
            0 => ("network-delay", ExecutionStatus::Failed),
            1 => ("network-delay", ExecutionStatus::Success),
            2 => ("kill", ExecutionStatus::Timeout),
            _ => ("kill", ExecutionStatus::Success),
        };
        r.record_execution(record(i, plugin, status)).await.unwrap();
    }
    r
}

#[tokio::test]
async fn a_stored_execution_record_keeps_every_field() {
    let r = reporter().await;
    let rec = record(1, "kill", ExecutionStatus::Failed);
    r.record_execution(rec.clone()).await.unwrap();
    let got = r
        .query_executions(&ExecutionQuery::default())
        .await
        .unwrap();
    assert_eq!(got, [rec]);
}

#[tokio::test]
async fn incomplete_records_are_rejected_with_the_field_named() {
    let r = reporter().await;
    let mut rec = record(1, "kill", ExecutionStatus::Failed);
    rec.error.clear();
    let e = r.record_execution(rec).await.unwrap_err();
    assert!(e.to_string().contains("error"), "{e}");
    let mut rec = record(2, "", ExecutionStatus::Success);
    rec.plugin_name.clear();
    assert!(r
        .record_execution(rec)
        .await
        .unwrap_err()
        .to_string()
        .contains("pluginName"));
    let mut ev = Event::new("fault.injected", "engine");
    ev.source.clear();
    assert!(r
        .record_event(ev)
        .await
        .unwrap_err()
        .to_string()
        .contains("source"));
}

#[tokio::test]
async fn a_stored_event_keeps_type_source_timestamp_and_data() {
    let r = reporter().await;
    let ev = Event::new("fault.injected", "engine")
        .with_resource(ResourceBuilder::new("redis").build())
        .with_data("latency", "200ms")
        .with_metadata("execution_id", "e1");
    r.record_event(ev.clone()).await.unwrap();
    let got = r
        .query_events(&EventQuery {
            resources: vec!["fake/redis".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got, [ev]);
}

#[tokio::test]
async fn execution_queries_filter_and_paginate_oldest_first() {
    let r = seeded().await;
    let kill_ok = ExecutionQuery {
        plugin_names: vec!["kill".into()],
        statuses: vec![ExecutionStatus::Success],
        ..Default::default()
    };
    let all = r.query_executions(&kill_ok).await.unwrap();
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].start_time <= w[1].start_time));
    let page = r
        .query_executions(&ExecutionQuery {
            offset: 5,
            limit: Some(4),
            ..kill_ok.clone()
        })
        .await
        .unwrap();
    assert_eq!(page, all[5..9]);
    let by_key = r
        .query_executions(&ExecutionQuery {
            resource_ids: vec!["compose/shop/redis/1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_key.len(), 10);
    let stats = r.compute_statistics(&Default::default()).await.unwrap();
    assert_eq!(stats.total_executions, 30);
    assert_eq!(stats.by_resource.len(), 3);
    assert!(stats.by_resource.contains_key("compose/shop/redis/0"));
}

#[tokio::test]
async fn reports_use_the_formatter_registered_under_the_format_name() {
    let r = seeded().await;
    let json = r
        .generate_report("json", &ReportFilter::default())
        .await
        .unwrap();
    let report: Report = serde_json::from_slice(&json).unwrap();
    assert_eq!(report.executions.len(), 30);
    let md = String::from_utf8(
        r.generate_report("markdown", &ReportFilter::default())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(md.contains("| network-delay |"), "{md}");

    struct Csv;
    #[async_trait]
    impl ReportFormatter for Csv {
        async fn format(&self, report: &Report) -> Result<Vec<u8>> {
            Ok(report
                .executions
                .iter()
                .map(|e| format!("{},{}\n", e.id, e.plugin_name))
                .collect::<String>()
                .into_bytes())
        }
        fn content_type(&self) -> &str {
            "text/csv"
        }
        fn name(&self) -> &str {
            "csv"
        }
    }
    r.register_formatter(Arc::new(Csv)).unwrap();
    let csv = String::from_utf8(
        r.generate_report(
            "csv",
            &ReportFilter {
                plugin_names: vec!["kill".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(csv.lines().count(), 18);
    let e = r
        .generate_report("pdf", &ReportFilter::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("pdf") && e.to_string().contains("html"),
        "{e}"
    );
}

#[tokio::test]
async fn the_html_report_is_a_standalone_page_with_a_timeline() {
    let r = seeded().await;
    let html = String::from_utf8(
        r.generate_report("html", &ReportFilter::default())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<svg") && html.contains("<style>"));
    // One lane per resource, a detection marker per fault and a recovery marker per recovery.
    for k in [
        "compose/shop/redis/0",
        "compose/shop/redis/1",
        "compose/shop/redis/2",
    ] {
        assert!(html.contains(k), "lane {k} missing");
    }
    assert_eq!(html.matches("failure detected after").count(), 30);
    assert_eq!(html.matches("healthy again after").count(), 18);
    // Nothing fetched from elsewhere.
    for external in [
        "src=\"http",
        "href=\"http",
        "<link",
        "<script src",
        "@import",
    ] {
        assert!(!html.contains(external), "external asset: {external}");
    }
    if let Ok(path) = std::env::var("IRE_REPORT_HTML_OUT") {
        std::fs::write(path, &html).unwrap();
    }
}
