//! Network namespaces for the processes that ask for one (`network: {namespace: true}`).
//!
//! Each such process runs in its own namespace `ire-<adapter>-<process>`, whose `eth0` is a
//! veth pair to a bridge. The bridge lives in a namespace of its own, the adapter's switch
//! (`ire-sw-<adapter>`), so bridged traffic between processes never meets the host's
//! firewall (Docker's FORWARD policy is DROP, and br_netfilter hands bridged packets to it);
//! one more veth pair joins the switch to the host, whose end carries the gateway address.
//! The processes reach the host and each other, nothing beyond (ire adds no NAT or
//! forwarding). Network faults act inside a process's namespace, and a partition between two
//! local services is a partition between their namespaces.
//!
//! Everything is adopted if it exists (a restarted node finds the namespaces of its
//! processes, and the faults in them, as they were) and removed when the adapter closes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use ire_core::{Cidr, Error, ErrorClass, Result};
use ire_net_fault::plan::device_name;
use serde::{Deserialize, Serialize};

/// The adapter-level network settings (`network:` in the adapter's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    /// The processes' subnet: the host's end of the switch takes its first address, and
    /// processes without an `address` get the next free ones from the tenth on. Default
    /// `198.18.0.0/24` (a range reserved for lab networks, never routed).
    #[serde(default = "default_subnet")]
    pub subnet: Cidr,
}

fn default_subnet() -> Cidr {
    "198.18.0.0/24".parse().expect("a valid subnet")
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            subnet: default_subnet(),
        }
    }
}

impl NetworkConfig {
    /// Checks the subnet: IPv4, with room for a gateway and processes.
    pub fn validate(&self, at: &str) -> Result<()> {
        if !self.subnet.addr.is_ipv4() || self.subnet.prefix > 28 || self.subnet.prefix < 8 {
            return Err(Error::invalid(
                format!("{at}.network.subnet"),
                format!("{} must be an IPv4 subnet from /8 to /28", self.subnet),
            ));
        }
        Ok(())
    }

    fn base(&self) -> u32 {
        match self.subnet.addr {
            std::net::IpAddr::V4(a) => u32::from(a),
            std::net::IpAddr::V6(_) => unreachable!("validated as IPv4"),
        }
    }

    /// The host's address on the switch.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// True when `a` is a usable process address of the subnet.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let size = 1u32 << (32 - self.subnet.prefix);
        let off = u32::from(a).wrapping_sub(self.base());
        off > 1 && off < size - 1
    }

    /// The first free process address, from the tenth on.
    pub fn allocate(&self, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let size = 1u32 << (32 - self.subnet.prefix);
        (10..size - 1)
            .map(|o| Ipv4Addr::from(self.base() + o))
            .find(|a| !used.contains(a))
    }
}

/// One process's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessNetns {
    /// The namespace's name (`/run/netns/<name>`).
    pub name: String,
    /// Its address on the switch.
    pub address: Ipv4Addr,
    /// The switch's end of its veth pair.
    veth: String,
}

impl ProcessNetns {
    /// The namespace's path, for `setns` and `nsenter`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

/// The adapter's switch and the namespaces of its processes.
#[derive(Debug, Clone)]
pub struct Switch {
    instance: String,
    config: NetworkConfig,
    /// The switch's namespace.
    ns: String,
    /// The host's end of the pair to the switch.
    host_veth: String,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        Error::other(
            ErrorClass::Fatal,
            "running `ip` (iproute2) for a process network namespace",
            Some(Box::new(e)),
        )
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::other(
            ErrorClass::Fatal,
            format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ))
    }
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/{name}")).exists()
}

impl Switch {
    /// The switch of adapter `instance`.
    pub fn new(instance: &str, config: NetworkConfig) -> Switch {
        Switch {
            ns: format!("ire-sw-{instance}"),
            host_veth: device_name("irh", instance, 'h'),
            instance: instance.to_owned(),
            config,
        }
    }

    /// The network settings.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Creates the switch, or adopts it.
    fn ensure(&self) -> Result<()> {
        let (ns, hv) = (self.ns.as_str(), self.host_veth.as_str());
        let fresh = ip(&["link", "show", hv]).is_err();
        if fresh {
            self.refuse_overlapping_routes()?;
        }
        if !netns_exists(ns) {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", ns, "link", "set", "br0", "up"])?;
        }
        if fresh {
            ip(&[
                "link", "add", hv, "type", "veth", "peer", "name", "uplink", "netns", ns,
            ])?;
            let gw = format!("{}/{}", self.config.gateway(), self.config.subnet.prefix);
            ip(&["addr", "add", &gw, "dev", hv])?;
            ip(&["link", "set", hv, "up"])?;
            ip(&["-n", ns, "link", "set", "uplink", "master", "br0"])?;
            ip(&["-n", ns, "link", "set", "uplink", "up"])?;
        }
        Ok(())
    }

    /// Refuses a subnet the host already routes elsewhere (another adapter's switch, a
    /// Docker network, a leftover): the gateway's route would shadow, or be shadowed by, the
    /// other one, and the host would lose its way to one side.
    fn refuse_overlapping_routes(&self) -> Result<()> {
        let subnet = self.config.subnet.to_string();
        let mut overlaps: Vec<String> = Vec::new();
        // `root`: routes inside the subnet; `match`: routes containing it.
        for how in ["root", "match"] {
            for line in ip(&["-4", "-o", "route", "show", how, &subnet])?.lines() {
                let line = line.trim();
                let ours = line.split_whitespace().any(|w| w == self.host_veth);
                let seen = overlaps.iter().any(|o| o == line);
                if !line.is_empty() && !line.starts_with("default") && !ours && !seen {
                    overlaps.push(line.to_owned());
                }
            }
        }
        if overlaps.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(
            format!("process adapter {:?} network.subnet", self.instance),
            format!(
                "{subnet} overlaps the host's route {}; choose a subnet no other network uses",
                overlaps.join("; ")
            ),
        ))
    }

    /// The namespace of process `process` at `address`, created or adopted.
    pub fn attach(&self, process: &str, address: Ipv4Addr) -> Result<ProcessNetns> {
        if !self.config.contains(address) {
            return Err(Error::invalid(
                format!("process {process:?} network.address"),
                format!(
                    "{address} is not a process address of {}",
                    self.config.subnet
                ),
            ));
        }
        self.ensure()?;
        let p = ProcessNetns {
            name: format!("ire-{}-{process}", self.instance),
            address,
            veth: device_name("irv", &format!("{}/{process}", self.instance), 'v'),
        };
        let cidr = format!("{address}/{}", self.config.subnet.prefix);
        if netns_exists(&p.name) {
            let has = ip(&["-n", &p.name, "-4", "-o", "addr", "show", "dev", "eth0"])
                .map(|o| o.contains(&format!("inet {cidr} ")))
                .unwrap_or(false);
            if has {
                return Ok(p);
            }
            self.detach(&p)?;
        }
        let built = (|| -> Result<()> {
            ip(&["netns", "add", &p.name])?;
            ip(&["-n", &p.name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &self.ns, "link", "add", &p.veth, "type", "veth", "peer", "name", "eth0",
                "netns", &p.name,
            ])?;
            ip(&["-n", &self.ns, "link", "set", &p.veth, "master", "br0"])?;
            ip(&["-n", &self.ns, "link", "set", &p.veth, "up"])?;
            ip(&["-n", &p.name, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &p.name, "link", "set", "eth0", "up"])?;
            let gw = self.config.gateway().to_string();
            ip(&["-n", &p.name, "route", "add", "default", "via", &gw])?;
            Ok(())
        })();
        if let Err(e) = built {
            let _ = self.detach(&p);
            return Err(e.context(format!("giving process {process:?} its network namespace")));
        }
        Ok(p)
    }

    /// Removes a process's namespace (its veth pair goes with it).
    pub fn detach(&self, p: &ProcessNetns) -> Result<()> {
        if netns_exists(&p.name) {
            ip(&["netns", "del", &p.name])?;
        }
        // The switch's end is gone with its peer; this is for a half-built pair.
        let _ = ip(&["-n", &self.ns, "link", "del", &p.veth]);
        Ok(())
    }

    /// Removes the switch and the host's end of its pair.
    pub fn remove(&self) -> Result<()> {
        let _ = ip(&["link", "del", &self.host_veth]);
        if netns_exists(&self.ns) {
            ip(&["netns", "del", &self.ns])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_subnet_after_the_gateway() {
        let c = NetworkConfig {
            subnet: "198.18.4.0/24".parse().unwrap(),
        };
        c.validate("a").unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(198, 18, 4, 1));
        let first = c.allocate(&[]).unwrap();
        assert_eq!(first, Ipv4Addr::new(198, 18, 4, 10));
        assert_eq!(c.allocate(&[first]).unwrap(), Ipv4Addr::new(198, 18, 4, 11));
        assert!(!c.contains(c.gateway()));
        assert!(!c.contains(Ipv4Addr::new(198, 18, 4, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 0, 1)));
        let bad = NetworkConfig {
            subnet: "fd00::/64".parse().unwrap(),
        };
        assert!(bad
            .validate("a")
            .unwrap_err()
            .to_string()
            .contains("network.subnet"));
    }
}
