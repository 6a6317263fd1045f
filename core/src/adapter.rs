//! The environment adapter contract and the optional fault capabilities adapters offer.
//!
//! An adapter drives one environment. Plugins are written against this trait alone; a
//! fault whose mechanics differ per environment (delaying a network, pausing a workload) is
//! an optional capability: the adapter returns `Some(&dyn ...)` from the accessor when it
//! can do it, and a plugin asked to run where it cannot gets [`Error::Unsupported`].

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resource::{
    AdapterConfig, AdapterInfo, DeleteOptions, ExecOptions, ExecResult, Metrics, Resource,
    ResourceEvent, ResourceSpec,
};
use crate::selector::ResourceFilter;
use crate::stress::StressControl;
use crate::transfer::FileTransfer;

// The network-fault types live in their own module; these paths keep working.
pub use crate::network::{NetworkFault, NetworkFaultHandle, NetworkFaults};

/// Names of capabilities an adapter lists in [`AdapterInfo::capabilities`].
pub mod capability {
    /// Commands can be run inside resources.
    pub const EXEC: &str = "exec";
    /// Resources can be watched as an event stream.
    pub const WATCH: &str = "watch";
    /// Metrics can be read.
    pub const METRICS: &str = "metrics";
    /// Any signal can be sent to a resource's main process ([`super::SignalControl`]).
    pub const SIGNALS: &str = "signals";
    /// Resources can be frozen and thawed ([`super::PauseControl`]).
    pub const PAUSE: &str = "pause";
    /// Network faults can be applied ([`crate::network::NetworkFaults`]).
    pub const NETWORK: &str = "network";
    /// Replica counts can be changed ([`super::Scaling`]).
    pub const SCALE: &str = "scale";
    /// Resources can be created and updated from a spec.
    pub const CREATE: &str = "create";
    /// CPU, memory and IO load can be put on resources ([`crate::stress::StressControl`]).
    pub const STRESS: &str = "stress";
    /// Files can be archived out of and into resources ([`crate::transfer::FileTransfer`]).
    pub const FILE_TRANSFER: &str = "file-transfer";

    /// Every capability named here, for listings and checks.
    pub const ALL: &[&str] = &[
        EXEC,
        WATCH,
        METRICS,
        SIGNALS,
        PAUSE,
        NETWORK,
        SCALE,
        CREATE,
        STRESS,
        FILE_TRANSFER,
    ];
}

/// A stream of resource events; it ends when the watch ends.
pub type ResourceEventStream = BoxStream<'static, Result<ResourceEvent>>;

/// Drives one environment (the seed's EnvironmentAdapter).
///
/// `id` arguments are a resource's runtime id or its [`crate::ResourceKey`] string; adapters
/// accept both, so a key recorded before a resource was recreated still finds it.
#[async_trait]
pub trait EnvironmentAdapter: Send + Sync + 'static {
    /// Connects and checks the configuration; called once before any other method.
    async fn initialize(&mut self, config: AdapterConfig) -> Result<()>;
    /// Releases connections and ends watches.
    async fn close(&self) -> Result<()>;

    /// Lists resources that match the filter, one page of them.
    async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>>;
    /// One resource by id or key.
    async fn get_resource(&self, id: &str) -> Result<Resource>;

    /// Starts a stopped resource.
    async fn start_resource(&self, id: &str) -> Result<()>;
    /// Stops a resource, killing it after the grace period.
    async fn stop_resource(&self, id: &str, grace_period: Duration) -> Result<()>;
    /// Restarts a resource.
    async fn restart_resource(&self, id: &str) -> Result<()>;
    /// Deletes a resource.
    async fn delete_resource(&self, id: &str, options: &DeleteOptions) -> Result<()>;
    /// Creates a resource from a spec.
    async fn create_resource(&self, spec: &ResourceSpec) -> Result<Resource>;
    /// Creates a deleted resource again as it was: its name and labels (so the same key, and
    /// a second call finds it and is refused as a conflict) and its spec. What a revert of
    /// a deletion calls; adapters that cannot name what they create say `Unsupported`.
    async fn recreate_resource(&self, resource: &Resource) -> Result<Resource> {
        Err(Error::unsupported(
            format!("creating {} again under its name", resource.key),
            self.adapter_info().name,
        ))
    }
    /// Changes a resource's spec.
    async fn update_resource(&self, id: &str, spec: &ResourceSpec) -> Result<Resource>;

    /// Streams changes to resources that match the filter, from the environment's own
    /// event source (not by polling).
    async fn watch_resources(&self, filter: &ResourceFilter) -> Result<ResourceEventStream>;

    /// Runs a command inside a resource.
    async fn exec_in_resource(
        &self,
        id: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult>;

    /// Reads a resource's normalized metrics.
    async fn get_metrics(&self, id: &str) -> Result<Metrics>;

    /// What this adapter is and can do.
    fn adapter_info(&self) -> AdapterInfo;

    /// Signals, where the environment offers them.
    fn signals(&self) -> Option<&dyn SignalControl> {
        None
    }
    /// Pause and resume, where the environment offers them.
    fn pausing(&self) -> Option<&dyn PauseControl> {
        None
    }
    /// Network faults, where the environment offers them.
    fn network_faults(&self) -> Option<&dyn NetworkFaults> {
        None
    }
    /// Scaling, where the environment offers it.
    fn scaling(&self) -> Option<&dyn Scaling> {
        None
    }
    /// CPU, memory and IO stress, where the environment offers it.
    fn stress(&self) -> Option<&dyn StressControl> {
        None
    }
    /// File transfer (tar archives in and out), where the environment offers it.
    fn file_transfer(&self) -> Option<&dyn FileTransfer> {
        None
    }
}

impl dyn EnvironmentAdapter {
    /// The signal capability, or an `Unsupported` error naming this adapter.
    pub fn require_signals(&self) -> Result<&dyn SignalControl> {
        self.signals()
            .ok_or_else(|| Error::unsupported("signals", self.adapter_info().name))
    }
    /// The pause capability, or an `Unsupported` error naming this adapter.
    pub fn require_pausing(&self) -> Result<&dyn PauseControl> {
        self.pausing()
            .ok_or_else(|| Error::unsupported("pause and resume", self.adapter_info().name))
    }
    /// The network fault capability, or an `Unsupported` error naming this adapter.
    pub fn require_network_faults(&self) -> Result<&dyn NetworkFaults> {
        self.network_faults()
            .ok_or_else(|| Error::unsupported("network faults", self.adapter_info().name))
    }
    /// The scaling capability, or an `Unsupported` error naming this adapter.
    pub fn require_scaling(&self) -> Result<&dyn Scaling> {
        self.scaling()
            .ok_or_else(|| Error::unsupported("scaling", self.adapter_info().name))
    }
    /// The stress capability, or an `Unsupported` error naming this adapter.
    pub fn require_stress(&self) -> Result<&dyn StressControl> {
        self.stress()
            .ok_or_else(|| Error::unsupported("stress", self.adapter_info().name))
    }
    /// The file transfer capability, or an `Unsupported` error naming this adapter.
    pub fn require_file_transfer(&self) -> Result<&dyn FileTransfer> {
        self.file_transfer()
            .ok_or_else(|| Error::unsupported("file transfer", self.adapter_info().name))
    }
}

/// A POSIX signal by name (`SIGKILL`, `SIGTERM`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SignalRepr", into = "String")]
pub struct Signal(String);

/// A signal as written in a config: a name or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum SignalRepr {
    Name(String),
    Number(i64),
}

impl TryFrom<SignalRepr> for Signal {
    type Error = Error;
    fn try_from(r: SignalRepr) -> Result<Self> {
        match r {
            SignalRepr::Name(s) => s.parse(),
            SignalRepr::Number(n) => n.to_string().parse(),
        }
    }
}

impl Signal {
    /// The standard Linux signals and their numbers (x86-64, arm64).
    const KNOWN: &'static [(&'static str, i32)] = &[
        ("SIGHUP", 1),
        ("SIGINT", 2),
        ("SIGQUIT", 3),
        ("SIGILL", 4),
        ("SIGTRAP", 5),
        ("SIGABRT", 6),
        ("SIGBUS", 7),
        ("SIGFPE", 8),
        ("SIGKILL", 9),
        ("SIGUSR1", 10),
        ("SIGSEGV", 11),
        ("SIGUSR2", 12),
        ("SIGPIPE", 13),
        ("SIGALRM", 14),
        ("SIGTERM", 15),
        ("SIGSTKFLT", 16),
        ("SIGCHLD", 17),
        ("SIGCONT", 18),
        ("SIGSTOP", 19),
        ("SIGTSTP", 20),
        ("SIGTTIN", 21),
        ("SIGTTOU", 22),
        ("SIGURG", 23),
        ("SIGXCPU", 24),
        ("SIGXFSZ", 25),
        ("SIGVTALRM", 26),
        ("SIGPROF", 27),
        ("SIGWINCH", 28),
        ("SIGIO", 29),
        ("SIGPWR", 30),
        ("SIGSYS", 31),
    ];

    /// Every signal's canonical name.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::KNOWN.iter().map(|(n, _)| *n)
    }

    /// SIGKILL.
    pub fn kill() -> Self {
        Signal("SIGKILL".into())
    }
    /// SIGTERM.
    pub fn term() -> Self {
        Signal("SIGTERM".into())
    }

    /// The canonical name, `SIG` prefixed and upper case.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The Linux signal number.
    pub fn number(&self) -> i32 {
        Self::KNOWN
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, num)| *num)
            .expect("a Signal is only built from a known name")
    }
}

impl TryFrom<String> for Signal {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.as_str().parse()
    }
}

impl std::str::FromStr for Signal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let upper = s.trim().to_ascii_uppercase();
        if let Ok(num) = upper.parse::<i32>() {
            if let Some((n, _)) = Self::KNOWN.iter().find(|(_, k)| *k == num) {
                return Ok(Signal((*n).into()));
            }
        }
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if Self::KNOWN.iter().any(|(n, _)| *n == name) {
            Ok(Signal(name))
        } else {
            Err(Error::invalid("signal", format!("unknown signal {s:?}")))
        }
    }
}

impl schemars::JsonSchema for Signal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Signal".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Names with or without the SIG prefix, in any case, or numbers: checked by the
        // parse, which names the field; the schema documents the canonical names.
        schemars::json_schema!({
            "description": format!("a signal: {} (without SIG, any case, or its number)", Self::names().collect::<Vec<_>>().join(", ")),
            "type": ["string", "integer"]
        })
    }
}

impl From<Signal> for String {
    fn from(s: Signal) -> String {
        s.0
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sending signals to workloads.
#[async_trait]
pub trait SignalControl: Send + Sync {
    /// Sends a signal to the resource's main process.
    async fn send_signal(&self, id: &str, signal: &Signal) -> Result<()>;
}

/// Freezing workloads and thawing them (the cgroup freezer, SIGSTOP/SIGCONT).
#[async_trait]
pub trait PauseControl: Send + Sync {
    /// Freezes the resource.
    async fn pause(&self, id: &str) -> Result<()>;
    /// Unfreezes the resource.
    async fn resume(&self, id: &str) -> Result<()>;
}

/// Changing replica counts of scalable resources.
#[async_trait]
pub trait Scaling: Send + Sync {
    /// The current desired replica count.
    async fn replicas(&self, id: &str) -> Result<i32>;
    /// Sets the desired replica count.
    async fn scale(&self, id: &str, replicas: i32) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        assert_eq!("SIGKILL".parse::<Signal>().unwrap(), Signal::kill());
        assert_eq!("kill".parse::<Signal>().unwrap(), Signal::kill());
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::kill());
        assert_eq!("term".parse::<Signal>().unwrap().number(), 15);
        assert!("SIGNOPE".parse::<Signal>().is_err());
    }
}
