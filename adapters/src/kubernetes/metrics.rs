//! Pod metrics from the metrics.k8s.io API (served by metrics-server).

use chrono::Utc;
use ire_core::{CpuMetrics, Error, MemoryMetrics, Metrics, Result};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::error::{from_kube, Target};
use super::Inner;

#[derive(Deserialize)]
struct PodMetricsList {
    items: Vec<PodMetrics>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

#[derive(Deserialize)]
struct PodMetrics {
    containers: Vec<ContainerMetrics>,
}

#[derive(Deserialize)]
struct ContainerMetrics {
    usage: Usage,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
}

/// A Kubernetes quantity (`250m`, `1.5`, `128974848`, `64Mi`, `1G`, `12345n`) as a number.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

fn usage(pm: &PodMetrics) -> (f64, f64) {
    let cores = pm
        .containers
        .iter()
        .filter_map(|c| c.usage.cpu.as_deref().and_then(parse_quantity))
        .sum();
    let memory = pm
        .containers
        .iter()
        .filter_map(|c| c.usage.memory.as_deref().and_then(parse_quantity))
        .sum();
    (cores, memory)
}

/// Why metrics.k8s.io answered 404 or 503: not served at all (no metrics-server), not
/// available right now, or only this object missing.
async fn explain_missing(inner: &Inner, s: &kube::core::Status, what: String) -> Error {
    let discovery = match http::Request::get("/apis/metrics.k8s.io/v1beta1").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return Error::invalid("metrics request", e.to_string()),
    };
    match inner.client.request::<serde_json::Value>(discovery).await {
        Ok(_) if s.code == 404 => {
            Error::not_found("metrics (metrics-server has not scraped it yet)", what)
        }
        Ok(_) => Error::unavailable(
            "metrics-server (metrics.k8s.io answered 503)",
            std::io::Error::other(s.message.clone()),
        ),
        Err(kube::Error::Api(d)) if d.code == 404 => Error::unsupported(
            "metrics: the cluster does not serve metrics.k8s.io (install metrics-server)",
            inner.name.clone(),
        ),
        Err(e) => Error::unavailable("metrics-server (metrics.k8s.io)", e),
    }
}

impl Inner {
    /// The summed usage of a workload's pods, read page by page from metrics.k8s.io.
    pub(crate) async fn workload_metrics(
        &self,
        kind: super::WorkloadKind,
        ns: &str,
        name: &str,
    ) -> Result<Metrics> {
        let uid = self.get_named(kind, ns, name).await?.id;
        let selector = self.workload_selector(kind, ns, name).await?;
        let (mut cores, mut memory) = (0.0, 0.0);
        let mut cont: Option<String> = None;
        loop {
            let mut url = format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?limit={}&labelSelector={}",
                self.page_size,
                form_encode(&selector)
            );
            if let Some(c) = &cont {
                url.push_str(&format!("&continue={}", form_encode(c)));
            }
            let req = http::Request::get(&url)
                .body(Vec::new())
                .map_err(|e| Error::invalid("metrics request", e.to_string()))?;
            let list: PodMetricsList = match self.client.request(req).await {
                Ok(l) => l,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 503 => {
                    return Err(explain_missing(self, &s, format!("{ns}/{name}")).await)
                }
                Err(e) => {
                    return Err(from_kube(
                        e,
                        Target {
                            kind: "pod metrics",
                            name,
                        },
                    ))
                }
            };
            for pm in &list.items {
                let (c, m) = usage(pm);
                cores += c;
                memory += m;
            }
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => cont = Some(c),
                None => break,
            }
        }
        Ok(Metrics {
            timestamp: Utc::now(),
            resource_id: uid,
            cpu: CpuMetrics {
                usage_percent: cores * 100.0,
                usage_cores: cores,
            },
            memory: MemoryMetrics {
                usage_bytes: memory as u64,
                limit_bytes: 0,
                usage_percent: 0.0,
            },
            ..Metrics::default()
        })
    }

    /// Reads a pod's usage from metrics.k8s.io; `Unsupported` naming metrics-server when
    /// the cluster does not serve that API.
    pub(crate) async fn metrics(&self, ns: &str, name: &str) -> Result<Metrics> {
        let pod = self
            .api::<Pod>(Some(ns))
            .get(name)
            .await
            .map_err(|e| from_kube(e, Target { kind: "pod", name }))?;
        let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}");
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| Error::invalid("metrics request", e.to_string()))?;
        let pm: PodMetrics = match self.client.request(req).await {
            Ok(pm) => pm,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 503 => {
                return Err(explain_missing(self, &s, format!("{ns}/{name}")).await)
            }
            Err(e) => {
                return Err(from_kube(
                    e,
                    Target {
                        kind: "pod metrics",
                        name,
                    },
                ))
            }
        };
        let (cores, memory) = usage(&pm);
        // The limit counts only when every container has one (otherwise it is unlimited).
        let limits: Option<Vec<f64>> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get("memory"))
                    .and_then(|q| parse_quantity(&q.0))
            })
            .collect();
        let limit = limits
            .filter(|l| !l.is_empty())
            .map(|l| l.iter().sum::<f64>())
            .unwrap_or(0.0);
        Ok(Metrics {
            timestamp: Utc::now(),
            resource_id: pod.metadata.uid.clone().unwrap_or_default(),
            cpu: CpuMetrics {
                usage_percent: cores * 100.0,
                usage_cores: cores,
            },
            memory: MemoryMetrics {
                usage_bytes: memory as u64,
                limit_bytes: limit as u64,
                usage_percent: if limit > 0.0 {
                    memory / limit * 100.0
                } else {
                    0.0
                },
            },
            // metrics.k8s.io reports CPU and memory only.
            ..Metrics::default()
        })
    }
}

/// Percent-encodes a query value.
fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert!((parse_quantity("123456789n").unwrap() - 0.123456789).abs() < 1e-12);
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12Q"), None);
    }
}
