//! Benchmark: listing 10,000 pods page by page from the fake Kubernetes API server, and
//! the lister's peak memory (seed property 94: it stays bounded by the page size).
//!
//! ```sh
//! cargo run --release -p ire-adapters --example bench_kubernetes
//! ```
//!
//! The fake API server runs in a child process and each listing in another, so a
//! process's peak RSS (`VmHWM`) is the lister's alone. For comparison, the `collect` rows
//! gather the whole listing into one `Vec` (what `list_resources` without a limit does).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use futures::StreamExt;
use ire_adapters::kubernetes::fake_api::FakeApiServer;
use ire_adapters::kubernetes::{KubernetesAdapter, KubernetesConfig};
use ire_core::testsuite::process_stats::peak_rss_kib;
use ire_core::{EnvironmentAdapter, ResourceFilter};

const NS: &str = "bench";
const PAGE_SIZE: u32 = 500;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Child: serve `n` pods until killed.
async fn serve(n: usize) {
    let server = FakeApiServer::start().await.expect("fake API server");
    server
        .cluster()
        .add_pods(NS, "pod", n, &[("app", "fleet"), ("tier", "web")]);
    println!("{}", server.url());
    std::future::pending::<()>().await;
}

/// Child: list every pod once and print `pods pages total_ms p50_ms p99_ms base_kib peak_kib`.
async fn list(url: &str, mode: &str) {
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let config = KubernetesConfig {
        namespace: Some(NS.into()),
        page_size: PAGE_SIZE,
        ..KubernetesConfig::default()
    };
    let adapter = KubernetesAdapter::connect("bench", client, &config)
        .await
        .expect("connect");
    let filter = ResourceFilter::everything()
        .with_kind("pod")
        .with_label("app", "fleet");
    let base = peak_rss_kib();
    let start = Instant::now();
    let (mut pods, mut pages, mut page_ms) = (0usize, 0usize, Vec::new());
    if mode == "pages" {
        let mut stream = adapter.list_pages(&filter).expect("pages");
        let mut last = Instant::now();
        while let Some(page) = stream.next().await {
            let page = page.expect("page");
            page_ms.push(last.elapsed().as_secs_f64() * 1e3);
            last = Instant::now();
            pods += page.len();
            pages += 1;
        }
    } else {
        let all = adapter.list_resources(&filter).await.expect("list");
        pods = all.len();
        pages = pods.div_ceil(PAGE_SIZE as usize);
    }
    let total = start.elapsed().as_secs_f64() * 1e3;
    page_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{pods} {pages} {total:.1} {:.2} {:.2} {base} {}",
        percentile(&page_ms, 0.5),
        percentile(&page_ms, 0.99),
        peak_rss_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("--serve") => return rt.block_on(serve(args[2].parse().expect("count"))),
        Some("--list") => return rt.block_on(list(&args[2], &args[3])),
        _ => {}
    }
    let exe = std::env::current_exe().expect("own path");
    println!("paginated pod listing from the fake API server (page size {PAGE_SIZE}, one request per page)");
    println!(
        "{:>7} {:>6} {:>6} {:>9} {:>11} {:>11} {:>11} {:>12} {:>12}",
        "pods",
        "mode",
        "pages",
        "total ms",
        "page p50 ms",
        "page p99 ms",
        "pods/s",
        "base RSS MiB",
        "peak RSS MiB"
    );
    for n in [1_000usize, 10_000] {
        let mut server = Command::new(&exe)
            .args(["--serve", &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("server child");
        let mut url = String::new();
        BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut url)
            .expect("url");
        let url = url.trim().to_owned();
        for mode in ["pages", "collect"] {
            let out = Command::new(&exe)
                .args(["--list", &url, mode])
                .output()
                .expect("lister child");
            let line = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() != 7 {
                eprintln!(
                    "lister failed: {line} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            println!(
                "{:>7} {:>6} {:>6} {:>9.0} {:>11.2} {:>11.2} {:>11.0} {:>12.1} {:>12.1}",
                f[0],
                mode,
                f[1],
                f[2],
                f[3],
                f[4],
                f[0] / (f[2] / 1e3),
                f[5] / 1024.0,
                f[6] / 1024.0
            );
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}
