//! What a namespace offers: whether its kernel has `sch_netem`, and its interfaces.

use ire_core::Result;
use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::plan::Names;

/// A namespace's answer to the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Probe {
    /// The kernel can run netem qdiscs.
    pub netem: bool,
    /// Why not, when it cannot (tc's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netem_error: Option<String>,
    /// Every interface but loopback and ire's own devices.
    pub interfaces: Vec<String>,
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
}

/// The namespace's interfaces, but loopback and the devices of ire's faults.
pub fn interfaces() -> Result<Vec<String>> {
    let out = cmd::run("ip", &["-j", "link", "show"])?;
    let links: Vec<Link> = serde_json::from_str(&out)
        .map_err(|e| ire_core::Error::invalid("ip -j link show", format!("{e}: {out}")))?;
    Ok(links
        .into_iter()
        .map(|l| l.ifname)
        .filter(|n| n != "lo" && !is_ire_device(n))
        .collect())
}

/// ire's ifb and probe devices: `ire` and eight hex digits and one letter.
fn is_ire_device(name: &str) -> bool {
    name.len() == 12
        && name.starts_with("ire")
        && name[3..11].chars().all(|c| c.is_ascii_hexdigit())
}

/// Tries a netem qdisc on a veth pair made (and removed) for the purpose, named after the
/// fault: nothing the namespace had is touched.
pub fn netem(names: &Names) -> Result<std::result::Result<(), String>> {
    let (a, b) = names.probe_pair();
    cmd::remove("ip", &["link", "del", &a])?;
    if let Err(f) = cmd::run_with(
        "ip",
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
        None,
    )? {
        return Ok(Err(format!(
            "cannot make a veth pair to probe with: {}",
            f.stderr
        )));
    }
    let tried = cmd::run_with(
        "tc",
        &["qdisc", "add", "dev", &a, "root", "netem", "delay", "1ms"],
        None,
    )?;
    cmd::remove("ip", &["link", "del", &a])?;
    Ok(tried.map(|_| ()).map_err(|f| f.stderr))
}

/// Probes the current namespace.
pub fn probe(names: &Names) -> Result<Probe> {
    let netem = netem(names)?;
    Ok(Probe {
        netem: netem.is_ok(),
        netem_error: netem.err(),
        interfaces: interfaces()?,
    })
}

/// Removes a probe's leftover veth pair (a probe killed midway).
pub fn cleanup(names: &Names) -> Result<()> {
    cmd::remove("ip", &["link", "del", &names.probe_pair().0])
}

#[cfg(test)]
mod tests {
    #[test]
    fn ire_devices_are_recognised_by_name() {
        let n = crate::plan::Names::for_fault("x");
        assert!(super::is_ire_device(&n.ifb));
        assert!(super::is_ire_device(&n.probe_pair().0));
        assert!(!super::is_ire_device("eth0"));
        assert!(!super::is_ire_device("irene0000000"));
    }
}
