//! In-process clusters of 3 and 5 nodes over a fault-injecting network: many clients race
//! for a few keys through partitions, dropped and delayed messages and leader changes. The
//! recorded history must show no two overlapping leases on a key and tokens that only grow,
//! and every replica must end with the same lock table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_consensus::testing::history::{check, Event, History};
use ire_consensus::testing::{ClusterOptions, Rng, TestCluster};
use ire_consensus::types::{Command, Response};
use ire_core::{LockOutcome, ResourceKey};
use openraft::RaftLogReader;

const TTL: Duration = Duration::from_millis(300);

async fn client(
    cluster: TestCluster,
    history: Arc<History>,
    id: usize,
    keys: Vec<ResourceKey>,
    until: Instant,
) {
    let mut rng = Rng::new(1000 + id as u64);
    let mut attempt = 0;
    let send = |command: Command| {
        let cluster = cluster.clone();
        let history = history.clone();
        async move {
            let sent = Instant::now();
            let r = cluster
                .write(command.clone(), Duration::from_millis(800))
                .await;
            match r {
                Ok((log_id, response)) => {
                    history.record(Event {
                        client: id,
                        command,
                        sent,
                        received: Instant::now(),
                        index: log_id.index,
                        response: response.clone(),
                    });
                    Some(response)
                }
                Err(_) => None,
            }
        }
    };
    while Instant::now() < until {
        attempt += 1;
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let holder = format!("client-{id}-{attempt}");
        let granted = send(Command::Acquire {
            key: key.clone(),
            holder,
            ttl: TTL,
        })
        .await;
        let Some(Response::Lock(LockOutcome::Granted(g))) = granted else {
            tokio::time::sleep(Duration::from_millis(5 + rng.below(20))).await;
            continue;
        };
        // Work under the lease, sometimes renewing it, then release it or let it lapse.
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        if rng.chance(0.4) {
            send(Command::Renew {
                key: key.clone(),
                token: g.token,
                ttl: TTL,
            })
            .await;
            tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
        }
        if rng.chance(0.7) {
            send(Command::Release {
                key,
                token: g.token,
            })
            .await;
        }
    }
}

async fn nemesis(cluster: TestCluster, seed: u64, until: Instant) -> usize {
    let mut rng = Rng::new(seed);
    let members = cluster.members();
    let mut disruptions = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250 + rng.below(250))).await;
        let router = cluster.router();
        match rng.below(5) {
            0 => {
                // Cut the leader off with no one (or one other node, in a 5-node cluster).
                if let Some(l) = cluster.leader() {
                    let others: Vec<u64> = members.iter().copied().filter(|m| *m != l).collect();
                    router.partition(&[&[l], &others]);
                    disruptions += 1;
                }
            }
            1 => {
                // A random minority.
                let n = members.len();
                let cut = members[rng.below(n as u64) as usize];
                let rest: Vec<u64> = members.iter().copied().filter(|m| *m != cut).collect();
                router.partition(&[&[cut], &rest]);
                disruptions += 1;
            }
            2 => router.set_faults(|f| {
                f.drop_request = 0.1;
                f.drop_response = 0.1;
                f.max_delay = Duration::from_millis(15);
            }),
            _ => router.heal(),
        }
    }
    cluster.router().heal();
    disruptions
}

async fn race(nodes: u64, clients: usize, seed: u64, run: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ClusterOptions {
        seed,
        // Clocks a little apart: stamps come from whichever node leads.
        clock_skew_ms: (1..=nodes).map(|n| (n, (n as i64 - 2) * 30)).collect(),
        ..Default::default()
    };
    let cluster = TestCluster::start(dir.path(), nodes, opts).await;
    cluster.wait_leader(Duration::from_secs(5)).await;
    let keys: Vec<ResourceKey> = [
        "docker/shop/redis/1",
        "docker/shop/api/1",
        "docker/shop/db/1",
    ]
    .iter()
    .map(|k| k.parse().unwrap())
    .collect();
    let history = Arc::new(History::default());
    let until = Instant::now() + run;
    let mut tasks = Vec::new();
    for id in 0..clients {
        tasks.push(tokio::spawn(client(
            cluster.clone(),
            history.clone(),
            id,
            keys.clone(),
            until,
        )));
    }
    let disruptions = tokio::spawn(nemesis(cluster.clone(), seed, until))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    // Healed: one more write marks the end of the history; every replica applies it.
    cluster.wait_leader(Duration::from_secs(5)).await;
    let marker: ResourceKey = "docker/marker".parse().unwrap();
    let (last, _) = cluster
        .write_ok(Command::Hold {
            key: marker,
            by: "test".into(),
            reason: "end of history".into(),
        })
        .await;
    cluster
        .wait_applied(last.index, Duration::from_secs(10))
        .await;

    let leader = cluster
        .node(cluster.wait_leader(Duration::from_secs(5)).await)
        .unwrap();
    let log = leader
        .log
        .clone()
        .try_get_log_entries(1..=last.index)
        .await
        .unwrap();
    assert_eq!(
        log.len() as u64,
        last.index,
        "the whole committed log is there"
    );
    let events = history.events();
    let summary =
        check(&events, &log).unwrap_or_else(|e| panic!("history violates the lock contract: {e}"));
    eprintln!(
        "{nodes} nodes: {} events, {summary:?}, {disruptions} partitions",
        events.len()
    );
    assert!(
        summary.leases >= 10,
        "too few leases to mean anything: {summary:?}"
    );
    assert!(summary.handoffs >= 3, "keys must change hands: {summary:?}");
    assert!(disruptions >= 2, "the network must have been disrupted");

    // Every replica ends with the same lock table.
    let rows = |id| {
        let n = cluster.node(id).unwrap();
        keys.iter()
            .map(|k| n.sm.read(|v| v.lock_row(k)).unwrap())
            .collect::<Vec<_>>()
    };
    let first = rows(1);
    for id in cluster.members() {
        assert_eq!(rows(id), first, "node {id} disagrees on the lock table");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_never_grant_overlapping_leases_and_tokens_only_grow() {
    race(3, 8, 11, Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_never_grant_overlapping_leases_and_tokens_only_grow() {
    race(5, 10, 23, Duration::from_secs(6)).await;
}
