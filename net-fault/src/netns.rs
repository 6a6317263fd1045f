//! Entering a network namespace.

use std::path::Path;

use ire_core::{Error, ErrorClass, Result};
use nix::sched::{setns, CloneFlags};

/// Moves the calling thread into the network namespace at `path` (`/run/netns/<name>`,
/// `/proc/<pid>/ns/net`). Programs it starts afterwards run there too.
pub fn enter(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::not_found("network namespace", format!("{}: {e}", path.display())))?;
    setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| {
        Error::other(
            ErrorClass::Fatal,
            format!("entering the network namespace {}", path.display()),
            Some(Box::new(e)),
        )
    })
}
