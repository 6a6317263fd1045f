//! GrimOps: the chaos plugins.
//!
//! | plugin    | kind      | needs          | revert                                  |
//! |-----------|-----------|----------------|-----------------------------------------|
//! | `kill`    | action    | `signals`      | none                                    |
//! | `stop`    | action    | -              | (workflow rollback) start again         |
//! | `pause`   | sustained | `pause`        | resume                                  |
//! | `unpause` | action    | `pause`        | none                                    |
//! | `restart` | action    | -              | none                                    |
//! | `delete`  | action    | -              | (workflow rollback) create from the spec, needs `create` |
//! | `scale`   | sustained | `scale`        | scale back to the original count        |

mod delete;
mod kill;
mod pause;
mod restart;
mod scale;
mod stop;

use std::sync::Arc;

use ire_core::Plugin;

pub use delete::{Delete, DeleteConfig};
pub use kill::{Kill, KillConfig};
pub use pause::{Pause, PauseConfig, Unpause};
pub use restart::{Restart, RestartConfig};
pub use scale::{Scale, ScaleConfig};
pub use stop::{Stop, StopConfig};

/// The GrimOps plugins, one instance each.
pub fn plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(Kill::new()),
        Arc::new(Stop::new()),
        Arc::new(Pause::new()),
        Arc::new(Unpause::new()),
        Arc::new(Restart::new()),
        Arc::new(Delete::new()),
        Arc::new(Scale::new()),
    ]
}
