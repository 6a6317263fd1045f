//! tc: the netem backend's impairments and every bandwidth limit.
//!
//! On each interface (egress), or on an ifb device that the interfaces' ingress traffic is
//! redirected to (ingress), ire installs:
//!
//! ```text
//! root 4952: htb default 0          unclassified packets pass unshaped (htb's direct queue)
//!  └─ class 4952:1 htb rate R       R = the bandwidth limit, or 100gbit when there is none
//!      └─ 4953: netem ... | pfifo   netem's impairments (netem backend), else a plain fifo
//! u32 filters on 4952: -> 4952:1    the fault's peers and ports, or every packet
//! ```
//!
//! `4952:` is the handle ire reserves: a revert deletes a root qdisc only if it has it. An
//! interface whose root qdisc was configured by someone else (a handle other than `0:`) is
//! refused rather than overwritten, so a revert can always leave it as it was found.

use ire_core::{Cidr, Error, NetworkFault, PortRange, Result};
use serde::Deserialize;

use crate::cmd;
use crate::plan::{Plan, TC_CLASS, TC_LEAF, TC_ROOT};

/// netem's queue limit, in packets: room for a long delay at a high packet rate.
const NETEM_LIMIT: u32 = 100_000;
/// The fifo behind a bandwidth limit, and htb's direct queue, in packets.
const FIFO_LIMIT: u32 = 1_000;

/// A qdisc as `tc -j qdisc show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Qdisc {
    /// Its kind (`noqueue`, `htb`, `netem`, `ingress`).
    pub kind: String,
    /// Its handle (`0:` for the kernel's default qdiscs).
    pub handle: String,
    /// True for the root qdisc.
    #[serde(default)]
    pub root: bool,
}

/// The qdiscs of an interface; `None` when it does not exist.
pub fn qdiscs(dev: &str) -> Result<Option<Vec<Qdisc>>> {
    match cmd::run_with("tc", &["-j", "qdisc", "show", "dev", dev], None)? {
        Ok(out) => serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| Error::invalid("tc -j qdisc show", format!("{e}: {out}"))),
        Err(f) if f.is_absent() => Ok(None),
        Err(f) => Err(f.into_error()),
    }
}

fn root_of(qs: &[Qdisc]) -> Option<&Qdisc> {
    qs.iter().find(|q| q.root)
}

/// Which header fields are the peer's, for the filters of one direction.
struct Fields {
    addr: &'static str,
    remote_port: &'static str,
    local_port: &'static str,
}

const EGRESS: Fields = Fields {
    addr: "dst",
    remote_port: "dport",
    local_port: "sport",
};
const INGRESS: Fields = Fields {
    addr: "src",
    remote_port: "sport",
    local_port: "dport",
};

/// A port range as u32 value/mask blocks (u32 matches only aligned blocks).
pub fn port_blocks(r: PortRange) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut start = u32::from(r.first);
    let last = u32::from(r.last);
    while start <= last {
        let mut size = 1u32;
        while start % (size * 2) == 0 && start + size * 2 - 1 <= last && size < 0x10000 {
            size *= 2;
        }
        out.push((start as u16, (!(size - 1) & 0xffff) as u16));
        start += size;
    }
    out
}

/// The u32 match arguments of every filter a fault needs in one direction (each inner
/// vector is one filter; the first word is the protocol).
fn filters(fault: &NetworkFault, f: &Fields) -> Vec<Vec<String>> {
    let peers = &fault.peers;
    let ports = |ranges: &[PortRange]| -> Vec<Option<(u16, u16)>> {
        if ranges.is_empty() {
            vec![None]
        } else {
            ranges
                .iter()
                .flat_map(|r| port_blocks(*r))
                .map(Some)
                .collect()
        }
    };
    let remote = ports(&peers.ports);
    let local = ports(&peers.local_ports);
    if peers.cidrs.is_empty() && peers.ports.is_empty() && peers.local_ports.is_empty() {
        return vec![vec![
            "all".into(),
            "match".into(),
            "u32".into(),
            "0".into(),
            "0".into(),
        ]];
    }
    let (v4, v6): (Vec<Cidr>, Vec<Cidr>) = peers.cidrs.iter().partition(|c| c.addr.is_ipv4());
    let mut families: Vec<(&str, &str, Vec<Option<Cidr>>)> = Vec::new();
    if peers.cidrs.is_empty() {
        families.push(("ip", "ip", vec![None]));
        families.push(("ipv6", "ip6", vec![None]));
    } else {
        if !v4.is_empty() {
            families.push(("ip", "ip", v4.into_iter().map(Some).collect()));
        }
        if !v6.is_empty() {
            families.push(("ipv6", "ip6", v6.into_iter().map(Some).collect()));
        }
    }
    let mut out = Vec::new();
    for (proto, sel, cidrs) in families {
        for c in &cidrs {
            for r in &remote {
                for l in &local {
                    let mut m = vec![proto.to_owned()];
                    if let Some(c) = c {
                        m.extend(["match", sel, f.addr].map(String::from));
                        m.push(c.to_string());
                    }
                    for (field, block) in [(f.remote_port, r), (f.local_port, l)] {
                        if let Some((v, mask)) = block {
                            m.extend(["match", sel, field].map(String::from));
                            m.push(v.to_string());
                            m.push(format!("{mask:#06x}"));
                        }
                    }
                    out.push(m);
                }
            }
        }
    }
    out
}

/// netem's arguments for the fault's impairments.
pub fn netem_args(fault: &NetworkFault) -> Vec<String> {
    let mut a: Vec<String> = vec!["netem".into()];
    let pct = |v: f64| format!("{v}%");
    if let Some(d) = &fault.delay {
        a.push("delay".into());
        a.push(format!("{}us", d.latency.as_micros()));
        if !d.jitter.is_zero() || d.correlation > 0.0 {
            a.push(format!("{}us", d.jitter.as_micros()));
        }
        if d.correlation > 0.0 {
            a.push(pct(d.correlation));
        }
    }
    let mut prob = |name: &[&str], p: &Option<ire_core::Probability>| {
        if let Some(p) = p {
            a.extend(name.iter().map(|s| (*s).to_owned()));
            a.push(pct(p.percent));
            if p.correlation > 0.0 {
                a.push(pct(p.correlation));
            }
        }
    };
    prob(&["loss", "random"], &fault.loss);
    prob(&["corrupt"], &fault.corrupt);
    prob(&["duplicate"], &fault.duplicate);
    if let Some(r) = &fault.reorder {
        a.push("reorder".into());
        a.push(pct(r.percent));
        if r.correlation > 0.0 {
            a.push(pct(r.correlation));
        }
        a.push("gap".into());
        a.push(r.gap.to_string());
    }
    a.push("limit".into());
    a.push(NETEM_LIMIT.to_string());
    a
}

fn tc(args: &[String]) -> Result<()> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::run("tc", &refs).map(|_| ())
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Installs the htb tree, its leaf and its filters on `dev`.
fn install(plan: &Plan, dev: &str, fields: &Fields) -> Result<()> {
    tc(&words(&format!(
        "qdisc add dev {dev} root handle {TC_ROOT} htb default 0 direct_qlen {FIFO_LIMIT}"
    )))?;
    let (rate, burst) = match &plan.fault.bandwidth {
        Some(b) => (b.rate.to_string(), b.burst_bytes()),
        None => ("100gbit".to_owned(), 1_000_000),
    };
    tc(&words(&format!(
        "class add dev {dev} parent {TC_ROOT} classid {TC_CLASS} htb rate {rate} ceil {rate} burst {burst} cburst {burst}"
    )))?;
    let mut leaf = words(&format!(
        "qdisc add dev {dev} parent {TC_CLASS} handle {TC_LEAF}"
    ));
    if plan.needs_netem() {
        leaf.extend(netem_args(&plan.fault));
    } else {
        leaf.extend(words(&format!("pfifo limit {FIFO_LIMIT}")));
    }
    tc(&leaf)?;
    for (i, m) in filters(&plan.fault, fields).into_iter().enumerate() {
        let mut args = words(&format!("filter add dev {dev} parent {TC_ROOT} protocol"));
        args.push(m[0].clone());
        // Filters of one priority must share a protocol: one priority per filter.
        args.extend(words(&format!("prio {} u32", i + 1)));
        args.extend(m[1..].iter().cloned());
        args.extend(words(&format!("flowid {TC_CLASS}")));
        tc(&args)?;
    }
    Ok(())
}

/// Checks that tc can act on the plan's interfaces without replacing someone's qdiscs.
pub fn check(plan: &Plan) -> Result<()> {
    for dev in &plan.interfaces {
        let qs = qdiscs(dev)?.ok_or_else(|| Error::not_found("network interface", dev))?;
        if let Some(root) = root_of(&qs) {
            if root.handle == TC_ROOT {
                return Err(Error::Conflict {
                    message: format!(
                        "interface {dev} already has ire's qdisc {TC_ROOT} (another network \
                         fault is active on it)"
                    ),
                });
            }
            if root.handle != "0:" && plan.fault.direction.egress() {
                return Err(Error::Conflict {
                    message: format!(
                        "interface {dev} has a configured root qdisc ({} {}); ire does not \
                         replace it, so that a revert can leave it as it was",
                        root.kind, root.handle
                    ),
                });
            }
        }
        if plan.fault.direction.ingress() && qs.iter().any(|q| q.kind == "ingress") {
            return Err(Error::Conflict {
                message: format!(
                    "interface {dev} already has an ingress qdisc; ire does not replace it"
                ),
            });
        }
    }
    Ok(())
}

/// Applies the plan's tc part (the caller reverts on error).
pub fn apply(plan: &Plan) -> Result<()> {
    check(plan)?;
    if plan.fault.direction.egress() {
        for dev in &plan.interfaces {
            install(plan, dev, &EGRESS)?;
        }
    }
    if plan.fault.direction.ingress() {
        let ifb = &plan.names.ifb;
        cmd::run("ip", &["link", "add", ifb, "type", "ifb"])?;
        cmd::run("ip", &["link", "set", ifb, "up"])?;
        install(plan, ifb, &INGRESS)?;
        for dev in &plan.interfaces {
            tc(&words(&format!("qdisc add dev {dev} handle ffff: ingress")))?;
            tc(&words(&format!(
                "filter add dev {dev} parent ffff: protocol all prio 1 u32 match u32 0 0 \
                 action mirred egress redirect dev {ifb}"
            )))?;
        }
    }
    Ok(())
}

/// Removes the plan's tc part: ire's root qdiscs, the ingress redirects to the fault's ifb
/// device, and the device. What is already gone is fine.
pub fn revert(plan: &Plan) -> Result<()> {
    let ifb = &plan.names.ifb;
    for dev in &plan.interfaces {
        let Some(qs) = qdiscs(dev)? else { continue };
        if root_of(&qs).is_some_and(|r| r.handle == TC_ROOT) {
            cmd::remove("tc", &["qdisc", "del", "dev", dev, "root"])?;
        }
        if qs.iter().any(|q| q.kind == "ingress") {
            let filters = cmd::run_with(
                "tc",
                &["filter", "show", "dev", dev, "parent", "ffff:"],
                None,
            )?
            .unwrap_or_default();
            if filters.contains(&format!("to device {ifb})")) {
                cmd::remove("tc", &["qdisc", "del", "dev", dev, "ingress"])?;
            }
        }
    }
    cmd::remove("ip", &["link", "del", ifb])
}

/// True when anything of the plan's tc part is present.
pub fn present(plan: &Plan) -> Result<bool> {
    for dev in &plan.interfaces {
        if let Some(qs) = qdiscs(dev)? {
            if root_of(&qs).is_some_and(|r| r.handle == TC_ROOT) {
                return Ok(true);
            }
        }
    }
    Ok(qdiscs(&plan.names.ifb)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::{Delay, Peers, Probability, Reorder};
    use std::time::Duration;

    #[test]
    fn port_ranges_become_aligned_blocks() {
        let r = |a, b| PortRange { first: a, last: b };
        assert_eq!(port_blocks(r(80, 80)), vec![(80, 0xffff)]);
        assert_eq!(port_blocks(r(8000, 8003)), vec![(8000, 0xfffc)]);
        assert_eq!(
            port_blocks(r(7, 10)),
            vec![(7, 0xffff), (8, 0xfffe), (10, 0xffff)]
        );
        let all = port_blocks(r(1, 65535));
        let covered: u32 = all.iter().map(|(_, m)| (!*m as u32 & 0xffff) + 1).sum();
        assert_eq!(covered, 65535);
    }

    #[test]
    fn netem_gets_every_impairment_in_its_syntax() {
        let f = NetworkFault {
            delay: Some(Delay {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(10),
                correlation: 25.0,
            }),
            loss: Some(Probability {
                percent: 30.0,
                correlation: 0.0,
            }),
            corrupt: Some(Probability {
                percent: 1.0,
                correlation: 0.0,
            }),
            duplicate: Some(Probability {
                percent: 2.5,
                correlation: 10.0,
            }),
            reorder: Some(Reorder {
                percent: 25.0,
                correlation: 50.0,
                gap: 5,
            }),
            ..Default::default()
        };
        assert_eq!(
            netem_args(&f).join(" "),
            "netem delay 100000us 10000us 25% loss random 30% corrupt 1% duplicate 2.5% 10% \
             reorder 25% 50% gap 5 limit 100000"
        );
    }

    #[test]
    fn filters_cover_each_peer_and_port_per_family() {
        let mut f = NetworkFault::default();
        assert_eq!(filters(&f, &EGRESS), vec![words("all match u32 0 0")]);
        f.peers = Peers {
            cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()],
            ports: vec!["80".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            filters(&f, &INGRESS),
            vec![
                words("ip match ip src 10.0.0.0/8 match ip sport 80 0xffff"),
                words("ipv6 match ip6 src fd00::/64 match ip6 sport 80 0xffff"),
            ]
        );
        f.peers.cidrs.clear();
        f.peers.local_ports = vec!["8080".parse().unwrap()];
        assert_eq!(
            filters(&f, &EGRESS),
            vec![
                words("ip match ip dport 80 0xffff match ip sport 8080 0xffff"),
                words("ipv6 match ip6 dport 80 0xffff match ip6 sport 8080 0xffff"),
            ]
        );
    }
}
