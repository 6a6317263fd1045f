//! ire-actors: the node's supervisor tree (engine, resource-lock, monitor and reporter
//! actors), the event bus, the plugin registry, workflows, security and config layering.

pub mod metric_names;

// Node runtime I: engine, locks, workflows, registry, security, supervision.
pub mod engine;
pub mod lock;
pub mod registry;
pub mod security;
pub mod supervisor;
pub mod workflow;

// Node runtime II: event bus, monitor, reporter, config, observability.
pub mod bus;
pub mod config;
pub mod monitor;
pub mod observability;
pub mod reporter;
