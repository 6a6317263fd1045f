//! The plan: a fault, resolved for one network namespace, with every artifact it creates
//! named after the fault id. It is made when the fault is prepared, recorded in the ledger,
//! and is all that applying or reverting needs.

use ire_core::network::{check_fault_id, check_interface};
use ire_core::{BackendChoice, Error, NetworkBackend, NetworkFault, Result};
use serde::{Deserialize, Serialize};

/// The major tc handle ire reserves for its root qdiscs (`4952:`, "IR").
pub const TC_ROOT: &str = "4952:";
/// The class that shaped or impaired traffic is classified into.
pub const TC_CLASS: &str = "4952:1";
/// The leaf qdisc under [`TC_CLASS`] (netem, or a fifo behind a bandwidth limit).
pub const TC_LEAF: &str = "4953:";
/// The firewall mark on packets the emulator sends itself (duplicates), so its rules let
/// them pass instead of queueing them again.
pub const OWN_MARK: u32 = 0x4952_4e46;

/// What the helper applies in one network namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Plan {
    /// The fault's id.
    pub fault_id: String,
    /// The fault, with `peers.resources` already resolved into `peers.cidrs`.
    pub fault: NetworkFault,
    /// The backend chosen.
    pub backend: NetworkBackend,
    /// The interfaces tc acts on (never loopback).
    pub interfaces: Vec<String>,
    /// The names of what the fault creates.
    pub names: Names,
}

/// Every artifact of a fault, named after its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Names {
    /// The nftables table (family `inet`).
    pub table: String,
    /// The NFQUEUE number the emulator reads.
    pub queue: u16,
    /// The ifb device ingress traffic is redirected to for tc.
    pub ifb: String,
}

impl Names {
    /// The names for a fault id.
    pub fn for_fault(fault_id: &str) -> Names {
        let h = fnv1a(fault_id.as_bytes());
        let table: String = fault_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Names {
            table: format!("ire_{table}"),
            // 10000-59999: clear of the small numbers people configure by hand.
            queue: 10_000 + (h % 50_000) as u16,
            ifb: device_name("ire", fault_id, 'i'),
        }
    }

    /// The names of the veth pair the netem probe creates and removes.
    pub fn probe_pair(&self) -> (String, String) {
        let stem = &self.ifb[..self.ifb.len() - 1];
        (format!("{stem}p"), format!("{stem}q"))
    }
}

/// A device name of at most 15 bytes, stable for `key`: `prefix`, eight hex digits of the
/// key's hash, and `suffix`.
pub fn device_name(prefix: &str, key: &str, suffix: char) -> String {
    format!("{prefix}{}{suffix}", short_hash(key))
}

/// Eight hex digits of `key`'s stable hash: how artifacts with short names are named after
/// a fault or a process.
pub fn short_hash(key: &str) -> String {
    format!("{:08x}", fnv1a(key.as_bytes()) as u32)
}

/// FNV-1a, 64 bits: a stable hash (the names it makes must not change between versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Plan {
    /// A plan for a fault in a namespace whose tc-managed interfaces are `interfaces`.
    pub fn new(
        fault_id: &str,
        fault: NetworkFault,
        backend: NetworkBackend,
        interfaces: Vec<String>,
    ) -> Result<Plan> {
        let plan = Plan {
            fault_id: fault_id.to_owned(),
            names: Names::for_fault(fault_id),
            fault,
            backend,
            interfaces,
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Checks the plan: a valid fault, a valid id, names that match the id.
    pub fn validate(&self) -> Result<()> {
        check_fault_id(&self.fault_id)?;
        self.fault.validate()?;
        if self.fault.peers.resources.is_some() {
            return Err(Error::invalid(
                "peers.resources",
                "must be resolved into peers.cidrs before the plan is made",
            ));
        }
        for i in &self.interfaces {
            check_interface(i)?;
            if i == "lo" {
                return Err(Error::invalid("interfaces", "loopback is never faulted"));
            }
        }
        if self.names != Names::for_fault(&self.fault_id) {
            return Err(Error::invalid(
                "names",
                "do not match the fault id (the plan was edited)",
            ));
        }
        if self.needs_tc() && self.interfaces.is_empty() {
            return Err(Error::invalid(
                "interfaces",
                "the target has no interface but loopback to act on",
            ));
        }
        Ok(())
    }

    /// True when the userspace emulator runs (delay, loss, corruption, duplication or
    /// reordering on the userspace backend).
    pub fn needs_emulator(&self) -> bool {
        self.backend == NetworkBackend::Userspace && self.fault.has_impairments()
    }

    /// True when netem does the impairments.
    pub fn needs_netem(&self) -> bool {
        self.backend == NetworkBackend::Netem && self.fault.has_impairments()
    }

    /// True when tc qdiscs are installed (netem, or a bandwidth limit).
    pub fn needs_tc(&self) -> bool {
        self.needs_netem() || self.fault.bandwidth.is_some()
    }

    /// True when an nftables table is installed (a partition, or the emulator's queue).
    pub fn needs_nft(&self) -> bool {
        self.fault.partition || self.needs_emulator()
    }

    /// True when the emulator needs packets' contents (to corrupt or duplicate them), not
    /// only their metadata.
    pub fn needs_payload(&self) -> bool {
        self.fault.corrupt.is_some() || self.fault.duplicate.is_some()
    }

    /// Reads a plan from JSON (errors name the field).
    pub fn from_json(s: &str) -> Result<Plan> {
        let plan: Plan =
            serde_json::from_str(s).map_err(|e| Error::invalid("plan", e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan serializes")
    }
}

/// The backend for a fault on a target whose kernel has netem or not (`netem` is the
/// probe's answer: `Err` holds tc's message).
pub fn choose_backend(
    choice: BackendChoice,
    netem: std::result::Result<(), &str>,
    target: &str,
) -> Result<NetworkBackend> {
    match (choice, netem) {
        (BackendChoice::Userspace, _) => Ok(NetworkBackend::Userspace),
        (BackendChoice::Netem | BackendChoice::Auto, Ok(())) => Ok(NetworkBackend::Netem),
        (BackendChoice::Auto, Err(_)) => Ok(NetworkBackend::Userspace),
        (BackendChoice::Netem, Err(why)) => Err(Error::unsupported(
            format!(
                "the netem backend (the kernel has no sch_netem: {}; use backend auto or \
                 userspace)",
                why.trim()
            ),
            target.to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::Probability;

    #[test]
    fn names_are_stable_and_fit_the_kernels_limits() {
        let n = Names::for_fault("exec-7f3a-1");
        assert_eq!(n.table, "ire_exec_7f3a_1");
        assert_eq!(n, Names::for_fault("exec-7f3a-1"));
        assert!(n.ifb.len() <= 15 && n.ifb.starts_with("ire"));
        assert!((10_000..60_000).contains(&n.queue));
        let (p, q) = n.probe_pair();
        assert!(p.len() <= 15 && q.len() <= 15 && p != q);
        assert_ne!(n.queue, Names::for_fault("exec-7f3a-2").queue);
    }

    #[test]
    fn auto_picks_netem_where_the_kernel_has_it_and_netem_alone_is_refused_elsewhere() {
        let no = Err("Error: Specified qdisc kind is unknown.");
        assert_eq!(
            choose_backend(BackendChoice::Auto, Ok(()), "c").unwrap(),
            NetworkBackend::Netem
        );
        assert_eq!(
            choose_backend(BackendChoice::Auto, no, "c").unwrap(),
            NetworkBackend::Userspace
        );
        assert_eq!(
            choose_backend(BackendChoice::Userspace, Ok(()), "c").unwrap(),
            NetworkBackend::Userspace
        );
        let e = choose_backend(BackendChoice::Netem, no, "container c").unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("sch_netem") && e.to_string().contains("container c"));
    }

    #[test]
    fn an_edited_plan_is_refused() {
        let fault = NetworkFault {
            loss: Some(Probability {
                percent: 10.0,
                correlation: 0.0,
            }),
            ..Default::default()
        };
        let mut p = Plan::new("f1", fault, NetworkBackend::Userspace, vec!["eth0".into()]).unwrap();
        assert!(p.needs_emulator() && p.needs_nft() && !p.needs_tc());
        p.names.table = "filter".into();
        assert!(Plan::from_json(&p.to_json())
            .unwrap_err()
            .to_string()
            .contains("names"));
    }
}
