//! NecroOps: the healing plugins.
//!
//! | plugin              | kind   | needs   | what it does                                         |
//! |---------------------|--------|---------|------------------------------------------------------|
//! | `restart-unhealthy` | action | monitor | restarts a resource unhealthy for at least a while, with backoff and a retry cap; notes time to detect and MTTR |
//! | `wait-healthy`      | action | monitor | succeeds once the resource is healthy, fails after a timeout |
//! | `scale-to`          | action | `scale` | sets a replica count (restores capacity)             |
//!
//! They run through the engine like any plugin, so they take the resource's lease: healing
//! never fights a fault a campaign holds on the same resource.

mod restart_unhealthy;
mod scale_to;
mod wait_healthy;

use std::sync::Arc;

use ire_core::Plugin;

pub use restart_unhealthy::{RestartUnhealthy, RestartUnhealthyConfig};
pub use scale_to::{ScaleTo, ScaleToConfig};
pub use wait_healthy::{WaitHealthy, WaitHealthyConfig};

/// The NecroOps plugins, one instance each.
pub fn plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(RestartUnhealthy::new()),
        Arc::new(WaitHealthy::new()),
        Arc::new(ScaleTo::new()),
    ]
}
