//! The fault's nftables table, `inet ire_<fault id>`: one base chain per direction that
//! picks the fault's packets (peers, ports, interfaces) and drops them (a partition) or
//! jumps to the `impair` chain, whose single rule sends them to the emulator's NFQUEUE with
//! bypass. Deleting the table removes all of it.

use ire_core::{Cidr, Result};

use crate::cmd;
use crate::nftnl::{self, QueueExpr};
use crate::plan::{Plan, OWN_MARK};

/// The chain the queue rule lives in.
pub const IMPAIR_CHAIN: &str = "impair";

/// One direction's view of a packet: which header fields are the peer's.
struct Side {
    chain: &'static str,
    hook: &'static str,
    dev: &'static str,
    remote_addr: &'static str,
    remote_port: &'static str,
    local_port: &'static str,
}

const EGRESS: Side = Side {
    chain: "egress",
    hook: "output",
    dev: "oifname",
    remote_addr: "daddr",
    remote_port: "dport",
    local_port: "sport",
};
const INGRESS: Side = Side {
    chain: "ingress",
    hook: "input",
    dev: "iifname",
    remote_addr: "saddr",
    remote_port: "sport",
    local_port: "dport",
};

fn set<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(T::to_string).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The matches of the packets a fault selects in one direction: one rule per address
/// family when peers have addresses, else one rule.
fn matches(plan: &Plan, side: &Side) -> Vec<String> {
    let peers = &plan.fault.peers;
    let mut common = String::new();
    if !plan.fault.interfaces.is_empty() {
        let names: Vec<String> = plan
            .fault
            .interfaces
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect();
        common.push_str(&format!("{} {} ", side.dev, set(&names)));
    }
    if !peers.ports.is_empty() || !peers.local_ports.is_empty() {
        common.push_str("meta l4proto { tcp, udp, sctp, dccp } ");
    }
    if !peers.ports.is_empty() {
        common.push_str(&format!("th {} {} ", side.remote_port, set(&peers.ports)));
    }
    if !peers.local_ports.is_empty() {
        common.push_str(&format!(
            "th {} {} ",
            side.local_port,
            set(&peers.local_ports)
        ));
    }
    let (v4, v6): (Vec<Cidr>, Vec<Cidr>) = peers.cidrs.iter().partition(|c| c.addr.is_ipv4());
    if v4.is_empty() && v6.is_empty() {
        return vec![common];
    }
    let mut rules = Vec::new();
    if !v4.is_empty() {
        rules.push(format!("ip {} {} {common}", side.remote_addr, set(&v4)));
    }
    if !v6.is_empty() {
        rules.push(format!("ip6 {} {} {common}", side.remote_addr, set(&v6)));
    }
    rules
}

/// The nft script that (re)creates the fault's table, atomically.
pub fn table_script(plan: &Plan) -> String {
    let t = &plan.names.table;
    let verdict = if plan.fault.partition {
        "drop".to_owned()
    } else {
        format!("jump {IMPAIR_CHAIN}")
    };
    // Declaring then deleting the table makes the script replace a leftover of the same
    // fault instead of adding to it.
    let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    for (on, side) in [
        (plan.fault.direction.egress(), &EGRESS),
        (plan.fault.direction.ingress(), &INGRESS),
    ] {
        if !on {
            continue;
        }
        s.push_str(&format!(
            "  chain {} {{\n    type filter hook {} priority 0; policy accept;\n    {} \"lo\" return\n    meta mark {OWN_MARK:#x} return\n",
            side.chain, side.hook, side.dev
        ));
        for m in matches(plan, side) {
            s.push_str(&format!("    {m}{verdict}\n"));
        }
        s.push_str("  }\n");
    }
    if !plan.fault.partition {
        s.push_str(&format!("  chain {IMPAIR_CHAIN} {{\n  }}\n"));
    }
    s.push_str("}\n");
    s
}

/// Creates the table; for the emulator, adds the queue rule. Returns how the queue rule was
/// written, when there is one.
pub fn apply(plan: &Plan) -> Result<Option<QueueExpr>> {
    cmd::run_with("nft", &["-f", "-"], Some(&table_script(plan)))?
        .map_err(cmd::Failure::into_error)?;
    if plan.fault.partition {
        return Ok(None);
    }
    nftnl::add_queue_rule(&plan.names.table, IMPAIR_CHAIN, plan.names.queue)
        .map(Some)
        .map_err(|e| {
            ire_core::Error::other(
                ire_core::ErrorClass::Fatal,
                format!("adding the NFQUEUE rule to table inet {}", plan.names.table),
                Some(Box::new(e)),
            )
        })
}

/// Deletes the fault's table; a table already gone is fine.
pub fn revert(plan: &Plan) -> Result<()> {
    cmd::remove("nft", &["delete", "table", "inet", &plan.names.table])
}

/// Removes the table's rules but keeps its chains: no packet is queued any more, and
/// packets already queued stay valid (deleting a base chain unregisters its hook, and the
/// kernel drops the packets queued from it).
pub fn quiesce(plan: &Plan) -> Result<()> {
    cmd::remove("nft", &["flush", "table", "inet", &plan.names.table])
}

/// True when the fault's table exists.
pub fn exists(plan: &Plan) -> Result<bool> {
    Ok(cmd::run_with("nft", &["list", "table", "inet", &plan.names.table], None)?.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::{Direction, NetworkBackend, NetworkFault, Peers, Probability};

    fn plan(fault: NetworkFault) -> Plan {
        Plan::new("f-1", fault, NetworkBackend::Userspace, vec!["eth0".into()]).unwrap()
    }

    #[test]
    fn a_partition_of_some_peers_drops_only_them_both_ways() {
        let p = plan(NetworkFault {
            partition: true,
            direction: Direction::Both,
            peers: Peers {
                cidrs: vec!["10.0.0.2".parse().unwrap(), "fd00::/64".parse().unwrap()],
                ports: vec!["5432".parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        });
        let s = table_script(&p);
        assert!(
            s.starts_with("table inet ire_f_1\ndelete table inet ire_f_1\n"),
            "{s}"
        );
        assert!(s.contains("hook output") && s.contains("hook input"), "{s}");
        assert!(
            s.contains("ip daddr { 10.0.0.2/32 } meta l4proto { tcp, udp, sctp, dccp } th dport { 5432 } drop"),
            "{s}"
        );
        assert!(s.contains("ip6 saddr { fd00::/64 }"), "{s}");
        assert!(s.contains("th sport { 5432 } drop"), "{s}");
        assert!(!s.contains(IMPAIR_CHAIN), "{s}");
    }

    #[test]
    fn the_emulator_gets_egress_packets_but_not_loopback_nor_its_own() {
        let s = table_script(&plan(NetworkFault {
            loss: Some(Probability {
                percent: 5.0,
                correlation: 0.0,
            }),
            ..Default::default()
        }));
        assert!(s.contains("oifname \"lo\" return"), "{s}");
        assert!(
            s.contains(&format!("meta mark {OWN_MARK:#x} return")),
            "{s}"
        );
        assert!(
            s.contains("jump impair") && s.contains("chain impair"),
            "{s}"
        );
        assert!(!s.contains("hook input"), "{s}");
    }
}
