//! The userspace backend, measured from inside the target's network namespace: the effect
//! of each fault on real traffic over a veth pair, and what a revert leaves.

mod support;

use std::time::Duration;

use ire_core::{
    Bandwidth, BitRate, Delay, Direction, NetworkBackend, NetworkFault, Peers, Probability, Reorder,
};
use support::*;

const MS: Duration = Duration::from_millis(1);

fn delay(ms: u64, jitter: u64) -> Option<Delay> {
    Some(Delay {
        latency: MS * ms as u32,
        jitter: MS * jitter as u32,
        correlation: 0.0,
    })
}

fn pct(p: f64) -> Option<Probability> {
    Some(Probability {
        percent: p,
        correlation: 0.0,
    })
}

fn userspace(id: &str, fault: NetworkFault) -> ire_net_fault::Plan {
    plan(id, fault, NetworkBackend::Userspace, &["eth0"])
}

#[test]
fn delay_adds_its_latency_to_the_round_trip_and_the_revert_restores_the_baseline() {
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let before = p.a.state();
    let base = millis(&round_trips(&p.a, echo.addr, 50, 5 * MS, 300 * MS));
    assert_eq!(base.len(), 50);

    let plan = userspace(
        "delay-1",
        NetworkFault {
            delay: delay(100, 0),
            ..Default::default()
        },
    );
    let applied = apply(&p.a, &plan).unwrap();
    assert_eq!(applied.ready["emulator"], true);
    assert!(p.a.sh("nft list tables").contains("ire_delay_1"));
    let slow = millis(&round_trips(&p.a, echo.addr, 100, 5 * MS, 400 * MS));
    assert_eq!(slow.len(), 100, "delay loses nothing");
    let added = median(&slow) - median(&base);
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");
    assert!(
        slow[0] - median(&base) >= 95.0,
        "every packet waits: min {:.1}",
        slow[0]
    );

    assert!(applied.stop(), "the helper exits cleanly on SIGTERM");
    assert_eq!(p.a.state(), before, "the namespace is left as it was found");
    let after = millis(&round_trips(&p.a, echo.addr, 50, 5 * MS, 300 * MS));
    assert!(
        median(&after) < median(&base) + 5.0,
        "baseline again: {}",
        median(&after)
    );
}

#[test]
fn delaying_a_tcp_sender_does_not_throttle_it_to_its_send_buffer() {
    // Held in the kernel, delayed packets would stay charged to the sending socket: TCP
    // would crawl at a few hundred kbit/s. The emulator sends copies instead.
    let p = pair();
    let plan = userspace(
        "tcp-delay",
        NetworkFault {
            delay: delay(50, 0),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &plan).unwrap();
    let bps = tcp_throughput(&p.a, &p.b, &p.b_ip, 5002, 1000 * MS, 2000 * MS) * 8.0;
    let stats = a.stop_with_stats();
    assert!(bps > 10e6, "{bps:.0} bit/s through a 50 ms delay");
    assert!(stats["resent"].as_u64().unwrap() > 1000, "{stats}");
}

#[test]
fn jitter_widens_the_spread_of_round_trips_around_the_latency() {
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let steady = userspace(
        "jit-0",
        NetworkFault {
            delay: delay(50, 0),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &steady).unwrap();
    let flat = millis(&round_trips(&p.a, echo.addr, 200, 2 * MS, 300 * MS));
    assert!(a.stop());
    let jittery = userspace(
        "jit-1",
        NetworkFault {
            delay: delay(50, 20),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &jittery).unwrap();
    let spread = millis(&round_trips(&p.a, echo.addr, 200, 2 * MS, 300 * MS));
    assert!(a.stop());
    assert_eq!(spread.len(), 200);
    // Uniform in 50 ± 20 ms: 80% of round trips within a 32 ms band (p10 to p90), where
    // without jitter they are within a millisecond or two (a few more on a loaded machine:
    // the same load widens both bands).
    let band = |v: &[f64]| v[v.len() * 9 / 10] - v[v.len() / 10];
    let (flat_band, jit_band) = (band(&flat), band(&spread));
    assert!(
        flat_band < 10.0,
        "without jitter: p10-p90 {flat_band:.2} ms"
    );
    assert!(
        (24.0..=45.0).contains(&jit_band) && jit_band > flat_band + 15.0,
        "with jitter: p10-p90 {jit_band:.2} ms (without: {flat_band:.2} ms)"
    );
    assert!(
        spread[0] >= 29.0,
        "nothing leaves before latency - jitter: {spread:?}"
    );
    assert!((median(&spread) - 50.0).abs() < 8.0, "{}", median(&spread));
}

#[test]
fn loss_drops_its_share_of_a_thousand_probes() {
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let plan = userspace(
        "loss-30",
        NetworkFault {
            loss: pct(30.0),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &plan).unwrap();
    let replies = round_trips(&p.a, echo.addr, 1000, MS / 5, 300 * MS)
        .iter()
        .filter(|r| r.is_some())
        .count();
    assert!(a.stop());
    let lost = 100.0 - replies as f64 / 10.0;
    assert!((25.0..=35.0).contains(&lost), "lost {lost}%");
}

#[test]
fn corruption_is_seen_by_the_receiver() {
    let p = pair();
    let plan = userspace(
        "corrupt-20",
        NetworkFault {
            corrupt: pct(20.0),
            ..Default::default()
        },
    );
    let before = udp_errors(&p.b);
    let a = apply(&p.a, &plan).unwrap();
    let got = udp_stream(&p.a, &p.b, &p.b_ip, 9, 1000, 200, MS / 2);
    assert!(a.stop());
    let after = udp_errors(&p.b);
    // A flipped bit fails the receiver's UDP checksum or length check (its kernel counts the
    // datagram as an input error and drops it) or, where the receiver trusts the sender's
    // checksum, reaches the application: either way the receiver sees it. A full receive
    // buffer is not corruption: it is left out.
    let rejected = (after.in_errors - before.in_errors) - (after.rcvbuf - before.rcvbuf);
    let seen = got.corrupted as u64 + rejected;
    assert!(
        (150..=250).contains(&seen),
        "{seen} of 1000 seen damaged: {got:?} {before:?} {after:?}"
    );
    assert!(after.checksum > before.checksum || got.corrupted > 0);
    let missing = 1000 - got.order.len() - got.corrupted;
    let overflowed = (after.rcvbuf - before.rcvbuf) as usize;
    assert_eq!(
        missing,
        rejected as usize + overflowed,
        "every lost datagram was rejected by the receiver's kernel"
    );
}

#[test]
fn duplication_is_seen_by_the_receiver_both_ways() {
    for direction in [Direction::Egress, Direction::Ingress] {
        let p = pair();
        let plan = userspace(
            &format!("dup-{direction:?}"),
            NetworkFault {
                duplicate: pct(20.0),
                direction,
                ..Default::default()
            },
        );
        // Egress: the sender's packets are copied; ingress: the receiver's arrivals are.
        let target = if direction == Direction::Egress {
            &p.a
        } else {
            &p.b
        };
        let a = apply(target, &plan).unwrap();
        let got = udp_stream(&p.a, &p.b, &p.b_ip, 9, 1000, 100, MS / 5);
        assert!(a.stop());
        let mut seen = std::collections::HashSet::new();
        let dups = got.order.iter().filter(|i| !seen.insert(**i)).count();
        assert_eq!(seen.len(), 1000, "{direction:?}: nothing is lost");
        assert!(
            (150..=250).contains(&dups),
            "{direction:?}: {dups} duplicates"
        );
    }
}

#[test]
fn reordered_packets_overtake_the_delayed_ones() {
    let p = pair();
    let got = udp_stream(&p.a, &p.b, &p.b_ip, 9, 300, 64, MS / 2);
    assert_eq!(
        got.order,
        (0..300).collect::<Vec<_>>(),
        "in order without the fault"
    );
    let plan = userspace(
        "reorder-25",
        NetworkFault {
            delay: delay(20, 0),
            reorder: Some(Reorder {
                percent: 25.0,
                correlation: 0.0,
                gap: 1,
            }),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &plan).unwrap();
    let got = udp_stream(&p.a, &p.b, &p.b_ip, 9, 1000, 64, MS / 2);
    assert!(a.stop());
    assert_eq!(got.order.len(), 1000);
    // An overtaker arrives before a packet sent earlier: the 25% sent at once.
    let mut min_after = u32::MAX;
    let mut overtakers = 0;
    for i in got.order.iter().rev() {
        if *i > min_after {
            overtakers += 1;
        }
        min_after = min_after.min(*i);
    }
    assert!((200..=300).contains(&overtakers), "{overtakers} overtakers");
}

#[test]
fn a_bandwidth_limit_caps_throughput_within_ten_percent_both_ways() {
    for (direction, rate) in [
        (Direction::Egress, 8_000_000u64),
        (Direction::Ingress, 4_000_000),
    ] {
        let p = pair();
        let plan = userspace(
            &format!("bw-{direction:?}"),
            NetworkFault {
                bandwidth: Some(Bandwidth {
                    rate: BitRate(rate),
                    burst: None,
                }),
                direction,
                ..Default::default()
            },
        );
        let before = p.a.state();
        let a = apply(&p.a, &plan).unwrap();
        assert_eq!(a.ready["emulator"], false, "bandwidth needs no emulator");
        a.stop();
        // A bandwidth-only fault stays after apply exits; sending from a to b is a's egress,
        // and from b to a its ingress.
        let bps = if direction == Direction::Egress {
            tcp_throughput(&p.a, &p.b, &p.b_ip, 5001, 700 * MS, 2000 * MS)
        } else {
            tcp_throughput(&p.b, &p.a, &p.a_ip, 5001, 700 * MS, 2000 * MS)
        } * 8.0;
        let ratio = bps / rate as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{direction:?}: {bps:.0} bit/s of {rate}"
        );
        revert(&p.a, &plan);
        assert_eq!(
            p.a.state(),
            before,
            "{direction:?}: the namespace is as it was"
        );
    }
}

#[test]
fn a_partition_blocks_only_the_named_peers() {
    // a reaches b on eth0 and c on eth1.
    let a = Netns::new();
    let b = Netns::new();
    let c = Netns::new();
    let (_, b_ip) = link(&a, "eth0", &b, "eth0", 0);
    let (_, c_ip) = link(&a, "eth1", &c, "eth0", 1);
    let b7 = udp_echo(&b, &b_ip, 7);
    let b8 = udp_echo(&b, &b_ip, 8);
    let c7 = udp_echo(&c, &c_ip, 7);
    let replies = |to| {
        round_trips(&a, to, 20, MS, 200 * MS)
            .iter()
            .filter(|r| r.is_some())
            .count()
    };
    let before = a.state();
    let cut = plan(
        "part-b",
        NetworkFault {
            partition: true,
            direction: Direction::Both,
            peers: Peers {
                cidrs: vec![b_ip.parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        },
        NetworkBackend::Userspace,
        &["eth0", "eth1"],
    );
    let applied = apply(&a, &cut).unwrap();
    assert_eq!(applied.ready["emulator"], false);
    assert_eq!(replies(b7.addr), 0, "b is cut off");
    assert_eq!(replies(b8.addr), 0, "on every port");
    assert_eq!(replies(c7.addr), 20, "c is not");
    revert(&a, &cut);
    assert_eq!(replies(b7.addr), 20, "b again after the revert");
    assert_eq!(a.state(), before);

    let port_only = plan(
        "part-b7",
        NetworkFault {
            partition: true,
            peers: Peers {
                cidrs: vec![b_ip.parse().unwrap()],
                ports: vec!["7".parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        },
        NetworkBackend::Userspace,
        &["eth0", "eth1"],
    );
    apply(&a, &port_only).unwrap();
    assert_eq!(replies(b7.addr), 0, "b's port 7 is cut off");
    assert_eq!(replies(b8.addr), 20, "its port 8 is not");
    assert_eq!(replies(c7.addr), 20, "nor c's port 7");
    revert(&a, &port_only);
    assert_eq!(a.state(), before);
}

#[test]
fn the_emulator_fails_open_and_a_revert_after_sigkill_leaves_nothing() {
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let before = p.a.state();
    let plan = userspace(
        "crash-1",
        NetworkFault {
            loss: pct(100.0),
            ..Default::default()
        },
    );
    let mut applied = apply(&p.a, &plan).unwrap();
    let got = |ns: &Netns| {
        round_trips(ns, echo.addr, 20, MS, 200 * MS)
            .iter()
            .filter(|r| r.is_some())
            .count()
    };
    assert_eq!(
        got(&p.a),
        0,
        "every packet is dropped while the emulator runs"
    );
    applied.child.kill().unwrap(); // SIGKILL: no cleanup
    applied.child.wait().unwrap();
    assert!(
        p.a.sh("nft list tables").contains("ire_crash_1"),
        "its rule is still there"
    );
    assert_eq!(
        got(&p.a),
        20,
        "but with no emulator on the queue, traffic flows (bypass)"
    );
    revert(&p.a, &plan);
    assert_eq!(p.a.state(), before, "the revert leaves nothing behind");
    revert(&p.a, &plan);
    assert_eq!(p.a.state(), before, "and is idempotent");
}

#[test]
fn a_revert_stops_a_running_emulator_and_releases_its_packets() {
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let before = p.a.state();
    let plan = userspace(
        "stop-1",
        NetworkFault {
            delay: delay(300, 0),
            ..Default::default()
        },
    );
    let mut applied = apply(&p.a, &plan).unwrap();
    // Probes in flight while the revert runs come back: held packets are released.
    let r = std::thread::scope(|s| {
        let probes = s.spawn(|| round_trips(&p.a, echo.addr, 10, MS, 600 * MS));
        std::thread::sleep(50 * MS);
        revert(&p.a, &plan);
        assert!(
            applied.child.wait().unwrap().success(),
            "the emulator stopped cleanly"
        );
        probes.join().unwrap()
    });
    assert_eq!(r.iter().filter(|x| x.is_some()).count(), 10, "{r:?}");
    assert_eq!(p.a.state(), before);
}

#[test]
fn the_probe_lists_interfaces_and_leaves_nothing() {
    let p = pair();
    let before = p.a.state();
    let probe = probe(&p.a);
    assert_eq!(probe.interfaces, vec!["eth0".to_owned()]);
    assert_eq!(probe.netem, kernel_has_netem().is_ok());
    assert_eq!(p.a.state(), before);
}

#[test]
fn a_plan_for_another_fault_id_is_refused() {
    let p = pair();
    let plan = userspace(
        "mine",
        NetworkFault {
            loss: pct(1.0),
            ..Default::default()
        },
    );
    let out = helper()
        .arg("--netns")
        .arg(p.a.path())
        .args(["apply", "--fault-id", "other", "--plan", &plan.to_json()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault-id"));
}
