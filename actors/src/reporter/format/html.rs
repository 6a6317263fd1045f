//! A standalone HTML report: inline CSS, no external assets, and an SVG timeline with one
//! lane per resource showing each fault, when its failure was detected, how long the
//! resource was degraded and when it recovered.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ire_core::{ExecutionRecord, ExecutionStatus, Report, ReportFormatter, Result};

use super::{human, percent};

/// The report as a single self-contained HTML page.
#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlFormatter;

/// Rows of the executions table at most (the timeline shows every record).
const MAX_TABLE_ROWS: usize = 500;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn status_color(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Success => "#2f9e62",
        ExecutionStatus::Failed => "#d64545",
        ExecutionStatus::Timeout => "#e08a1e",
        ExecutionStatus::Canceled | ExecutionStatus::Skipped => "#8a8f98",
        ExecutionStatus::Pending | ExecutionStatus::Running => "#5b6fd6",
    }
}

const CSS: &str = r#"
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:16px;margin:28px 0 10px}
.sub{color:var(--muted);margin-bottom:18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin-top:2px}
.card .v.good{color:#2f9e62}.card .v.bad{color:#d64545}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px;overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.err{white-space:normal;color:#b42318;max-width:360px}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;color:#fff;font-size:12px}
.legend{display:flex;flex-wrap:wrap;gap:16px;color:var(--muted);font-size:12px;margin-top:8px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.sw{width:18px;height:10px;border-radius:3px;display:inline-block}
svg text{font-family:inherit}
.note{color:var(--muted);font-size:12px;margin-top:6px}
"#;

struct Scale {
    t0: DateTime<Utc>,
    span_ms: f64,
    x0: f64,
    width: f64,
}

impl Scale {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let ms = (t - self.t0).num_milliseconds() as f64;
        self.x0 + (ms / self.span_ms).clamp(0.0, 1.0) * self.width
    }
}

fn add(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::zero())
}

fn lane_key(r: &ExecutionRecord) -> String {
    r.resource_key
        .as_ref()
        .map(|k| k.as_str().to_owned())
        .unwrap_or_else(|| r.resource_id.clone())
}

/// The SVG timeline: one lane per resource.
fn timeline(report: &Report) -> String {
    let recs = &report.executions;
    if recs.is_empty() {
        return "<p class=\"note\">No executions in this report.</p>".into();
    }
    // Lanes, in order of first fault.
    let mut lanes: BTreeMap<String, (String, Vec<&ExecutionRecord>)> = BTreeMap::new();
    for r in recs {
        lanes
            .entry(lane_key(r))
            .or_insert_with(|| (r.resource_name.clone(), Vec::new()))
            .1
            .push(r);
    }
    let t0 = recs
        .iter()
        .map(|r| r.start_time)
        .min()
        .unwrap_or_else(Utc::now);
    let t1 = recs
        .iter()
        .flat_map(|r| {
            [
                Some(r.end_time),
                r.time_to_recover.map(|d| add(r.start_time, d)),
                r.time_to_detect.map(|d| add(r.start_time, d)),
            ]
        })
        .flatten()
        .max()
        .unwrap_or(t0);
    let span_ms = ((t1 - t0).num_milliseconds() as f64).max(1000.0) * 1.03;
    let (label_w, plot_w, lane_h, top) = (230.0, 880.0, 38.0, 30.0);
    let scale = Scale {
        t0,
        span_ms,
        x0: label_w,
        width: plot_w,
    };
    let height = top + lane_h * lanes.len() as f64 + 24.0;
    let total_w = label_w + plot_w + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {total_w} {height}" width="100%" role="img" aria-label="Timeline of faults and recoveries per resource">"#
    );
    // Time axis: gridlines and labels.
    let ticks = 6;
    for i in 0..=ticks {
        let frac = i as f64 / ticks as f64;
        let x = label_w + frac * plot_w;
        let t = t0 + chrono::Duration::milliseconds((frac * span_ms) as i64);
        // The outer labels are anchored inwards so that they are not cut off.
        let anchor = match i {
            0 => "start",
            i if i == ticks => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e4e7ec"/><text x="{x:.1}" y="{:.1}" font-size="11" fill="#667085" text-anchor="{anchor}">{}</text>"##,
            height - 20.0,
            top - 10.0,
            t.format("%H:%M:%S")
        );
    }
    for (i, (key, (name, records))) in lanes.iter().enumerate() {
        let y = top + lane_h * i as f64;
        let mid = y + lane_h / 2.0;
        if i % 2 == 0 {
            let _ = write!(
                s,
                r##"<rect x="0" y="{y:.1}" width="{total_w}" height="{lane_h}" fill="#f9fafb"/>"##
            );
        }
        let label = if name.is_empty() {
            key.as_str()
        } else {
            name.as_str()
        };
        let _ = write!(
            s,
            r##"<text x="8" y="{:.1}" font-size="13" fill="#1d2330">{}</text><text x="8" y="{:.1}" font-size="10" fill="#667085">{}</text>"##,
            mid - 2.0,
            esc(&truncate(label, 30)),
            mid + 11.0,
            esc(&truncate(key, 38))
        );
        for (j, r) in records.iter().enumerate() {
            let xs = scale.x(r.start_time);
            let xe = scale.x(r.end_time).max(xs + 2.0);
            let detect = r.time_to_detect.map(|d| scale.x(add(r.start_time, d)));
            let recover = r.time_to_recover.map(|d| scale.x(add(r.start_time, d)));
            // Degraded: from detection to recovery; when it did not recover, until the next
            // fault on the same resource (or the end of the view).
            if let Some(xd) = detect {
                let xr = recover.unwrap_or_else(|| {
                    records
                        .get(j + 1)
                        .map(|next| scale.x(next.start_time))
                        .unwrap_or(label_w + plot_w)
                });
                let _ = write!(
                    s,
                    r##"<rect x="{xd:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fbd5d5" opacity="0.8"><title>degraded {}</title></rect>"##,
                    y + 4.0,
                    (xr - xd).max(1.0),
                    lane_h - 8.0,
                    r.time_to_recover
                        .zip(r.time_to_detect)
                        .map(|(a, b)| human(a.saturating_sub(b)))
                        .unwrap_or_else(|| "(not recovered)".into())
                );
            }
            let tip = format!(
                "{} on {}: {} in {}{}{}{}",
                r.plugin_name,
                label,
                r.status.as_str(),
                human(r.duration),
                r.time_to_detect
                    .map(|d| format!(", detected after {}", human(d)))
                    .unwrap_or_default(),
                r.time_to_recover
                    .map(|d| format!(", recovered after {}", human(d)))
                    .unwrap_or_default(),
                if r.error.is_empty() {
                    String::new()
                } else {
                    format!(", error: {}", r.error)
                }
            );
            let _ = write!(
                s,
                r#"<rect x="{xs:.1}" y="{:.1}" width="{:.1}" height="10" rx="3" fill="{}"><title>{}</title></rect>"#,
                mid - 5.0,
                xe - xs,
                status_color(r.status),
                esc(&tip)
            );
            if let Some(xd) = detect {
                let _ = write!(
                    s,
                    r##"<path d="M{:.1} {:.1} l5 -8 h-10 z" fill="#b42318"><title>failure detected after {}</title></path>"##,
                    xd,
                    mid - 6.0,
                    r.time_to_detect.map(human).unwrap_or_default()
                );
            }
            if let Some(xr) = recover {
                let _ = write!(
                    s,
                    r##"<circle cx="{xr:.1}" cy="{mid:.1}" r="5" fill="#fff" stroke="#2f9e62" stroke-width="2.5"><title>healthy again after {}</title></circle>"##,
                    r.time_to_recover.map(human).unwrap_or_default()
                );
            }
        }
    }
    s.push_str("</svg>");
    s.push_str(
        r##"<div class="legend"><span><i class="sw" style="background:#2f9e62"></i>fault, succeeded</span><span><i class="sw" style="background:#d64545"></i>failed</span><span><i class="sw" style="background:#e08a1e"></i>timed out</span><span><i class="sw" style="background:#8a8f98"></i>canceled</span><span><i class="sw" style="background:#fbd5d5"></i>degraded (detected → recovered)</span><span><svg width="12" height="10"><path d="M6 10 l5 -9 h-10 z" fill="#b42318"/></svg>failure detected</span><span><svg width="12" height="12"><circle cx="6" cy="6" r="4" fill="#fff" stroke="#2f9e62" stroke-width="2"/></svg>healthy again</span></div>"##,
    );
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[async_trait]
impl ReportFormatter for HtmlFormatter {
    async fn format(&self, r: &Report) -> Result<Vec<u8>> {
        let s = &r.statistics;
        let mut o = String::with_capacity(16 * 1024);
        let _ = write!(
            o,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
            esc(&r.title)
        );
        let _ = write!(
            o,
            "<h1>{}</h1><div class=\"sub\">Generated {} UTC · {} executions · {} events</div>",
            esc(&r.title),
            r.generated_at.format("%Y-%m-%d %H:%M:%S"),
            s.total_executions,
            r.events.len()
        );
        let rate_class = if s.total_executions == 0 {
            ""
        } else if s.success_rate >= 0.95 {
            "good"
        } else {
            "bad"
        };
        let not_ok = s.failure_count + s.timeout_count + s.canceled_count;
        let _ = write!(
            o,
            "<div class=\"cards\">\
<div class=\"card\"><div class=\"k\">Executions</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Success rate</div><div class=\"v {rate_class}\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Failed / timeout / canceled</div><div class=\"v{}\">{} / {} / {}</div></div>\
<div class=\"card\"><div class=\"k\">MTTR</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Duration p50 · p95</div><div class=\"v\">{} · {}</div></div>\
<div class=\"card\"><div class=\"k\">p99 · max</div><div class=\"v\">{} · {}</div></div></div>",
            s.total_executions,
            percent(s.success_rate),
            if not_ok > 0 { " bad" } else { "" },
            s.failure_count,
            s.timeout_count,
            s.canceled_count,
            human(s.mttr),
            human(s.p50_duration),
            human(s.p95_duration),
            human(s.p99_duration),
            human(s.max_duration),
        );
        let _ = write!(
            o,
            "<h2>Faults and recoveries</h2><div class=\"panel\">{}</div>",
            timeline(r)
        );
        // Breakdowns.
        let _ = write!(o, "<h2>By resource</h2><div class=\"panel\"><table><tr><th>Resource</th><th>Key</th><th class=\"n\">Executions</th><th class=\"n\">Success</th><th class=\"n\">Not successful</th><th class=\"n\">Success rate</th><th class=\"n\">Avg duration</th></tr>");
        for x in s.by_resource.values() {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&x.resource_name),
                esc(&x.resource_id),
                x.total_executions,
                x.success_count,
                x.failure_count,
                percent(x.success_rate),
                human(x.average_duration)
            );
        }
        let _ = write!(o, "</table></div><h2>By plugin</h2><div class=\"panel\"><table><tr><th>Plugin</th><th class=\"n\">Executions</th><th class=\"n\">Success</th><th class=\"n\">Not successful</th><th class=\"n\">Success rate</th><th class=\"n\">Avg duration</th></tr>");
        for p in s.by_plugin.values() {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&p.plugin_name),
                p.total_executions,
                p.success_count,
                p.failure_count,
                percent(p.success_rate),
                human(p.average_duration)
            );
        }
        let _ = write!(o, "</table></div><h2>Executions</h2><div class=\"panel\"><table><tr><th>Started (UTC)</th><th>Plugin</th><th>Resource</th><th>Status</th><th class=\"n\">Duration</th><th class=\"n\">Detected after</th><th class=\"n\">Recovered after</th><th>Error</th></tr>");
        // Newest first in the table.
        for e in r.executions.iter().rev().take(MAX_TABLE_ROWS) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"pill\" style=\"background:{}\">{}</span></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
                e.start_time.format("%Y-%m-%d %H:%M:%S%.3f"),
                esc(&e.plugin_name),
                esc(if e.resource_name.is_empty() { &e.resource_id } else { &e.resource_name }),
                status_color(e.status),
                e.status.as_str(),
                human(e.duration),
                e.time_to_detect.map(human).unwrap_or_else(|| "–".into()),
                e.time_to_recover.map(human).unwrap_or_else(|| "–".into()),
                esc(&e.error)
            );
        }
        o.push_str("</table>");
        if r.executions.len() > MAX_TABLE_ROWS {
            let _ = write!(
                o,
                "<p class=\"note\">The {MAX_TABLE_ROWS} most recent of {} executions; the JSON report has them all.</p>",
                r.executions.len()
            );
        }
        o.push_str("</div></main></body></html>\n");
        Ok(o.into_bytes())
    }
    fn content_type(&self) -> &str {
        "text/html; charset=utf-8"
    }
    fn name(&self) -> &str {
        "html"
    }
}
