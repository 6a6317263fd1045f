//! Stress faults: CPU, memory and IO load put on a resource, owned and named by a fault id.
//!
//! An adapter that can load a resource offers [`StressControl`]. Every process or helper it
//! starts for a fault carries the fault's id, so [`StressControl::stop_stress`] finds and
//! ends them from the id alone: on another node, after the injecting node died, with no
//! handle kept in memory. The load also ends by itself after [`StressFault::timeout`], a
//! backstop for the case where no revert ever comes.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The load to put on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StressLoad {
    /// `workers` workers, each keeping one CPU busy `load_percent` of the time: the
    /// resource's CPU use grows by `workers * load_percent` percent of one core.
    Cpu {
        /// Busy workers (1-1024).
        workers: u32,
        /// Share of the time each worker keeps its CPU busy (1-100).
        #[serde(rename = "load-percent")]
        load_percent: u8,
    },
    /// `bytes` of memory, allocated, written and held resident until the fault ends,
    /// split over `workers`.
    Memory {
        /// Bytes held in all (at least one page).
        bytes: u64,
        /// Workers sharing them (1-1024).
        workers: u32,
    },
    /// `workers` workers writing, syncing and removing files of `bytes` in all, in a
    /// directory of the fault's own under `path` (the adapter's default when `None`).
    Io {
        /// Writing workers (1-1024).
        workers: u32,
        /// Bytes written per round, in all.
        bytes: u64,
        /// The directory (in the resource's file system view) under which the files go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

/// Most workers one stress fault may start.
pub const MAX_STRESS_WORKERS: u32 = 1024;

impl StressLoad {
    /// `cpu`, `memory` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            StressLoad::Cpu { .. } => "cpu",
            StressLoad::Memory { .. } => "memory",
            StressLoad::Io { .. } => "io",
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> u32 {
        match self {
            StressLoad::Cpu { workers, .. }
            | StressLoad::Memory { workers, .. }
            | StressLoad::Io { workers, .. } => *workers,
        }
    }

    /// Checks the numbers; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let workers = self.workers();
        if workers == 0 || workers > MAX_STRESS_WORKERS {
            return Err(Error::invalid(
                "workers",
                format!("{workers} is not between 1 and {MAX_STRESS_WORKERS}"),
            ));
        }
        match self {
            StressLoad::Cpu { load_percent, .. } if !(1..=100).contains(load_percent) => {
                Err(Error::invalid(
                    "load-percent",
                    format!("{load_percent} is not between 1 and 100"),
                ))
            }
            StressLoad::Memory { bytes, .. } if *bytes < 4096 => Err(Error::invalid(
                "bytes",
                format!("{bytes} is less than one page (4096)"),
            )),
            StressLoad::Io { bytes, .. } if *bytes < 4096 => Err(Error::invalid(
                "bytes",
                format!("{bytes} is less than one block (4096)"),
            )),
            StressLoad::Io {
                path: Some(path), ..
            } if path.is_empty() || path.contains('\0') || path.contains('\n') => Err(
                Error::invalid("path", format!("{path:?} is not a usable directory path")),
            ),
            _ => Ok(()),
        }
    }
}

/// One stress fault: its id (which names what it starts), the load, and the backstop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StressFault {
    /// The fault's id, as in the ledger; every artifact carries it.
    pub fault_id: String,
    /// The load.
    pub load: StressLoad,
    /// The load ends by itself after this long, reverted or not.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl StressFault {
    /// Checks the fault id, the load and the timeout; the error names the field.
    pub fn validate(&self) -> Result<()> {
        validate_fault_id(&self.fault_id)?;
        self.load.validate()?;
        if self.timeout < Duration::from_secs(1) {
            return Err(Error::invalid(
                "timeout",
                format!("{:?} is shorter than one second", self.timeout),
            ));
        }
        Ok(())
    }
}

/// Checks that a fault id can name artifacts (labels, environment values, file names):
/// 1-128 ASCII letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn validate_fault_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "fault id",
            format!("{id:?} must be 1-128 letters, digits, '-', '_' or '.', not starting with '.' or '-'"),
        ))
    }
}

/// What a started stress fault put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StressStarted {
    /// The resource's runtime id when it started.
    pub resource_id: String,
    /// Where the load runs, in the adapter's words (a cgroup path, `beside pid 42`).
    pub placement: String,
    /// The artifacts (helper containers, process ids) it started.
    pub artifacts: Vec<String>,
}

/// Putting CPU, memory and IO load on resources, and taking it away by fault id.
#[async_trait]
pub trait StressControl: Send + Sync {
    /// Starts the load on the resource. Starting a fault id that already runs there starts
    /// nothing more.
    async fn start_stress(&self, id: &str, fault: &StressFault) -> Result<StressStarted>;

    /// Ends everything the fault id started on the resource, whatever started it; returns
    /// how many artifacts it ended. Nothing left to end is `Ok(0)`; the resource itself
    /// being gone is not an error when its artifacts can still be found.
    async fn stop_stress(&self, id: &str, fault_id: &str) -> Result<usize>;

    /// The artifacts of the fault id that are still alive (empty once all ended).
    async fn stress_artifacts(&self, id: &str, fault_id: &str) -> Result<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_parse_from_kebab_case_and_reject_unknown_fields() {
        let cpu: StressLoad =
            serde_json::from_str(r#"{"type": "cpu", "workers": 2, "load-percent": 50}"#).unwrap();
        assert_eq!(
            cpu,
            StressLoad::Cpu {
                workers: 2,
                load_percent: 50
            }
        );
        assert!(serde_json::from_str::<StressLoad>(
            r#"{"type": "cpu", "workers": 2, "load-percent": 50, "extra": 1}"#
        )
        .is_err());
        let f = StressFault {
            fault_id: "exec-1-1".into(),
            load: StressLoad::Io {
                workers: 1,
                bytes: 1 << 20,
                path: None,
            },
            timeout: Duration::from_secs(90),
        };
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["timeout"], "1m 30s");
        assert_eq!(serde_json::from_value::<StressFault>(json).unwrap(), f);
    }

    #[test]
    fn bad_loads_name_the_field() {
        let cases = [
            (
                StressLoad::Cpu {
                    workers: 0,
                    load_percent: 50,
                },
                "workers",
            ),
            (
                StressLoad::Cpu {
                    workers: 1,
                    load_percent: 101,
                },
                "load-percent",
            ),
            (
                StressLoad::Memory {
                    bytes: 10,
                    workers: 1,
                },
                "bytes",
            ),
            (
                StressLoad::Io {
                    workers: 1,
                    bytes: 1 << 20,
                    path: Some(String::new()),
                },
                "path",
            ),
        ];
        for (load, field) in cases {
            let e = load.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn fault_ids_that_cannot_name_artifacts_are_refused() {
        for ok in ["a", "exec-1-2", "0f3a.b_c"] {
            validate_fault_id(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a;rm", "a/b", &"x".repeat(129)] {
            assert!(validate_fault_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
