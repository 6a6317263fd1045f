//! The netem backend, measured from inside the target's namespace. These run where the
//! kernel has `sch_netem` and are skipped, with tc's reason printed, where it has not; the
//! last one runs only where it has not, and checks that netem is refused cleanly there.

mod support;

use std::time::Duration;

use ire_core::{Delay, NetworkBackend, NetworkFault, Probability};
use support::*;

const MS: Duration = Duration::from_millis(1);

/// `None` (and a printed reason) where this kernel cannot run netem.
fn netem_or_skip(test: &str) -> Option<()> {
    match kernel_has_netem() {
        Ok(()) => Some(()),
        Err(why) => {
            eprintln!("SKIPPED {test}: this kernel has no sch_netem ({why})");
            None
        }
    }
}

fn netem(id: &str, fault: NetworkFault) -> ire_net_fault::Plan {
    plan(id, fault, NetworkBackend::Netem, &["eth0"])
}

#[test]
fn netem_delay_adds_its_latency_and_the_revert_restores_the_namespace() {
    let Some(()) = netem_or_skip("netem_delay_adds_its_latency") else {
        return;
    };
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let before = p.a.state();
    let base = millis(&round_trips(&p.a, echo.addr, 50, 5 * MS, 300 * MS));
    let plan = netem(
        "netem-delay",
        NetworkFault {
            delay: Some(Delay {
                latency: 100 * MS,
                jitter: Duration::ZERO,
                correlation: 0.0,
            }),
            ..Default::default()
        },
    );
    let a = apply(&p.a, &plan).unwrap();
    assert_eq!(a.ready["emulator"], false, "netem needs no emulator");
    assert!(p.a.sh("tc qdisc show dev eth0").contains("netem"));
    let slow = millis(&round_trips(&p.a, echo.addr, 100, 5 * MS, 400 * MS));
    let added = median(&slow) - median(&base);
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");
    revert(&p.a, &plan);
    assert_eq!(p.a.state(), before);
}

#[test]
fn netem_loss_drops_its_share_of_a_thousand_probes() {
    let Some(()) = netem_or_skip("netem_loss_drops_its_share") else {
        return;
    };
    let p = pair();
    let echo = udp_echo(&p.b, &p.b_ip, 7);
    let plan = netem(
        "netem-loss",
        NetworkFault {
            loss: Some(Probability {
                percent: 30.0,
                correlation: 0.0,
            }),
            ..Default::default()
        },
    );
    apply(&p.a, &plan).unwrap();
    let replies = round_trips(&p.a, echo.addr, 1000, MS / 5, 300 * MS)
        .iter()
        .filter(|r| r.is_some())
        .count();
    revert(&p.a, &plan);
    let lost = 100.0 - replies as f64 / 10.0;
    assert!((25.0..=35.0).contains(&lost), "lost {lost}%");
}

#[test]
fn without_sch_netem_the_netem_backend_fails_cleanly() {
    if kernel_has_netem().is_ok() {
        eprintln!(
            "SKIPPED without_sch_netem_the_netem_backend_fails_cleanly: this kernel has sch_netem"
        );
        return;
    }
    let p = pair();
    let before = p.a.state();
    let plan = netem(
        "netem-refused",
        NetworkFault {
            delay: Some(Delay {
                latency: 100 * MS,
                jitter: Duration::ZERO,
                correlation: 0.0,
            }),
            ..Default::default()
        },
    );
    let err = apply(&p.a, &plan)
        .err()
        .expect("netem cannot be applied here");
    assert!(err.contains("qdisc kind is unknown"), "{err}");
    assert_eq!(p.a.state(), before, "the failed apply left nothing");
}
