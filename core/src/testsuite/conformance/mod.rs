//! Conformance suites: every implementation of a core trait runs the suite for its trait.
//!
//! A suite is an async function that panics with a message naming the failed check, like
//! openraft's storage `Suite`. Each check states the seed property it covers.

mod adapter;
mod ledger;
mod lock;
mod plugin;
mod storage;

pub use adapter::{adapter_conformance, AdapterFixture};
pub use ledger::ledger_conformance;
pub use lock::lock_conformance;
pub use plugin::plugin_conformance;
pub use storage::storage_conformance;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
