//! What the engine knows about executions, by id: live ones and the latest finished ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ire_core::{Error, ExecutionStatus, ProgressUpdate, ResourceKey, Result};
use tokio_util::sync::CancellationToken;

use crate::security::SecretRedactor;

struct Entry {
    status: ExecutionStatus,
    cancel: CancellationToken,
    /// Boxed: most executions report none, and every live one has an entry.
    progress: Option<Box<ProgressUpdate>>,
    redactor: SecretRedactor,
    key: ResourceKey,
}

struct Inner {
    entries: HashMap<String, Entry>,
    finished: VecDeque<String>,
}

/// The execution table; finished executions are kept (up to `retain`) for status queries.
pub(crate) struct ExecutionTable {
    inner: Mutex<Inner>,
    retain: usize,
}

impl ExecutionTable {
    pub(crate) fn new(retain: usize) -> Self {
        ExecutionTable {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                finished: VecDeque::new(),
            }),
            retain: retain.max(1),
        }
    }

    pub(crate) fn insert(
        &self,
        id: &str,
        cancel: CancellationToken,
        redactor: SecretRedactor,
        key: ResourceKey,
    ) -> Result<()> {
        let mut i = self.inner.lock().expect("table lock");
        if i.entries.contains_key(id) {
            return Err(Error::invalid(
                "execution id",
                format!("{id:?} is already in use"),
            ));
        }
        i.entries.insert(
            id.to_owned(),
            Entry {
                status: ExecutionStatus::Pending,
                cancel,
                progress: None,
                redactor,
                key,
            },
        );
        Ok(())
    }

    pub(crate) fn set_status(&self, id: &str, status: ExecutionStatus) {
        // Forgotten executions are dropped after the lock is released: dropping an entry
        // frees its id, key and cancellation token, which admissions and other executions
        // should not wait for.
        let mut forgotten = None;
        {
            let mut i = self.inner.lock().expect("table lock");
            let Some(e) = i.entries.get_mut(id) else {
                return;
            };
            let was_terminal = e.status.is_terminal();
            e.status = status;
            // One more finished execution, so at most one to forget (`retain` is fixed).
            if status.is_terminal() && !was_terminal {
                i.finished.push_back(id.to_owned());
                if i.finished.len() > self.retain {
                    if let Some(old) = i.finished.pop_front() {
                        forgotten = i.entries.remove_entry(&old);
                    }
                }
            }
        }
        drop(forgotten);
    }

    pub(crate) fn set_progress(&self, update: ProgressUpdate) {
        let mut i = self.inner.lock().expect("table lock");
        if let Some(e) = i.entries.get_mut(&update.execution_id) {
            e.progress = Some(Box::new(update));
        }
    }

    /// What the progress forwarder needs to publish an update of a live execution.
    pub(crate) fn progress_context(&self, id: &str) -> Option<(SecretRedactor, ResourceKey)> {
        self.inner
            .lock()
            .expect("table lock")
            .entries
            .get(id)
            .map(|e| (e.redactor.clone(), e.key.clone()))
    }

    pub(crate) fn status(&self, id: &str) -> Result<ExecutionStatus> {
        self.inner
            .lock()
            .expect("table lock")
            .entries
            .get(id)
            .map(|e| e.status)
            .ok_or_else(|| Error::not_found("execution", id))
    }

    pub(crate) fn progress(&self, id: &str) -> Result<Option<ProgressUpdate>> {
        self.inner
            .lock()
            .expect("table lock")
            .entries
            .get(id)
            .map(|e| e.progress.as_deref().cloned())
            .ok_or_else(|| Error::not_found("execution", id))
    }

    /// Cancels every live execution (the engine stopped or crashed under them).
    pub(crate) fn cancel_live(&self) {
        let i = self.inner.lock().expect("table lock");
        for e in i.entries.values().filter(|e| !e.status.is_terminal()) {
            e.cancel.cancel();
        }
    }

    /// Cancels a live execution; a finished one is left as it is.
    pub(crate) fn cancel(&self, id: &str) -> Result<ExecutionStatus> {
        let i = self.inner.lock().expect("table lock");
        let e = i
            .entries
            .get(id)
            .ok_or_else(|| Error::not_found("execution", id))?;
        if !e.status.is_terminal() {
            e.cancel.cancel();
        }
        Ok(e.status)
    }

    /// Live executions.
    pub(crate) fn live(&self) -> usize {
        self.inner
            .lock()
            .expect("table lock")
            .entries
            .values()
            .filter(|e| !e.status.is_terminal())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(t: &ExecutionTable, id: &str) {
        let key = ResourceKey::new("fake", ["web"]).unwrap();
        t.insert(id, CancellationToken::new(), SecretRedactor::new(), key)
            .unwrap();
    }

    #[test]
    fn only_the_latest_finished_executions_are_retained() {
        let t = ExecutionTable::new(2);
        for id in ["a", "b", "c", "live"] {
            insert(&t, id);
        }
        t.set_status("live", ExecutionStatus::Running);
        for id in ["a", "b", "c"] {
            t.set_status(id, ExecutionStatus::Success);
        }
        assert!(
            t.status("a").is_err(),
            "the oldest finished one is forgotten"
        );
        assert_eq!(t.status("b").unwrap(), ExecutionStatus::Success);
        assert_eq!(t.status("c").unwrap(), ExecutionStatus::Success);
        assert_eq!(t.status("live").unwrap(), ExecutionStatus::Running);
        assert_eq!(t.live(), 1);
        // A second terminal status is not a second finish.
        t.set_status("c", ExecutionStatus::Failed);
        assert_eq!(t.status("b").unwrap(), ExecutionStatus::Success);
    }
}
