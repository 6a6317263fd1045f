//! What every adapter's network faults share: turning a fault and a target's probe into the
//! helper's plan, and reading the plan back from a ledger handle.
//!
//! Each adapter runs the same helper (`ire-net-fault`, from the `ire-net-fault` crate) where
//! the target's network is; only how it gets there differs (a helper container, an
//! ephemeral container, a process in a network namespace).

use ire_core::network::check_fault_id;
use ire_core::{Cidr, Error, NetworkFault, NetworkFaultHandle, Result};
use ire_net_fault::plan::choose_backend;
use ire_net_fault::probe::Probe;
use ire_net_fault::Plan;
use serde::de::DeserializeOwned;

/// The plan for `fault` on a target whose namespace answered `probe`, with the addresses of
/// the resources its peer selector chose (`peer_addresses`). `target` names the target in
/// errors.
pub(crate) fn make_plan(
    fault_id: &str,
    fault: &NetworkFault,
    probe: &Probe,
    peer_addresses: Vec<Cidr>,
    target: &str,
) -> Result<Plan> {
    let backend = choose_backend(
        fault.backend,
        if probe.netem {
            Ok(())
        } else {
            Err(probe.netem_error.as_deref().unwrap_or("tc refused netem"))
        },
        target,
    )?;
    let interfaces = if fault.interfaces.is_empty() {
        probe.interfaces.clone()
    } else {
        for i in &fault.interfaces {
            if !probe.interfaces.contains(i) {
                return Err(Error::invalid(
                    "interfaces",
                    format!(
                        "{target} has no interface {i:?} (it has {})",
                        probe.interfaces.join(", ")
                    ),
                ));
            }
        }
        fault.interfaces.clone()
    };
    let mut resolved = fault.clone();
    resolved.peers.resources = None;
    for c in peer_addresses {
        if !resolved.peers.cidrs.contains(&c) {
            resolved.peers.cidrs.push(c);
        }
    }
    Plan::new(fault_id, resolved, backend, interfaces)
}

/// Checks what `prepare` is given, before anything is looked up.
pub(crate) fn check_request(fault_id: &str, fault: &NetworkFault) -> Result<()> {
    check_fault_id(fault_id)?;
    fault.validate()
}

/// The peers' addresses, or an error when the selector found none.
pub(crate) fn peers_found(addresses: Vec<Cidr>, target: &str) -> Result<Vec<Cidr>> {
    if addresses.is_empty() {
        return Err(Error::invalid(
            "peers.resources",
            format!("the selector matches no resource with an address (for {target})"),
        ));
    }
    Ok(addresses)
}

/// An adapter's data in a handle, typed.
pub(crate) fn handle_data<T: DeserializeOwned>(
    handle: &NetworkFaultHandle,
    adapter: &str,
) -> Result<T> {
    serde_json::from_value(handle.data.clone()).map_err(|e| {
        Error::invalid(
            "network fault handle",
            format!("not a {adapter} adapter's handle: {e}"),
        )
    })
}

/// Reads the helper's answer to `probe` (one JSON line).
pub(crate) fn parse_probe(stdout: &str, target: &str) -> Result<Probe> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        Error::other(
            ire_core::ErrorClass::Fatal,
            format!("the network-fault helper's probe of {target} answered {stdout:?}: {e}"),
            None,
        )
    })
}

/// The helper's arguments for `command` (`apply` or `revert`) of a plan.
pub(crate) fn helper_args(command: &str, plan: &Plan) -> Vec<String> {
    vec![
        command.to_owned(),
        "--fault-id".to_owned(),
        plan.fault_id.clone(),
        "--plan".to_owned(),
        plan.to_json(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::{BackendChoice, NetworkBackend, Probability};

    fn probe(netem: bool) -> Probe {
        Probe {
            netem,
            netem_error: (!netem).then(|| "Error: Specified qdisc kind is unknown.".into()),
            interfaces: vec!["eth0".into(), "eth1".into()],
        }
    }

    #[test]
    fn a_plan_takes_the_probed_interfaces_and_the_resolved_peers() {
        let fault = NetworkFault {
            loss: Some(Probability {
                percent: 10.0,
                correlation: 0.0,
            }),
            ..Default::default()
        };
        let p = make_plan(
            "f1",
            &fault,
            &probe(false),
            vec!["172.17.0.3".parse().unwrap()],
            "c1",
        )
        .unwrap();
        assert_eq!(p.backend, NetworkBackend::Userspace);
        assert_eq!(p.interfaces, vec!["eth0", "eth1"]);
        assert_eq!(p.fault.peers.cidrs.len(), 1);
        assert_eq!(
            make_plan("f1", &fault, &probe(true), vec![], "c1")
                .unwrap()
                .backend,
            NetworkBackend::Netem
        );
    }

    #[test]
    fn unknown_interfaces_and_refused_backends_say_which_target() {
        let mut fault = NetworkFault {
            partition: true,
            interfaces: vec!["wlan0".into()],
            ..Default::default()
        };
        let e = make_plan("f1", &fault, &probe(true), vec![], "container c1").unwrap_err();
        assert!(e.to_string().contains("wlan0") && e.to_string().contains("container c1"));
        fault.interfaces.clear();
        fault.backend = BackendChoice::Netem;
        let e = make_plan("f1", &fault, &probe(false), vec![], "container c1").unwrap_err();
        assert!(e.to_string().contains("sch_netem"), "{e}");
    }
}
