//! Process adapter benchmark: a process killed -> the watch stream reports it, and
//! started -> reported running.
//!
//! Run: `cargo run --release -p ire-adapters --example bench_process -- [iterations]`

use std::time::{Duration, Instant};

use futures::StreamExt;
use ire_adapters::process::{ProcessAdapter, ProcessConfig, ProcessSpec};
use ire_core::resource::phase;
use ire_core::testsuite::process_stats::status_kib;
use ire_core::{EnvironmentAdapter, ResourceEventStream, ResourceFilter, Signal};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "| {name:<36} | {:>5} | {:>9.3} | {:>9.3} | {:>9.3} |",
        v.len(),
        percentile(&v, 0.50).as_secs_f64() * 1000.0,
        percentile(&v, 0.99).as_secs_f64() * 1000.0,
        v.last().unwrap().as_secs_f64() * 1000.0,
    );
}

async fn until_phase(events: &mut ResourceEventStream, want: &str) -> Instant {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event within 10s")
            .expect("stream open")
            .expect("no stream error");
        if ev.resource.status.phase == want {
            return Instant::now();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let adapter = ProcessAdapter::start(
        "bench",
        &ProcessConfig {
            processes: vec![ProcessSpec::new("victim", "/bin/sleep", &["3600"])],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut events = adapter
        .watch_resources(&ResourceFilter::everything())
        .await
        .unwrap();
    let sig = adapter.signals().unwrap();
    let (mut kill_call, mut kill_to_watch, mut start_to_running) =
        (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        sig.send_signal("victim", &Signal::kill()).await.unwrap();
        kill_call.push(t0.elapsed());
        kill_to_watch.push(until_phase(&mut events, phase::STOPPED).await - t0);
        let t1 = Instant::now();
        adapter.start_resource("victim").await.unwrap();
        start_to_running.push(until_phase(&mut events, phase::RUNNING).await - t1);
    }
    let total = started.elapsed();
    adapter.close().await.unwrap();
    println!(
        "process adapter, {n} kill/start cycles in {:.2} s ({:.0} cycles/s)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "| {:<36} | {:>5} | {:>9} | {:>9} | {:>9} |",
        "measure", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<38}|{:-<7}|{:-<11}|{:-<11}|{:-<11}|",
        "", "", "", "", ""
    );
    row("kill call (SIGKILL)", kill_call);
    row("kill call start -> watch reports it", kill_to_watch);
    row("start -> watch reports running", start_to_running);
    println!(
        "bench process memory: VmRSS {} KiB, VmHWM {} KiB",
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}
