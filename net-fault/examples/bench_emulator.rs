//! The userspace emulator's figures, on this machine, between two network namespaces:
//! throughput (packets/s, Mbit/s) and the emulator's CPU at 0 ms (pass-through) and 100 ms
//! of delay; delay accuracy at p50 and p99; time to apply and to revert a fault.
//!
//! ```sh
//! cargo build --release -p ire-net-fault --bins --examples
//! sudo target/release/examples/bench_emulator        # root: namespaces, nftables, tc
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ire_core::{Bandwidth, BitRate, Delay, NetworkBackend, NetworkFault, Probability};
use support::*;

const MS: Duration = Duration::from_millis(1);
const RUN: Duration = Duration::from_secs(3);

/// The emulator's CPU seconds (user + system) so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Throughput {
    small_pps: f64,
    big_mbit: f64,
    tcp_mbit: f64,
    cpu: f64,
    /// Packets the emulator handled, of those received (the rest bypassed a full queue).
    emulated: f64,
}

/// One measure with a fresh emulator (if a fault is given): the measure's figure, the
/// emulator's CPU (% of one core) and the packets it handled.
fn measured(
    p: &Pair,
    fault: &Option<NetworkFault>,
    id: &str,
    measure: impl FnOnce(&Pair) -> f64,
) -> (f64, f64, f64) {
    let applied = fault
        .clone()
        .map(|f| apply(&p.a, &plan(id, f, NetworkBackend::Userspace, &["eth0"])).unwrap());
    let pid = applied.as_ref().map(|a| a.child.id());
    let cpu0 = pid.map(cpu_seconds).unwrap_or(0.0);
    let t0 = Instant::now();
    let figure = measure(p);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = pid
        .map(|p| (cpu_seconds(p) - cpu0) / wall * 100.0)
        .unwrap_or(0.0);
    let handled = applied
        .map(|a| a.stop_with_stats()["packets"].as_f64().unwrap_or(0.0))
        .unwrap_or(0.0);
    (figure, cpu, handled)
}

/// Throughput from a to b with the fault (if any) on a's egress, and the emulator's CPU.
fn throughput(fault: Option<NetworkFault>, id: &str) -> Throughput {
    let p = pair();
    let secs = RUN.as_secs_f64();
    let (small, cpu1, h1) = measured(&p, &fault, &format!("{id}-s"), |p| {
        udp_flood(&p.a, &p.b, &p.b_ip, 9, 64, RUN).1 as f64
    });
    let (big, cpu2, h2) = measured(&p, &fault, &format!("{id}-b"), |p| {
        udp_flood(&p.a, &p.b, &p.b_ip, 10, 1400, RUN).1 as f64
    });
    let (tcp, cpu3, _) = measured(&p, &fault, &format!("{id}-t"), |p| {
        tcp_throughput(&p.a, &p.b, &p.b_ip, 5001, 500 * MS, RUN)
    });
    Throughput {
        small_pps: small / secs,
        big_mbit: big * 1400.0 * 8.0 / secs / 1e6,
        tcp_mbit: tcp * 8.0 / 1e6,
        cpu: (cpu1 + cpu2 + cpu3) / 3.0,
        emulated: if fault.is_some() {
            (h1 + h2) / (small + big) * 100.0
        } else {
            0.0
        },
    }
}

fn delay(ms: u32) -> Option<Delay> {
    Some(Delay {
        latency: MS * ms,
        jitter: Duration::ZERO,
        correlation: 0.0,
    })
}

fn timed(n: usize, mut f: impl FnMut(usize) -> (Duration, Duration)) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (x, y) = f(i);
        a.push(x.as_secs_f64() * 1e3);
        r.push(y.as_secs_f64() * 1e3);
    }
    a.sort_by(|x, y| x.partial_cmp(y).unwrap());
    r.sort_by(|x, y| x.partial_cmp(y).unwrap());
    (a, r)
}

fn main() {
    println!(
        "load average before: {}",
        ire_core::testsuite::process_stats::load_average()
    );

    println!("\n== throughput a -> b over a veth pair (fault on a's egress), {RUN:?} per figure");
    println!(
        "{:<20} {:>12} {:>14} {:>11} {:>7} {:>10}",
        "", "64 B pkt/s", "1400 B Mbit/s", "TCP Mbit/s", "CPU %", "emulated%"
    );
    let pass = NetworkFault {
        loss: Some(Probability {
            percent: 0.0,
            correlation: 0.0,
        }),
        ..Default::default()
    };
    for (name, fault) in [
        ("no fault", None),
        ("emulator, 0 ms", Some(pass)),
        (
            "emulator, 100 ms",
            Some(NetworkFault {
                delay: delay(100),
                ..Default::default()
            }),
        ),
    ] {
        let t = throughput(fault, &format!("bench-{}", name.len()));
        println!(
            "{name:<20} {:>12.0} {:>14.1} {:>11.1} {:>7.1} {:>10.0}",
            t.small_pps, t.big_mbit, t.tcp_mbit, t.cpu, t.emulated
        );
    }

    println!("\n== delay accuracy: 100 ms on a's egress, 1000 probes 2 ms apart");
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let base = millis(&round_trips(&p.a, echo.addr, 200, MS, 300 * MS));
    let a = apply(
        &p.a,
        &plan(
            "bench-acc",
            NetworkFault {
                delay: delay(100),
                ..Default::default()
            },
            NetworkBackend::Userspace,
            &["eth0"],
        ),
    )
    .unwrap();
    let slow = millis(&round_trips(&p.a, echo.addr, 1000, 2 * MS, 500 * MS));
    a.stop();
    let added: Vec<f64> = slow.iter().map(|s| s - median(&base)).collect();
    println!(
        "baseline rtt p50 {:.3} ms; added delay p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} of 1000 replies)",
        median(&base),
        pct(&added, 0.5),
        pct(&added, 0.99),
        added[added.len() - 1],
        slow.len()
    );

    println!("\n== time to apply (until in place) and to revert, 20 times each (ms)");
    for (name, fault) in [
        (
            "delay (userspace emulator)",
            NetworkFault {
                delay: delay(100),
                ..Default::default()
            },
        ),
        (
            "partition (nftables)",
            NetworkFault {
                partition: true,
                ..Default::default()
            },
        ),
        (
            "bandwidth (htb)",
            NetworkFault {
                bandwidth: Some(Bandwidth {
                    rate: BitRate(10_000_000),
                    burst: None,
                }),
                ..Default::default()
            },
        ),
    ] {
        let p = pair();
        let (ap, rv) = timed(20, |i| {
            let pl = plan(
                &format!("t{i}"),
                fault.clone(),
                NetworkBackend::Userspace,
                &["eth0"],
            );
            let t = Instant::now();
            let a = apply(&p.a, &pl).unwrap();
            let applied = t.elapsed();
            let t = Instant::now();
            revert(&p.a, &pl);
            let reverted = t.elapsed();
            drop(a);
            (applied, reverted)
        });
        println!(
            "{name:<28} apply p50 {:>6.1} p99 {:>6.1}   revert p50 {:>6.1} p99 {:>6.1}",
            pct(&ap, 0.5),
            pct(&ap, 0.99),
            pct(&rv, 0.5),
            pct(&rv, 0.99)
        );
    }
    println!(
        "\nload average after: {}",
        ire_core::testsuite::process_stats::load_average()
    );
}
