//! Reading a process group's usage from `/proc`.

use std::time::Instant;

/// Cumulative usage of a process group at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Usage {
    /// utime + stime of every process of the group, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory of the group, bytes.
    pub rss_bytes: u64,
    /// Bytes read from and written to storage (`/proc/<pid>/io` read_bytes, write_bytes).
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Read and write system calls (`syscr`, `syscw`).
    pub read_ops: u64,
    pub write_ops: u64,
    /// Processes counted.
    pub processes: u32,
}

/// A usage reading and when it was taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub at: Instant,
    pub usage: Usage,
}

/// Clock ticks per second and page size, from sysconf.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// Fields of `/proc/<pid>/stat` after the command name: (pgrp, utime+stime, rss pages).
fn parse_stat(stat: &str) -> Option<(i64, u64, u64)> {
    // The command name is in parentheses and may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    Some((pgrp, utime + stime, rss))
}

fn parse_io(io: &str) -> (u64, u64, u64, u64) {
    let mut out = (0, 0, 0, 0);
    for line in io.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().parse().unwrap_or(0);
        match k {
            "read_bytes" => out.0 = v,
            "write_bytes" => out.1 = v,
            "syscr" => out.2 = v,
            "syscw" => out.3 = v,
            _ => {}
        }
    }
    out
}

/// Usage summed over every process whose process group is `pgid` (the managed process
/// and what it forked), so a shell wrapper's children count too.
pub(crate) fn group_usage(pgid: i64) -> Usage {
    let page = page_size();
    let mut u = Usage::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return u;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may exit while we read it: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((pgrp, ticks, rss)) = parse_stat(&stat) else {
            continue;
        };
        if pgrp != pgid {
            continue;
        }
        u.processes += 1;
        u.cpu_ticks += ticks;
        u.rss_bytes += rss * page;
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            let (rb, wb, ro, wo) = parse_io(&io);
            u.read_bytes += rb;
            u.write_bytes += wb;
            u.read_ops += ro;
            u.write_ops += wo;
        }
    }
    u
}

/// Cores used between two samples.
pub(crate) fn cores_between(a: &Sample, b: &Sample, ticks_per_sec: u64) -> f64 {
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    let ticks = b.usage.cpu_ticks.saturating_sub(a.usage.cpu_ticks) as f64;
    ticks / ticks_per_sec as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name_parses() {
        let stat = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 1000000 321 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((1234, 300, 321)));
    }

    #[test]
    fn io_counters_parse() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), (4096, 8192, 3, 4));
    }

    #[test]
    fn this_process_group_is_visible() {
        let pgid = i64::from(nix::unistd::getpgrp().as_raw());
        let u = group_usage(pgid);
        assert!(u.processes >= 1 && u.rss_bytes > 0, "{u:?}");
    }
}
