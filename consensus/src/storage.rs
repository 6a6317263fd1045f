//! ire-core's [`StorageBackend`] on the replicated state machine: the reporter's records
//! kept by the whole cluster instead of one node's disk.
//!
//! Writes are raft commands ([`Command::StorePut`], [`Command::StoreDelete`]) forwarded to
//! the leader like every other write; `save_batch` proposes a batch as one entry (split
//! only when it exceeds [`MAX_PUT_BYTES`]), so a batch costs one consensus round, not one
//! per record. Reads (`load`, `query`) are linearizable: they see every acknowledged write,
//! on the leader and on followers alike. Values live in the state machine's `sm_kv` tree
//! and travel in snapshots with the rest of the state.

use async_trait::async_trait;
use ire_core::{paginate, Error, Query, Result, StorageBackend};

use crate::client::ConsensusClient;
use crate::state::kv;
use crate::types::Command;

/// The most JSON text one [`Command::StorePut`] carries: larger batches are split, so one
/// raft entry (and an append of many entries) stays far below the transport's frame limit.
pub const MAX_PUT_BYTES: usize = 1 << 20;

fn check_collection(collection: &str) -> Result<()> {
    kv::check_collection(collection).map_err(Error::from)
}

/// Splits serialized items into runs of at most [`MAX_PUT_BYTES`] (a larger single value
/// travels alone).
fn chunks(items: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    let mut bytes = 0;
    for (k, v) in items {
        let size = k.len() + v.len();
        if !cur.is_empty() && bytes + size > MAX_PUT_BYTES {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push((k, v));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[async_trait]
impl StorageBackend for ConsensusClient {
    async fn save(&self, collection: &str, key: &str, value: serde_json::Value) -> Result<()> {
        self.save_batch(collection, vec![(key.to_owned(), value)])
            .await
    }

    async fn save_batch(
        &self,
        collection: &str,
        items: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        check_collection(collection)?;
        let mut text = Vec::with_capacity(items.len());
        for (k, v) in items {
            let json = serde_json::to_string(&v)
                .map_err(|e| Error::invalid("storage.value", format!("{collection}/{k}: {e}")))?;
            text.push((k, json));
        }
        for items in chunks(text) {
            self.write_done(Command::StorePut {
                collection: collection.to_owned(),
                items,
            })
            .await?;
        }
        Ok(())
    }

    async fn load(&self, collection: &str, key: &str) -> Result<serde_json::Value> {
        check_collection(collection)?;
        self.read(|v, _| v.stored_value(collection, key))
            .await?
            .ok_or_else(|| Error::not_found(format!("{collection} entry"), key))
    }

    async fn query(&self, query: &Query) -> Result<Vec<serde_json::Value>> {
        check_collection(&query.collection)?;
        let mut values = self
            .read(|v, _| v.stored_values(&query.collection, |x| query.matches(x)))
            .await?;
        // Stable: values with equal sort keys stay in key order.
        values.sort_by(|a, b| query.compare(a, b));
        Ok(paginate(values, query.offset, query.limit))
    }

    async fn delete(&self, collection: &str, key: &str) -> Result<()> {
        check_collection(collection)?;
        self.write_done(Command::StoreDelete {
            collection: collection.to_owned(),
            key: key.to_owned(),
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        // Every acknowledged write is committed on a majority: nothing to flush. The raft
        // node belongs to the process, not to this handle, and outlives it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_batches_split_below_the_entry_budget_and_keep_every_item_in_order() {
        let big = "x".repeat(MAX_PUT_BYTES / 3);
        let items: Vec<(String, String)> = (0..7).map(|i| (format!("k{i}"), big.clone())).collect();
        let out = chunks(items.clone());
        assert!(out.len() >= 3, "{} chunks", out.len());
        for c in &out {
            let size: usize = c.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= MAX_PUT_BYTES);
        }
        assert_eq!(out.concat(), items);
        // One oversized value still travels, alone.
        let huge = vec![("h".to_owned(), "y".repeat(MAX_PUT_BYTES + 1))];
        assert_eq!(chunks(huge.clone()), vec![huge]);
    }
}
