//! ire's environment adapters: Docker/compose (bollard), Kubernetes (kube) and local
//! processes, each behind a cargo feature of the same name.

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(feature = "process")]
pub mod process;

#[cfg(any(feature = "docker", feature = "kubernetes", feature = "process"))]
mod net_fault;
#[cfg(any(feature = "process", feature = "kubernetes"))]
mod output;
pub mod telemetry;
