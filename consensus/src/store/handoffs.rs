//! Tells local callers waiting in a key's queue that the lease was handed to them.
//!
//! Every replica applies the entry that hands a lease over; the node where the waiting caller
//! runs finds the caller here and wakes it with the grant. A caller registers before it
//! proposes its `AcquireOrWait`, so a hand-off applied right after cannot be missed. Nothing
//! here is replicated or durable: a caller that misses its wake-up (after a snapshot install,
//! say) learns the outcome from its `CancelWait`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ire_core::{LeaseGrant, ResourceKey};
use tokio::sync::oneshot;

type Slot = (String, String);

/// The callers of this node waiting for a hand-off, by key and holder.
#[derive(Debug, Default)]
pub struct HandOffs {
    waiting: Mutex<HashMap<Slot, (u64, oneshot::Sender<LeaseGrant>)>>,
    next_id: AtomicU64,
}

impl HandOffs {
    /// Registers `holder` as waiting for `key`; a later registration of the same pair
    /// replaces this one (whose wait then ends without a grant).
    pub fn register(self: &Arc<Self>, key: &ResourceKey, holder: &str) -> HandOffWait {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = (key.as_str().to_owned(), holder.to_owned());
        self.lock().insert(slot.clone(), (id, tx));
        HandOffWait {
            rx: Some(rx),
            owner: self.clone(),
            slot,
            id,
        }
    }

    /// Wakes the callers the applied `grants` went to.
    pub fn publish(&self, grants: &[LeaseGrant]) {
        if grants.is_empty() {
            return;
        }
        let mut waiting = self.lock();
        for g in grants {
            let slot = (g.key.as_str().to_owned(), g.holder.clone());
            if let Some((_, tx)) = waiting.remove(&slot) {
                let _ = tx.send(g.clone());
            }
        }
    }

    /// How many callers wait (for tests and status).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no caller waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, (u64, oneshot::Sender<LeaseGrant>)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One caller's registration; dropping it unregisters.
#[derive(Debug)]
pub struct HandOffWait {
    /// `None` once it has answered.
    rx: Option<oneshot::Receiver<LeaseGrant>>,
    owner: Arc<HandOffs>,
    slot: Slot,
    id: u64,
}

impl HandOffWait {
    /// Waits for the grant; `None` when this registration was replaced. Once it has
    /// answered, it never completes again (so it can stay in a `select!` loop).
    pub async fn granted(&mut self) -> Option<LeaseGrant> {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        let grant = rx.await.ok();
        self.rx = None;
        grant
    }
}

impl Drop for HandOffWait {
    fn drop(&mut self) {
        let mut waiting = self.owner.lock();
        if waiting
            .get(&self.slot)
            .is_some_and(|(id, _)| *id == self.id)
        {
            waiting.remove(&self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ire_core::FencingToken;

    fn grant(key: &ResourceKey, holder: &str) -> LeaseGrant {
        LeaseGrant {
            key: key.clone(),
            holder: holder.into(),
            token: FencingToken(9),
            expires_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_published_grant_wakes_only_its_caller() {
        let h = Arc::new(HandOffs::default());
        let k: ResourceKey = "docker/a/b/1".parse().unwrap();
        let mut a = h.register(&k, "a");
        let b = h.register(&k, "b");
        h.publish(&[grant(&k, "a")]);
        assert_eq!(a.granted().await.unwrap().holder, "a");
        assert_eq!(h.len(), 1);
        drop(b);
        assert!(h.is_empty());
    }

    #[tokio::test]
    async fn a_replaced_registration_ends_without_a_grant() {
        let h = Arc::new(HandOffs::default());
        let k: ResourceKey = "docker/a/b/1".parse().unwrap();
        let mut first = h.register(&k, "a");
        let mut second = h.register(&k, "a");
        assert!(first.granted().await.is_none());
        // Asked again, it waits forever rather than panicking.
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), first.granted());
        assert!(again.await.is_err());
        drop(first);
        // Dropping the replaced one leaves the new registration in place.
        assert_eq!(h.len(), 1);
        h.publish(&[grant(&k, "a")]);
        assert!(second.granted().await.is_some());
    }
}
