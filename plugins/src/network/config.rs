//! The network plugins' configs: each plugin's own effect, and what every one of them shares
//! (peers, direction, interfaces, backend), turned into an `ire_core::NetworkFault`.

use std::time::Duration;

use ire_core::{
    BackendChoice, Bandwidth, BitRate, Cidr, Delay, Direction, Error, NetworkFault, Peers,
    PortRange, Probability, Reorder, ResourceFilter, Result,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Which packets, seen from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionConfig {
    /// Packets the target sends.
    #[default]
    Egress,
    /// Packets the target receives.
    Ingress,
    /// Both.
    Both,
}

/// The backend asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackendConfig {
    /// netem where the target's kernel has it, else the userspace emulator.
    #[default]
    Auto,
    /// Only netem.
    Netem,
    /// Only the userspace emulator.
    Userspace,
}

/// A port (`5432`) or a range (`"8000-8100"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortConfig {
    /// One port.
    Number(u16),
    /// A port or a range, as text.
    Text(String),
}

/// The peers a fault is limited to (every peer when empty).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeersConfig {
    /// Remote networks or addresses (`10.0.0.0/8`, `fd00::1`).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Remote ports.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// The target's own ports.
    #[serde(default)]
    pub local_ports: Vec<PortConfig>,
    /// Resources of the same adapter whose addresses are peers (a selector: `labels`,
    /// `expressions`, `names`, ...).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub resources: Option<serde_json::Value>,
}

fn ports(field: &str, list: &[PortConfig]) -> Result<Vec<PortRange>> {
    list.iter()
        .map(|p| {
            match p {
                PortConfig::Number(n) => n.to_string(),
                PortConfig::Text(t) => t.clone(),
            }
            .parse::<PortRange>()
            .map_err(|e| Error::invalid(format!("peers.{field}"), e.to_string()))
        })
        .collect()
}

impl PeersConfig {
    fn to_peers(&self) -> Result<Peers> {
        Ok(Peers {
            cidrs: self
                .cidrs
                .iter()
                .map(|c| c.parse::<Cidr>())
                .collect::<Result<_>>()?,
            ports: ports("ports", &self.ports)?,
            local_ports: ports("local-ports", &self.local_ports)?,
            resources: self
                .resources
                .clone()
                .map(|v| {
                    serde_json::from_value::<ResourceFilter>(v)
                        .map_err(|e| Error::invalid("peers.resources", e.to_string()))
                })
                .transpose()?,
        })
    }
}

/// What every network plugin's config has besides its effect.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// Peers.
    pub peers: PeersConfig,
    /// Direction.
    pub direction: DirectionConfig,
    /// Interfaces (every one but loopback when empty).
    pub interfaces: Vec<String>,
    /// Backend.
    pub backend: BackendConfig,
}

impl Scope {
    /// The fault with this scope and `effect`, checked.
    pub fn fault(&self, effect: NetworkFault) -> Result<NetworkFault> {
        let f = NetworkFault {
            peers: self.peers.to_peers()?,
            direction: match self.direction {
                DirectionConfig::Egress => Direction::Egress,
                DirectionConfig::Ingress => Direction::Ingress,
                DirectionConfig::Both => Direction::Both,
            },
            interfaces: self.interfaces.clone(),
            backend: match self.backend {
                BackendConfig::Auto => BackendChoice::Auto,
                BackendConfig::Netem => BackendChoice::Netem,
                BackendConfig::Userspace => BackendChoice::Userspace,
            },
            ..effect
        };
        f.validate()?;
        Ok(f)
    }
}

/// A network plugin's config: its effect, as a fault.
pub trait FaultConfig: JsonSchema + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The fault this config asks for.
    fn fault(&self) -> Result<NetworkFault>;
}

/// Defines a plugin config: the listed effect fields plus the shared scope.
macro_rules! network_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* } => |$c:ident| $effect:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Limit the fault to these peers (every peer when absent).
            #[serde(default)]
            pub peers: PeersConfig,
            /// `egress` (packets the target sends, the default), `ingress` or `both`.
            #[serde(default)]
            pub direction: DirectionConfig,
            /// The target's interfaces (every one but loopback when empty).
            #[serde(default)]
            pub interfaces: Vec<String>,
            /// `auto` (netem where the kernel has it, else the userspace emulator), `netem`
            /// or `userspace`.
            #[serde(default)]
            pub backend: BackendConfig,
        }

        impl FaultConfig for $name {
            fn fault(&self) -> Result<NetworkFault> {
                let $c = self;
                let scope = Scope {
                    peers: $c.peers.clone(),
                    direction: $c.direction,
                    interfaces: $c.interfaces.clone(),
                    backend: $c.backend,
                };
                scope.fault($effect)
            }
        }
    };
}

fn default_reorder_latency() -> Duration {
    Duration::from_millis(10)
}

fn one() -> u32 {
    1
}

network_config!(
    /// `network-delay`: added latency, with jitter and correlation.
    DelayConfig {
        /// The added latency (`100ms`).
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        latency: Duration,
        /// Each packet's delay is uniform in latency ± jitter (`10ms`).
        #[serde(default, with = "humantime_serde")]
        #[schemars(with = "Option<String>")]
        jitter: Duration,
        /// How much each packet's jitter depends on the previous one's, in percent.
        #[serde(default)]
        #[schemars(range(min = 0, max = 100))]
        correlation: f64,
    } => |c| NetworkFault {
        delay: Some(Delay { latency: c.latency, jitter: c.jitter, correlation: c.correlation }),
        ..Default::default()
    }
);

/// Defines the config of a plugin whose effect is a share of packets.
macro_rules! probability_config {
    ($(#[$meta:meta])* $name:ident, $field:ident) => {
        network_config!(
            $(#[$meta])*
            $name {
                /// Percent of packets (0-100).
                #[schemars(range(min = 0, max = 100))]
                percent: f64,
                /// Correlation with the previous packet's draw, in percent (0-100).
                #[serde(default)]
                #[schemars(range(min = 0, max = 100))]
                correlation: f64,
            } => |c| NetworkFault {
                $field: Some(Probability { percent: c.percent, correlation: c.correlation }),
                ..Default::default()
            }
        );
    };
}

probability_config!(
    /// `network-loss`: packets dropped at random.
    LossConfig,
    loss
);
probability_config!(
    /// `network-corrupt`: packets with one bit flipped.
    CorruptConfig,
    corrupt
);
probability_config!(
    /// `network-duplicate`: packets sent twice.
    DuplicateConfig,
    duplicate
);

network_config!(
    /// `network-reorder`: a share of packets sent at once while the others wait `latency`.
    ReorderConfig {
        /// Percent of packets sent at once (0-100).
        #[schemars(range(min = 0, max = 100))]
        percent: f64,
        /// Correlation with the previous packet's draw, in percent.
        #[serde(default)]
        #[schemars(range(min = 0, max = 100))]
        correlation: f64,
        /// Only every `gap`-th packet may be sent at once (default 1: any).
        #[serde(default = "one")]
        #[schemars(range(min = 1))]
        gap: u32,
        /// How long the other packets wait (default `10ms`).
        #[serde(default = "default_reorder_latency", with = "humantime_serde")]
        #[schemars(with = "Option<String>")]
        latency: Duration,
    } => |c| NetworkFault {
        delay: Some(Delay { latency: c.latency, jitter: Duration::ZERO, correlation: 0.0 }),
        reorder: Some(Reorder { percent: c.percent, correlation: c.correlation, gap: c.gap }),
        ..Default::default()
    }
);

/// A rate: bits per second, or `100kbit`, `10mbit`, `1gbit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RateConfig {
    /// Bits per second.
    Number(u64),
    /// With a unit.
    Text(String),
}

impl RateConfig {
    fn rate(&self) -> Result<BitRate> {
        match self {
            RateConfig::Number(n) => Ok(BitRate(*n)),
            RateConfig::Text(t) => t.parse(),
        }
    }
}

network_config!(
    /// `network-bandwidth`: a bandwidth limit (tc htb).
    BandwidthConfig {
        /// The rate (`10mbit`).
        rate: RateConfig,
        /// Bytes that may pass at once above the rate (default: a tenth of a second's worth,
        /// at least 16 KiB).
        #[serde(default)]
        #[schemars(range(min = 1))]
        burst: Option<u64>,
    } => |c| NetworkFault {
        bandwidth: Some(Bandwidth { rate: c.rate.rate()?, burst: c.burst }),
        ..Default::default()
    }
);

network_config!(
    /// `network-partition`: every packet of the peers and direction dropped.
    PartitionConfig {} => |_c| NetworkFault { partition: true, ..Default::default() }
);
