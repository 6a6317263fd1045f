//! Docker's stats API, normalized into ire's [`Metrics`].

use bollard::models::{ContainerBlkioStatEntry, ContainerStatsResponse};
use chrono::Utc;
use ire_core::{CpuMetrics, DiskMetrics, MemoryMetrics, Metrics, NetworkMetrics};

/// Normalizes one stats sample. `memory_limit` is the container's configured limit in
/// bytes (0: unlimited; Docker then reports the host's memory as the limit, which is not
/// a limit of the container).
pub(crate) fn normalize(id: &str, s: &ContainerStatsResponse, memory_limit: u64) -> Metrics {
    Metrics {
        timestamp: Utc::now(),
        resource_id: id.to_owned(),
        cpu: cpu(s),
        memory: memory(s, memory_limit),
        network: network(s),
        disk: disk(s),
    }
}

/// CPU between the sample and the previous one (`precpu`), as Docker's CLI computes it:
/// the container's share of the host's CPU time, scaled by the online CPUs.
fn cpu(s: &ContainerStatsResponse) -> CpuMetrics {
    let (Some(cur), Some(pre)) = (&s.cpu_stats, &s.precpu_stats) else {
        return CpuMetrics::default();
    };
    let total = |c: &bollard::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let cpu_delta = total(cur).saturating_sub(total(pre)) as f64;
    let system_delta = cur
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(pre.system_cpu_usage.unwrap_or(0)) as f64;
    let online = cur
        .online_cpus
        .filter(|n| *n > 0)
        .map(f64::from)
        .or_else(|| {
            cur.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|p| p.len() as f64)
        })
        .unwrap_or(1.0);
    if system_delta <= 0.0 || cpu_delta <= 0.0 {
        return CpuMetrics::default();
    }
    let cores = cpu_delta / system_delta * online;
    CpuMetrics {
        usage_percent: cores * 100.0,
        usage_cores: cores,
    }
}

/// Memory in use without the reclaimable page cache (cgroup v2 `inactive_file`, v1
/// `total_inactive_file`), as Docker's CLI reports it.
fn memory(s: &ContainerStatsResponse, limit: u64) -> MemoryMetrics {
    let Some(m) = &s.memory_stats else {
        return MemoryMetrics::default();
    };
    let usage = m.usage.unwrap_or(0);
    let cache = m
        .stats
        .as_ref()
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    let usage = usage.saturating_sub(cache);
    MemoryMetrics {
        usage_bytes: usage,
        limit_bytes: limit,
        usage_percent: if limit > 0 {
            usage as f64 / limit as f64 * 100.0
        } else {
            0.0
        },
    }
}

fn network(s: &ContainerStatsResponse) -> NetworkMetrics {
    let mut n = NetworkMetrics::default();
    for i in s.networks.iter().flat_map(|m| m.values()) {
        n.rx_bytes += i.rx_bytes.unwrap_or(0);
        n.tx_bytes += i.tx_bytes.unwrap_or(0);
        n.rx_packets += i.rx_packets.unwrap_or(0);
        n.tx_packets += i.tx_packets.unwrap_or(0);
    }
    n
}

fn disk(s: &ContainerStatsResponse) -> DiskMetrics {
    let Some(b) = &s.blkio_stats else {
        return DiskMetrics::default();
    };
    let sum = |entries: &Option<Vec<ContainerBlkioStatEntry>>, op: &str| -> u64 {
        entries
            .iter()
            .flatten()
            .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
            .map(|e| e.value.unwrap_or(0))
            .sum()
    };
    DiskMetrics {
        read_bytes: sum(&b.io_service_bytes_recursive, "read"),
        write_bytes: sum(&b.io_service_bytes_recursive, "write"),
        read_ops: sum(&b.io_serviced_recursive, "read"),
        write_ops: sum(&b.io_serviced_recursive, "write"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_sample_normalizes_to_cores_bytes_and_counters() {
        // The shape API 1.41 returns (cgroup v2), trimmed.
        let sample: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64, "online_cpus": 2},
            "memory_stats": {"usage": 10_000_000u64, "limit": 999_999_999_999u64, "stats": {"inactive_file": 2_000_000u64}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20, "rx_packets": 1, "tx_packets": 2},
                          "eth1": {"rx_bytes": 5, "tx_bytes": 5, "rx_packets": 1, "tx_packets": 1}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "write", "value": 8192}]}
        }))
        .unwrap();
        let m = normalize("c1", &sample, 20_000_000);
        assert!((m.cpu.usage_cores - 0.2).abs() < 1e-9, "{:?}", m.cpu);
        assert!((m.cpu.usage_percent - 20.0).abs() < 1e-6);
        assert_eq!(m.memory.usage_bytes, 8_000_000);
        assert_eq!(m.memory.limit_bytes, 20_000_000);
        assert!((m.memory.usage_percent - 40.0).abs() < 1e-9);
        assert_eq!((m.network.rx_bytes, m.network.tx_bytes), (15, 25));
        assert_eq!((m.network.rx_packets, m.network.tx_packets), (2, 3));
        assert_eq!((m.disk.read_bytes, m.disk.write_bytes), (4096, 8192));
    }

    #[test]
    fn unlimited_memory_has_no_percent() {
        let sample: ContainerStatsResponse =
            serde_json::from_value(serde_json::json!({"memory_stats": {"usage": 100}})).unwrap();
        let m = normalize("c1", &sample, 0);
        assert_eq!(m.memory.limit_bytes, 0);
        assert_eq!(m.memory.usage_percent, 0.0);
    }
}
