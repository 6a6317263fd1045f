//! Seed properties 53, 55 and 56: structured log fields, and the execution span created,
//! propagated through the plugin context and finished with its outcome.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ire_actors::observability::{execution_span, finish_execution_span, log_layer, LogFormat};
use ire_core::testsuite::FakeAdapter;
use ire_core::{Error, ExecutionResult, ExecutionStatus, PluginContext};
use serde_json::Value;
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    fn json_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Records the names of closed spans.
#[derive(Clone, Default)]
struct Closed(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Closed {
    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            self.0.lock().unwrap().push(span.name().to_owned());
        }
    }
}

fn result(status: ExecutionStatus) -> ExecutionResult {
    let mut r = ExecutionResult::finished("exec-42", status, chrono::Utc::now());
    if status != ExecutionStatus::Success {
        r = r.with_error(&Error::not_found("container", "redis"));
    }
    r
}

#[tokio::test(flavor = "current_thread")]
async fn every_json_line_has_timestamp_level_component_execution_and_resource() {
    let buf = Buf::default();
    let _guard = tracing::subscriber::set_default(
        Registry::default().with(log_layer(LogFormat::Json, buf.clone())),
    );

    tracing::info!(component = "bus", "outside any execution");
    let span = execution_span("exec-42", "compose/shop/redis/1", "kill");
    async {
        tracing::info!("sending SIGKILL");
        let inner = tracing::info_span!("adapter-call", component = "docker");
        inner.in_scope(|| tracing::debug!(container = "abc", "kill"));
    }
    .instrument(span.clone())
    .await;

    let lines = buf.json_lines();
    assert_eq!(lines.len(), 3, "{}", buf.text());
    for l in &lines {
        for f in [
            "timestamp",
            "level",
            "component",
            "execution_id",
            "resource_id",
            "message",
        ] {
            assert!(l.get(f).is_some(), "{f} missing in {l}");
        }
        chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().unwrap()).unwrap();
    }
    assert_eq!(lines[0]["component"], "bus");
    assert!(lines[0]["execution_id"].is_null());
    assert_eq!(lines[1]["execution_id"], "exec-42");
    assert_eq!(lines[1]["resource_id"], "compose/shop/redis/1");
    assert_eq!(lines[1]["component"], "engine");
    assert_eq!(lines[1]["plugin"], "kill");
    assert_eq!(lines[1]["level"], "INFO");
    // The inner span's component wins; the execution's fields are inherited.
    assert_eq!(lines[2]["component"], "docker");
    assert_eq!(lines[2]["execution_id"], "exec-42");
    assert_eq!(lines[2]["container"], "abc");
}

#[tokio::test(flavor = "current_thread")]
async fn the_execution_span_travels_in_the_plugin_context_and_is_finished_with_its_outcome() {
    let buf = Buf::default();
    let closed = Closed::default();
    let _guard = tracing::subscriber::set_default(
        Registry::default()
            .with(log_layer(LogFormat::Json, buf.clone()))
            .with(closed.clone()),
    );
    let mut ctx = PluginContext::new("exec-42", Arc::new(FakeAdapter::new("fake")));
    ctx.span = execution_span(&ctx.execution_id, "fake/web", "network-delay");

    // What a plugin does: its work runs in the context's span.
    let plugin_work = {
        let ctx = ctx.clone();
        async move {
            tracing::info!(latency_ms = 200, "delay applied");
        }
        .instrument(ctx.span.clone())
    };
    plugin_work.await;
    finish_execution_span(&ctx.span, &result(ExecutionStatus::Failed));
    drop(ctx);

    let lines = buf.json_lines();
    let applied = lines
        .iter()
        .find(|l| l["message"] == "delay applied")
        .unwrap();
    assert_eq!(applied["execution_id"], "exec-42");
    assert_eq!(applied["plugin"], "network-delay");
    let finished = lines
        .iter()
        .find(|l| l["message"] == "execution finished")
        .unwrap();
    assert_eq!(finished["status"], "failed");
    assert_eq!(finished["level"], "WARN");
    assert!(
        finished["error"].as_str().unwrap().contains("redis"),
        "{finished}"
    );
    assert!(finished["duration_ms"].is_u64(), "{finished}");
    assert_eq!(
        *closed.0.lock().unwrap(),
        ["execution"],
        "the span was not closed"
    );
}

#[test]
fn text_logs_show_the_execution_fields_too() {
    let buf = Buf::default();
    tracing::subscriber::with_default(
        Registry::default().with(log_layer(LogFormat::Text, buf.clone())),
        || {
            let span = execution_span("exec-7", "proc/web", "kill");
            span.in_scope(|| tracing::info!("killing"));
            finish_execution_span(&span, &result(ExecutionStatus::Success));
        },
    );
    let text = buf.text();
    assert!(
        text.contains("execution_id=exec-7") && text.contains("resource_id=proc/web"),
        "{text}"
    );
    assert!(
        text.contains("execution finished") && text.contains("status=success"),
        "{text}"
    );
    assert!("json".parse::<LogFormat>().is_ok() && "xml".parse::<LogFormat>().is_err());
}
