//! Docker adapter benchmark against the local Docker Engine: kill call latency, killed ->
//! running again after restart, and container death -> watch stream report.
//!
//! Run: `cargo run --release -p ire-adapters --example bench_docker -- [iterations]`
//! (needs the test images: deploy/test-images/build.sh).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures::StreamExt;
use ire_adapters::docker::{DockerAdapter, DockerConfig};
use ire_core::resource::phase;
use ire_core::testsuite::process_stats::status_kib;
use ire_core::{EnvironmentAdapter, ResourceEventStream, ResourceFilter, Signal};

const LABEL: &str = "ire.bench";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut v: Vec<Duration>, target: &str) {
    v.sort();
    println!(
        "| {name:<40} | {:>4} | {:>9.1} | {:>9.1} | {:>9.1} | {target:<8} |",
        v.len(),
        percentile(&v, 0.50).as_secs_f64() * 1000.0,
        percentile(&v, 0.99).as_secs_f64() * 1000.0,
        v.last().unwrap().as_secs_f64() * 1000.0,
    );
}

async fn until_phase(events: &mut ResourceEventStream, id: &str, want: &str) -> Instant {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("event within 30s")
            .expect("stream open")
            .expect("no stream error");
        if ev.resource.id == id && ev.resource.status.phase == want {
            return Instant::now();
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let run = format!("{}", std::process::id());
    let adapter = DockerAdapter::connect("bench", &DockerConfig::default())
        .await
        .expect("Docker daemon");
    let docker = adapter.client().unwrap().clone();
    let name = format!("ire-bench-{run}");
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            ContainerCreateBody {
                image: Some("ire/test-busybox:latest".into()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some(HashMap::from([(LABEL.to_owned(), run.clone())])),
                ..Default::default()
            },
        )
        .await
        .expect("create (is ire/test-busybox built?)");
    let id = created.id;
    docker.start_container(&id, None).await.unwrap();
    let mut events = adapter
        .watch_resources(&ResourceFilter::everything().with_label(LABEL, &run))
        .await
        .unwrap();
    let sig = adapter.signals().unwrap();

    let (mut kill_call, mut death_to_watch, mut back_running) =
        (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        sig.send_signal(&id, &Signal::kill()).await.unwrap();
        kill_call.push(t0.elapsed());
        let seen = until_phase(&mut events, &id, phase::STOPPED).await;
        death_to_watch.push(seen - t0);

        let t1 = Instant::now();
        adapter.restart_resource(&id).await.unwrap();
        let running = until_phase(&mut events, &id, phase::RUNNING).await;
        back_running.push(running - t1);
    }
    let total = started.elapsed();

    docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();

    println!(
        "docker adapter, Docker {} (API {}), {n} kill/restart cycles in {:.1} s",
        docker
            .version()
            .await
            .ok()
            .and_then(|v| v.version)
            .unwrap_or_default(),
        adapter.api_version().unwrap(),
        total.as_secs_f64()
    );
    println!(
        "| {:<40} | {:>4} | {:>9} | {:>9} | {:>9} | {:<8} |",
        "measure", "n", "p50 ms", "p99 ms", "max ms", "target"
    );
    println!(
        "|{:-<42}|{:-<6}|{:-<11}|{:-<11}|{:-<11}|{:-<10}|",
        "", "", "", "", "", ""
    );
    row("kill call (SIGKILL)", kill_call, "");
    row(
        "kill call start -> watch reports death",
        death_to_watch,
        "<= 500",
    );
    row("killed -> running again (restart)", back_running, "<= 2000");
    println!(
        "bench process memory: VmRSS {} KiB, VmHWM {} KiB",
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}
