//! ire-core: the resource model, selectors, extension traits and errors of ire.
//!
//! Everything else in ire is written against this crate: adapters implement
//! [`EnvironmentAdapter`], plugins implement [`Plugin`], the node's actors implement the
//! engine, monitor, reporter and event bus contracts, and the consensus crate implements
//! [`LockService`] and [`FaultLedger`]. This crate never names an environment: that is what
//! keeps it unchanged when one is added (seed property 5).
//!
//! The `testsuite` feature adds fakes of every trait, builders, and the conformance suites
//! that every implementation runs.

pub mod adapter;
pub mod config;
pub mod error;
pub mod event;
pub mod execution;
pub mod ledger;
pub mod lock;
pub mod monitor;
pub mod network;
pub mod page;
pub mod plugin;
pub mod registry;
pub mod report;
pub mod resource;
pub mod schema;
pub mod security;
pub mod selector;
pub mod stress;
pub mod transfer;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use adapter::{
    EnvironmentAdapter, PauseControl, ResourceEventStream, Scaling, Signal, SignalControl,
};
pub use config::{Config, ConfigChange, ConfigChangeStream, ConfigMap, ConfigProvider};
pub use error::{BoxError, Error, ErrorClass, Result, ResultExt};
pub use event::{Event, EventBus, EventFilter, EventSource, SharedEvent, Subscription};
pub use execution::{
    Attempt, BackoffStrategy, ErrorAction, ErrorHandler, ExecutionEngine, ExecutionHandle,
    ExecutionRequest, ExecutionStrategy, ExponentialBackoff, FixedErrorHandler, ResultSender,
    StepCondition, StepPredicate, Workflow, WorkflowResult, WorkflowStep,
};
pub use ledger::{FaultEntry, FaultLedger, FaultQuery, FaultState, OrphanQuery};
pub use lock::{FencingToken, LeaseGrant, LockInfo, LockOutcome, LockService, OperatorHold};
pub use monitor::{
    EventStream, HealthCheck, HealthCheckStrategy, HealthStatus, HealthStatusType, Monitor,
};
pub use network::{
    BackendChoice, Bandwidth, BitRate, Cidr, Delay, Direction, NetworkBackend, NetworkFault,
    NetworkFaultHandle, NetworkFaults, Peers, PortRange, Probability, Reorder,
};
pub use page::paginate;
pub use plugin::{
    ExecutionResult, ExecutionStatus, FaultKind, Notes, Plugin, PluginConfig, PluginContext,
    PluginDependency, PluginFilter, PluginMetadata, ProgressUpdate, Snapshot,
};
pub use registry::{PluginLoader, PluginRegistry, PluginValidator};
pub use report::{
    EventQuery, ExecutionQuery, ExecutionRecord, PluginStatistics, Query, Report, ReportFilter,
    ReportFormatter, Reporter, ResourceStatistics, SortField, Statistics, StatisticsFilter,
    StorageBackend,
};
pub use resource::{
    AdapterConfig, AdapterInfo, Condition, CpuMetrics, DeleteOptions, DiskMetrics, ExecOptions,
    ExecResult, HealthCheckConfig, Labels, MemoryMetrics, Metadata, Metrics, NetworkMetrics,
    OutputBuffer, Port, Resource, ResourceEvent, ResourceEventType, ResourceKey, ResourceSpec,
    ResourceStatus, Volume, VolumeSource, DEFAULT_EXEC_OUTPUT_LIMIT,
};
pub use schema::{check_config, ConfigSchema, TypedConfig};
pub use security::{
    Action, ActionResult, AuditEntry, AuditLogger, AuthorizationProvider, Secret, SecretProvider,
};
pub use selector::{LabelSelector, Operator, ResourceFilter, SelectorRequirement};
pub use stress::{StressControl, StressFault, StressLoad, StressStarted};
pub use transfer::{ByteStream, FileTransfer};
