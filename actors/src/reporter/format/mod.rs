//! Report formatters: JSON, Markdown and HTML. Others are registered at run time with
//! [`ire_core::Reporter::register_formatter`].

mod html;

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{Error, Report, ReportFormatter, Result};

pub use html::HtmlFormatter;

/// A duration for people: `1.25s`, `340ms`, `12µs`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

/// A rate as a percentage.
pub fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// The report as pretty-printed JSON (every field, machine-readable).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormatter;

#[async_trait]
impl ReportFormatter for JsonFormatter {
    async fn format(&self, report: &Report) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(report).map_err(|e| Error::invalid("report", e.to_string()))
    }
    fn content_type(&self) -> &str {
        "application/json"
    }
    fn name(&self) -> &str {
        "json"
    }
}

/// The report as Markdown: summary, breakdowns, and the executions.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownFormatter;

/// Escapes the characters that would break a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[async_trait]
impl ReportFormatter for MarkdownFormatter {
    async fn format(&self, r: &Report) -> Result<Vec<u8>> {
        let s = &r.statistics;
        let mut o = String::new();
        let _ = writeln!(o, "# {}\n", md(&r.title));
        let _ = writeln!(o, "Generated {}.\n", r.generated_at.to_rfc3339());
        let _ = writeln!(o, "## Summary\n");
        let _ = writeln!(
            o,
            "| Executions | Success | Failed | Timeout | Canceled | Success rate | MTTR |"
        );
        let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s.total_executions,
            s.success_count,
            s.failure_count,
            s.timeout_count,
            s.canceled_count,
            percent(s.success_rate),
            human(s.mttr)
        );
        let _ = writeln!(o, "| Duration | avg | p50 | p95 | p99 | min | max |");
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            o,
            "| | {} | {} | {} | {} | {} | {} |\n",
            human(s.average_duration),
            human(s.p50_duration),
            human(s.p95_duration),
            human(s.p99_duration),
            human(s.min_duration),
            human(s.max_duration)
        );
        let _ = writeln!(o, "## By plugin\n");
        let _ = writeln!(
            o,
            "| Plugin | Executions | Success | Not successful | Success rate | Avg duration |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for p in s.by_plugin.values() {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                md(&p.plugin_name),
                p.total_executions,
                p.success_count,
                p.failure_count,
                percent(p.success_rate),
                human(p.average_duration)
            );
        }
        let _ = writeln!(o, "\n## By resource\n");
        let _ = writeln!(o, "| Resource | Name | Executions | Success | Not successful | Success rate | Avg duration |");
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|");
        for x in s.by_resource.values() {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md(&x.resource_id),
                md(&x.resource_name),
                x.total_executions,
                x.success_count,
                x.failure_count,
                percent(x.success_rate),
                human(x.average_duration)
            );
        }
        let _ = writeln!(o, "\n## Executions\n");
        let _ = writeln!(o, "| Started | Plugin | Resource | Status | Duration | Detected after | Recovered after | Error |");
        let _ = writeln!(o, "|---|---|---|---|---:|---:|---:|---|");
        for e in &r.executions {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                e.start_time.format("%Y-%m-%d %H:%M:%S%.3f"),
                md(&e.plugin_name),
                md(e.resource_key
                    .as_ref()
                    .map(|k| k.as_str())
                    .unwrap_or(&e.resource_id)),
                serde_json::to_value(e.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                human(e.duration),
                e.time_to_detect.map(human).unwrap_or_else(|| "-".into()),
                e.time_to_recover.map(human).unwrap_or_else(|| "-".into()),
                md(&e.error)
            );
        }
        Ok(o.into_bytes())
    }
    fn content_type(&self) -> &str {
        "text/markdown; charset=utf-8"
    }
    fn name(&self) -> &str {
        "markdown"
    }
}
