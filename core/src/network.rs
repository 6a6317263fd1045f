//! Network faults: what a fault does to a resource's traffic, and the capability adapters
//! offer to apply and revert it.
//!
//! A [`NetworkFault`] says what happens to which packets: delay (latency, jitter,
//! correlation), loss, corruption, duplication, reordering, a bandwidth limit, or a
//! partition; limited to [`Peers`] (CIDRs, ports, or resources chosen by a selector) and to
//! a [`Direction`]. An adapter that offers [`NetworkFaults`] first *prepares* the fault:
//! it chooses the [`NetworkBackend`] for the target (the kernel's netem, or ire's userspace
//! emulator where the kernel has no `sch_netem`) and names every artifact after the fault
//! id, without changing anything. The [`NetworkFaultHandle`] it returns is recorded in the
//! ledger before the fault is applied, and is all a revert needs, on any node.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::selector::ResourceFilter;

/// A network fault to apply to a resource's traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkFault {
    /// Added latency, with jitter and correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Packets dropped at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Probability>,
    /// Packets with one bit flipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Probability>,
    /// Packets sent twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Probability>,
    /// Packets sent at once while the others wait out the delay (needs `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Reorder>,
    /// A bandwidth limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Drop every packet (of the peers and direction): a network partition.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partition: bool,
    /// Which packets: those to and from these peers (every peer when empty).
    #[serde(default, skip_serializing_if = "Peers::is_empty")]
    pub peers: Peers,
    /// Which way: packets the target sends, receives, or both.
    #[serde(default)]
    pub direction: Direction,
    /// The target's interfaces to act on (every one but loopback when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Which backend to use; `auto` picks netem where the kernel has it.
    #[serde(default)]
    pub backend: BackendChoice,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Added latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Delay {
    /// The mean added latency.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Each packet's delay is uniform in latency ± jitter.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub jitter: Duration,
    /// How much each packet's jitter depends on the previous one's, in percent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub correlation: f64,
}

/// A share of packets, with how much each draw depends on the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Probability {
    /// Percent of packets (0-100).
    pub percent: f64,
    /// Correlation with the previous packet's draw, in percent (0-100).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub correlation: f64,
}

/// Reordering, netem's way: a share of packets skips the delay and overtakes the others.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Reorder {
    /// Percent of packets sent at once (0-100).
    pub percent: f64,
    /// Correlation with the previous packet's draw, in percent (0-100).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub correlation: f64,
    /// Only every `gap`-th packet may be sent at once (1: any packet).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub gap: u32,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
fn one() -> u32 {
    1
}
fn is_one(v: &u32) -> bool {
    *v == 1
}

/// A bandwidth limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Bandwidth {
    /// The rate: a number of bits per second, or `100kbit`, `10mbit`, `1gbit`.
    pub rate: BitRate,
    /// Bytes that may pass at once above the rate (default: a tenth of a second of the rate,
    /// at least 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl Bandwidth {
    /// The burst in bytes: the configured one, or the default.
    pub fn burst_bytes(&self) -> u64 {
        self.burst
            .unwrap_or_else(|| (self.rate.0 / 8 / 10).max(16 * 1024))
    }
}

/// Bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "BitRateWire", into = "String")]
pub struct BitRate(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum BitRateWire {
    Number(u64),
    Text(String),
}

impl TryFrom<BitRateWire> for BitRate {
    type Error = Error;
    fn try_from(w: BitRateWire) -> Result<Self> {
        match w {
            BitRateWire::Number(n) => Ok(BitRate(n)),
            BitRateWire::Text(s) => s.parse(),
        }
    }
}

impl FromStr for BitRate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "bit" | "bps" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            _ => {
                return Err(Error::invalid(
                    "rate",
                    format!("{s:?}: the unit must be bit, kbit, mbit or gbit"),
                ))
            }
        };
        let n: f64 = num
            .parse()
            .map_err(|_| Error::invalid("rate", format!("{s:?} is not a rate")))?;
        Ok(BitRate((n * scale as f64).round() as u64))
    }
}

impl From<BitRate> for String {
    fn from(r: BitRate) -> String {
        format!("{}bit", r.0)
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}bit", self.0)
    }
}

/// Which way packets go, seen from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Packets the target sends.
    #[default]
    Egress,
    /// Packets the target receives.
    Ingress,
    /// Both.
    Both,
}

impl Direction {
    /// True when packets the target sends are affected.
    pub fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }
    /// True when packets the target receives are affected.
    pub fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// The backend asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// netem where the target's kernel has `sch_netem`, else the userspace emulator.
    #[default]
    Auto,
    /// Only the kernel's netem; refused where the kernel has none.
    Netem,
    /// Only ire's userspace emulator.
    Userspace,
}

/// The backend a fault was applied with, recorded in its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkBackend {
    /// tc netem (delay, loss, corruption, duplication, reordering) and htb (bandwidth);
    /// nftables for partitions.
    Netem,
    /// ire's NFQUEUE emulator for delay, loss, corruption, duplication and reordering, fed by
    /// an nftables rule with bypass (it fails open); htb for bandwidth; nftables for
    /// partitions.
    Userspace,
}

impl fmt::Display for NetworkBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkBackend::Netem => "netem",
            NetworkBackend::Userspace => "userspace",
        })
    }
}

/// The peers a fault is limited to. A packet is affected when its remote address is one of
/// `cidrs` or of the `resources`' (if either is given), its remote port one of `ports` (if
/// given) and its local port one of `local-ports` (if given).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peers {
    /// Remote networks (`10.0.0.0/8`, `fd00::/64`, or one address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<Cidr>,
    /// Remote ports (`5432`, `8000-8100`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    /// The target's own ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_ports: Vec<PortRange>,
    /// Resources of the same adapter whose addresses are peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceFilter>,
}

impl Peers {
    /// True when the fault applies to every peer.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
            && self.ports.is_empty()
            && self.local_ports.is_empty()
            && self.resources.is_none()
    }
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    /// The network's address (host bits cleared).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// The network of one address.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: &str| Error::invalid("peers.cidrs", format!("{s:?}: {m}"));
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix must be 0-{max}")))?,
            None => max,
        };
        // Clear host bits, as tc and nft would.
        let addr = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((bits & mask).into())
            }
        };
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "PortWire", into = "String")]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for one port).
    pub last: u16,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortWire {
    Number(u64),
    Text(String),
}

impl TryFrom<PortWire> for PortRange {
    type Error = Error;
    fn try_from(w: PortWire) -> Result<Self> {
        match w {
            PortWire::Number(n) => n.to_string().parse(),
            PortWire::Text(s) => s.parse(),
        }
    }
}

impl FromStr for PortRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::invalid("ports", format!("{s:?}: ports are 1-65535")))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if first > last {
            return Err(Error::invalid(
                "ports",
                format!("{s:?}: the range is empty"),
            ));
        }
        Ok(PortRange { first, last })
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn check_percent(field: &str, v: f64) -> Result<()> {
    if v.is_nan() || !(0.0..=100.0).contains(&v) {
        return Err(Error::invalid(
            field,
            format!("{v} is not a percentage (0-100)"),
        ));
    }
    Ok(())
}

fn check_probability(field: &str, p: &Probability) -> Result<()> {
    check_percent(&format!("{field}.percent"), p.percent)?;
    check_percent(&format!("{field}.correlation"), p.correlation)
}

/// Checks an interface name: what the kernel accepts, and nothing a shell would read.
pub fn check_interface(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "interfaces",
            format!("{name:?} is not a network interface name"),
        ))
    }
}

/// Checks a fault id: it names artifacts (an nftables table, a helper), so it is made of
/// letters, digits, `-` and `_`.
pub fn check_fault_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "fault id",
            format!("{id:?} must be 1-128 letters, digits, '-' or '_'"),
        ))
    }
}

impl NetworkFault {
    /// True when the fault needs netem or the userspace emulator (not only htb or nftables).
    pub fn has_impairments(&self) -> bool {
        self.delay.is_some()
            || self.loss.is_some()
            || self.corrupt.is_some()
            || self.duplicate.is_some()
            || self.reorder.is_some()
    }

    /// Checks the fault without I/O; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !self.has_impairments() && self.bandwidth.is_none() && !self.partition {
            return Err(Error::invalid(
                "network fault",
                "sets none of delay, loss, corrupt, duplicate, reorder, bandwidth, partition",
            ));
        }
        if self.partition && (self.has_impairments() || self.bandwidth.is_some()) {
            return Err(Error::invalid(
                "partition",
                "drops every packet it matches, so it cannot be combined with delay, loss, \
                 corrupt, duplicate, reorder or bandwidth",
            ));
        }
        if let Some(d) = &self.delay {
            if d.latency.is_zero() && d.jitter.is_zero() {
                return Err(Error::invalid("delay.latency", "must be more than 0"));
            }
            if d.jitter > d.latency {
                return Err(Error::invalid(
                    "delay.jitter",
                    format!(
                        "{:?} is more than the latency {:?} (a packet cannot leave before it \
                         was sent)",
                        d.jitter, d.latency
                    ),
                ));
            }
            check_percent("delay.correlation", d.correlation)?;
        }
        for (field, p) in [
            ("loss", &self.loss),
            ("corrupt", &self.corrupt),
            ("duplicate", &self.duplicate),
        ] {
            if let Some(p) = p {
                check_probability(field, p)?;
            }
        }
        if let Some(r) = &self.reorder {
            check_percent("reorder.percent", r.percent)?;
            check_percent("reorder.correlation", r.correlation)?;
            if r.gap == 0 {
                return Err(Error::invalid("reorder.gap", "must be at least 1"));
            }
            if self.delay.is_none() {
                return Err(Error::invalid(
                    "reorder",
                    "needs a delay: reordered packets are the ones that skip it",
                ));
            }
        }
        if let Some(b) = &self.bandwidth {
            if b.rate.0 < 8_000 {
                return Err(Error::invalid(
                    "bandwidth.rate",
                    format!("{} is below 8kbit", b.rate),
                ));
            }
            if b.burst == Some(0) {
                return Err(Error::invalid("bandwidth.burst", "must be more than 0"));
            }
        }
        for i in &self.interfaces {
            check_interface(i)?;
        }
        if let Some(r) = &self.peers.resources {
            r.validate().map_err(|e| e.context("peers.resources"))?;
        }
        Ok(())
    }
}

/// What a revert needs, recorded in the ledger before the fault is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkFaultHandle {
    /// The fault's id: every artifact the fault leaves is named after it.
    pub fault_id: String,
    /// The resource's id when the fault was prepared.
    pub resource_id: String,
    /// The fault asked for.
    pub fault: NetworkFault,
    /// The backend chosen for this target.
    pub backend: NetworkBackend,
    /// Adapter-specific data: where the fault acts and what it touches.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Applying and reverting network faults.
#[async_trait]
pub trait NetworkFaults: Send + Sync {
    /// Validates the fault, chooses the backend for the target and resolves its peers,
    /// without changing anything. The handle is recorded before [`NetworkFaults::apply`].
    async fn prepare(
        &self,
        id: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle>;
    /// Applies a prepared fault. If it fails, whatever part was applied is taken back.
    async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()>;
    /// Reverts a fault from its handle alone. Idempotent: a fault already gone (or whose
    /// target is gone) is `Ok`.
    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(ms: u64) -> Option<Delay> {
        Some(Delay {
            latency: Duration::from_millis(ms),
            jitter: Duration::ZERO,
            correlation: 0.0,
        })
    }

    #[test]
    fn a_fault_reads_from_yaml_with_units_and_peers() {
        let f: NetworkFault = serde_yaml_ng::from_str(
            r#"
delay: {latency: 100ms, jitter: 10ms, correlation: 25}
loss: {percent: 30}
reorder: {percent: 25, gap: 5}
bandwidth: {rate: 10mbit}
peers:
  cidrs: [10.1.2.3/8, "fd00::1"]
  ports: [5432, "8000-8100"]
direction: both
"#,
        )
        .unwrap();
        f.validate().unwrap();
        assert_eq!(f.delay.as_ref().unwrap().jitter, Duration::from_millis(10));
        assert_eq!(f.bandwidth.unwrap().rate, BitRate(10_000_000));
        assert_eq!(f.peers.cidrs[0].to_string(), "10.0.0.0/8");
        assert_eq!(f.peers.cidrs[1].to_string(), "fd00::1/128");
        assert_eq!(
            f.peers.ports[1],
            PortRange {
                first: 8000,
                last: 8100
            }
        );
        assert!(f.direction.egress() && f.direction.ingress());
        let back: NetworkFault = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn bad_faults_name_the_field() {
        let cases: Vec<(NetworkFault, &str)> = vec![
            (NetworkFault::default(), "network fault"),
            (
                NetworkFault {
                    loss: Some(Probability {
                        percent: 150.0,
                        correlation: 0.0,
                    }),
                    ..Default::default()
                },
                "loss.percent",
            ),
            (
                NetworkFault {
                    reorder: Some(Reorder {
                        percent: 10.0,
                        correlation: 0.0,
                        gap: 1,
                    }),
                    ..Default::default()
                },
                "reorder",
            ),
            (
                NetworkFault {
                    partition: true,
                    delay: delay(10),
                    ..Default::default()
                },
                "partition",
            ),
            (
                NetworkFault {
                    delay: Some(Delay {
                        latency: Duration::from_millis(10),
                        jitter: Duration::from_millis(20),
                        correlation: 0.0,
                    }),
                    ..Default::default()
                },
                "delay.jitter",
            ),
            (
                NetworkFault {
                    partition: true,
                    interfaces: vec!["eth0; reboot".into()],
                    ..Default::default()
                },
                "interfaces",
            ),
        ];
        for (f, field) in cases {
            let e = f.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn rates_ports_and_cidrs_parse_or_say_why_not() {
        assert_eq!("1.5mbit".parse::<BitRate>().unwrap(), BitRate(1_500_000));
        assert_eq!("800".parse::<BitRate>().unwrap(), BitRate(800));
        assert!("10mbps".parse::<BitRate>().is_err());
        assert!("0".parse::<PortRange>().is_err());
        assert!("90-80".parse::<PortRange>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("host".parse::<Cidr>().is_err());
        assert!(check_fault_id("exec-1_2").is_ok());
        assert!(check_fault_id("a b").is_err());
    }
}
