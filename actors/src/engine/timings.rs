//! Time to detect and time to recover, in every execution record.
//!
//! A plugin that measures them itself (a healing plugin) notes them
//! (`ire_core::plugin::note`); otherwise the monitor's [`crate::monitor::FaultWatch`], told of
//! the injection by the lifecycle, measured them. A fault's resource often recovers after the
//! execution ended (a killed container restarted by its policy): the record is then written
//! with what is known, and written again (same key) once the monitor saw the recovery, or
//! after [`super::EngineConfig::recovery_wait`].

use std::sync::Arc;
use std::time::Duration;

use ire_core::plugin::note;
use ire_core::{ExecutionRecord, Reporter};

use super::Core;

fn noted(record: &ExecutionRecord, key: &str) -> Option<Duration> {
    record
        .metadata
        .get(key)
        .and_then(|v| v.as_u64())
        .map(Duration::from_millis)
}

/// Fills the record's times; true when the monitor still waits for the recovery (the
/// record should be written again with [`follow_up`]).
pub(super) async fn apply(core: &Core, record: &mut ExecutionRecord) -> bool {
    let detect = noted(record, note::TIME_TO_DETECT_MS);
    let recover = noted(record, note::TIME_TO_RECOVER_MS);
    let Some(fw) = &core.deps.fault_watch else {
        record.time_to_detect = detect;
        record.time_to_recover = recover;
        return false;
    };
    if detect.is_some() || recover.is_some() {
        // The plugin's own measure wins; the monitor's watch is over.
        let _ = fw.finish(&record.id).await;
        record.time_to_detect = detect;
        record.time_to_recover = recover;
        return false;
    }
    match fw.timings(&record.id).await {
        Ok(Some(t)) if t.recovered_at.is_some() || t.gave_up => {
            let _ = fw.finish(&record.id).await;
            t.apply_to(record);
            false
        }
        Ok(Some(t)) => {
            t.apply_to(record);
            true
        }
        // Not watched (nothing was injected), or the monitor is down.
        _ => false,
    }
}

/// Waits (in its own task, at most `recovery_wait`) for the monitor to see the resource
/// recover, then writes the record again with the times.
pub(super) fn follow_up(core: &Core, reporter: Arc<dyn Reporter>, mut record: ExecutionRecord) {
    let Some(fw) = core.deps.fault_watch.clone() else {
        return;
    };
    let wait = core.config.read().expect("config lock").recovery_wait;
    tokio::spawn(async move {
        let _ = fw.wait_recovered(&record.id, wait).await;
        let Ok(Some(t)) = fw.finish(&record.id).await else {
            return;
        };
        t.apply_to(&mut record);
        if let Err(e) = reporter.record_execution(record).await {
            tracing::error!(component = "engine", error = %e, "execution record not updated with its recovery time");
        }
    });
}
