//! Event fan-out benchmark: 1 publisher, 16 subscribers.
//!
//! `cargo run --release -p ire-actors --example bench_bus`
//!
//! Two runs: throughput (publish as fast as the bus takes it) and latency (publish at a
//! steady rate; time from publish to each subscriber's receive).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ire_actors::bus::{BusConfig, LocalEventBus};
use ire_core::testsuite::process_stats::peak_rss_kib;
use ire_core::testsuite::process_stats::{cpu_seconds, load_average};
use ire_core::{Event, EventBus, EventFilter};

const SUBSCRIBERS: usize = 16;

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Run {
    published: u64,
    received: u64,
    dropped: u64,
    elapsed: Duration,
    cpu: f64,
    latencies_ns: Vec<u64>,
}

async fn run(events: u64, pace: Option<Duration>, buffer: usize) -> Run {
    let bus = LocalEventBus::with_config(BusConfig {
        subscriber_buffer: buffer,
        async_queue: 8192,
    });
    let mut readers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut sub = bus
            .subscribe(EventFilter {
                types: vec!["bench.*".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(sub.id().to_owned());
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events as usize);
            while let Some(e) = sub.recv().await {
                let now = epoch().elapsed().as_nanos() as u64;
                let sent = e.data.get("t").and_then(|v| v.as_u64()).unwrap_or(now);
                lat.push(now.saturating_sub(sent));
            }
            lat
        }));
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    // The publisher is a task on the same runtime, as the engine's and monitor's are.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let template = Event::new("bench.tick", "bench").with_metadata("campaign", "bench");
            let mut next = Instant::now();
            for i in 0..events {
                let mut e = template.clone();
                e.data
                    .insert("t".into(), (epoch().elapsed().as_nanos() as u64).into());
                bus.publish(e).await.unwrap();
                match pace {
                    Some(p) => {
                        next += p;
                        // Sleep granularity is ~1 ms: yield (letting the subscribers run)
                        // until the next event is due.
                        while Instant::now() < next {
                            tokio::task::yield_now().await;
                        }
                    }
                    None if i % 256 == 255 => tokio::task::yield_now().await,
                    None => {}
                }
            }
            start.elapsed()
        })
    };
    let publish_elapsed = publisher.await.unwrap();
    let dropped: u64 = ids
        .iter()
        .map(|id| bus.dropped_events(id).unwrap_or(0))
        .sum();
    bus.close().await.unwrap();
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(r.await.unwrap());
    }
    let elapsed = start.elapsed().max(publish_elapsed);
    Run {
        published: events,
        received: lat.len() as u64,
        dropped,
        elapsed,
        cpu: cpu_seconds() - cpu0,
        latencies_ns: lat,
    }
}

fn print(name: &str, r: &mut Run) {
    r.latencies_ns.sort_unstable();
    println!(
        "| {name} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
        r.published,
        r.received,
        r.dropped,
        r.published as f64 / r.elapsed.as_secs_f64(),
        r.received as f64 / r.elapsed.as_secs_f64(),
        r.received as f64 / r.cpu.max(0.01),
        pct(&r.latencies_ns, 50.0) as f64 / 1e3,
        pct(&r.latencies_ns, 99.0) as f64 / 1e3,
        *r.latencies_ns.last().unwrap_or(&0) as f64 / 1e3,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    epoch();
    println!("load average before the run: {}", load_average());
    rt.block_on(async {
        // Warm-up.
        run(20_000, None, 4096).await;
        println!("1 publisher -> {SUBSCRIBERS} subscribers, 2 worker threads");
        println!();
        println!("| run | published | received | dropped | published/s | deliveries/s | deliveries per CPU-second | p50 µs | p99 µs | max µs |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut t = run(500_000, None, 4096).await;
        print("throughput (unpaced)", &mut t);
        let mut l = run(50_000, Some(Duration::from_micros(20)), 1024).await;
        print("latency (50k events/s)", &mut l);
        println!();
        // The publisher's own cost: 16 subscribers that do not read (large buffers).
        let bus = LocalEventBus::with_config(BusConfig {
            subscriber_buffer: 20_000,
            async_queue: 8,
        });
        let mut subs = Vec::new();
        for _ in 0..SUBSCRIBERS {
            subs.push(bus.subscribe(EventFilter::default()).await.unwrap());
        }
        let n = 20_000u32;
        let template = Event::new("bench.tick", "bench").with_metadata("campaign", "bench");
        let start = Instant::now();
        for i in 0..n {
            let mut e = template.clone();
            e.data.insert("t".into(), i.into());
            bus.publish(e).await.unwrap();
        }
        let el = start.elapsed();
        println!(
            "publish into {SUBSCRIBERS} buffers, nobody reading: {:.2} µs per publish ({:.0} publishes/s, {:.0} deliveries/s)",
            el.as_secs_f64() * 1e6 / n as f64,
            n as f64 / el.as_secs_f64(),
            (n as usize * SUBSCRIBERS) as f64 / el.as_secs_f64()
        );
        drop(subs);
        // What one delivery costs at least: cloning the event for the subscriber.
        let mut e = template.clone();
        e.data.insert("t".into(), 1u64.into());
        let (n, cpu0) = (200_000u32, cpu_seconds());
        let mut keep = Vec::with_capacity(1024);
        for _ in 0..n {
            keep.push(e.clone());
            if keep.len() == 1024 {
                keep.clear();
            }
        }
        println!(
            "cloning one event: {:.2} µs of CPU",
            (cpu_seconds() - cpu0) * 1e6 / n as f64
        );
        println!();
        println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
    });
}
