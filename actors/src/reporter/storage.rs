//! Storage backends for the reporter: in memory, and on local disk in sled.
//!
//! The replicated backend (the fault ledger of the consensus crate) implements the same
//! [`StorageBackend`] trait in that crate; the node wires it in with
//! [`ire_core::Reporter::set_storage`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use async_trait::async_trait;
use ire_core::{Error, Query, Result, StorageBackend};
use serde_json::Value;

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        Err(Error::invalid(
            format!("storage {what}"),
            "must not be empty",
        ))
    } else {
        Ok(())
    }
}

/// Applies a query's filter, sort and pagination to values in key order.
///
/// Without a sort, only the requested page is kept in memory.
pub fn apply_query<I>(values: I, query: &Query) -> Vec<Value>
where
    I: IntoIterator<Item = Value>,
{
    let matching = values.into_iter().filter(|v| query.matches(v));
    if query.sort.is_empty() {
        let page = matching.skip(query.offset);
        match query.limit {
            Some(n) => page.take(n).collect(),
            None => page.collect(),
        }
    } else {
        let mut all: Vec<Value> = matching.collect();
        // Stable: equal values stay in key order.
        all.sort_by(|a, b| query.compare(a, b));
        let page = all.into_iter().skip(query.offset);
        match query.limit {
            Some(n) => page.take(n).collect(),
            None => page.collect(),
        }
    }
}

/// Keeps everything in memory, each value as compact JSON bytes (a few times smaller than
/// a parsed `serde_json::Value`); for tests, single-shot runs and the embedded demo.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    collections: RwLock<BTreeMap<String, Collection>>,
}

/// One collection: keys to encoded values.
type Collection = BTreeMap<String, Box<[u8]>>;

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn decode(collection: &str, key: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("stored {collection} entry {key:?}"), e.to_string()))
}

#[async_trait]
impl StorageBackend for MemoryStorage {
    async fn save(&self, collection: &str, key: &str, value: Value) -> Result<()> {
        check_name("collection", collection)?;
        check_name("key", key)?;
        let bytes = encode(collection, key, &value)?.into_boxed_slice();
        self.collections
            .write()
            .expect("storage lock poisoned")
            .entry(collection.to_owned())
            .or_default()
            .insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn save_batch(&self, collection: &str, items: Vec<(String, Value)>) -> Result<()> {
        check_name("collection", collection)?;
        // Encode everything first: a bad item leaves the store unchanged.
        let mut encoded = Vec::with_capacity(items.len());
        for (k, v) in &items {
            check_name("key", k)?;
            encoded.push((k.clone(), encode(collection, k, v)?.into_boxed_slice()));
        }
        let mut guard = self.collections.write().expect("storage lock poisoned");
        guard
            .entry(collection.to_owned())
            .or_default()
            .extend(encoded);
        Ok(())
    }

    async fn load(&self, collection: &str, key: &str) -> Result<Value> {
        let guard = self.collections.read().expect("storage lock poisoned");
        let bytes = guard
            .get(collection)
            .and_then(|c| c.get(key))
            .ok_or_else(|| Error::not_found(format!("{collection} entry"), key))?;
        decode(collection, key, bytes)
    }

    async fn query(&self, query: &Query) -> Result<Vec<Value>> {
        check_name("collection", &query.collection)?;
        let guard = self.collections.read().expect("storage lock poisoned");
        let Some(c) = guard.get(&query.collection) else {
            return Ok(Vec::new());
        };
        // Decoded one at a time, so that only matching values are kept.
        let mut bad = None;
        let values = c
            .iter()
            .map_while(|(k, bytes)| match decode(&query.collection, k, bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    bad = Some(e);
                    None
                }
            });
        let out = apply_query(values, query);
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    async fn delete(&self, collection: &str, key: &str) -> Result<()> {
        if let Some(c) = self
            .collections
            .write()
            .expect("storage lock poisoned")
            .get_mut(collection)
        {
            c.remove(key);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Default sled page cache: small, since the reporter reads mostly recent data.
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Keeps records on local disk in sled, one tree per collection, values as JSON.
///
/// Every save (and every batch) is flushed before it returns, so an acknowledged record
/// survives a process crash (a power loss can lose the last ~500 ms, until sled's background
/// fsync); batching is what keeps one flush per write affordable.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
}

fn sled_err(what: &str, e: sled::Error) -> Error {
    Error::unavailable(format!("sled storage: {what}"), e)
}

impl SledStorage {
    /// Opens (or creates) a store in `dir` with the default cache size.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_SLED_CACHE_BYTES)
    }

    /// Opens (or creates) a store in `dir` with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: impl AsRef<Path>, cache_bytes: u64) -> Result<Self> {
        let dir = dir.as_ref();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| sled_err(&format!("opening {}", dir.display()), e))?;
        Ok(SledStorage { db })
    }

    fn tree(&self, collection: &str) -> Result<sled::Tree> {
        check_name("collection", collection)?;
        self.db
            .open_tree(collection)
            .map_err(|e| sled_err(&format!("opening collection {collection}"), e))
    }

    async fn flush(&self) -> Result<()> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| sled_err("flushing", e))
    }
}

fn encode(collection: &str, key: &str, value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::invalid(format!("{collection} entry {key:?}"), e.to_string()))
}

#[async_trait]
impl StorageBackend for SledStorage {
    async fn save(&self, collection: &str, key: &str, value: Value) -> Result<()> {
        check_name("key", key)?;
        let tree = self.tree(collection)?;
        let bytes = encode(collection, key, &value)?;
        tree.insert(key.as_bytes(), bytes)
            .map_err(|e| sled_err("writing", e))?;
        self.flush().await
    }

    async fn save_batch(&self, collection: &str, items: Vec<(String, Value)>) -> Result<()> {
        let tree = self.tree(collection)?;
        let mut batch = sled::Batch::default();
        for (k, v) in &items {
            check_name("key", k)?;
            batch.insert(k.as_bytes(), encode(collection, k, v)?);
        }
        tokio::task::spawn_blocking(move || tree.apply_batch(batch))
            .await
            .map_err(|e| {
                Error::other(
                    ire_core::ErrorClass::Fatal,
                    "sled batch task",
                    Some(e.into()),
                )
            })?
            .map_err(|e| sled_err("writing a batch", e))?;
        self.flush().await
    }

    async fn load(&self, collection: &str, key: &str) -> Result<Value> {
        let tree = self.tree(collection)?;
        let bytes = tree
            .get(key.as_bytes())
            .map_err(|e| sled_err("reading", e))?
            .ok_or_else(|| Error::not_found(format!("{collection} entry"), key))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!("stored {collection} entry {key:?}"), e.to_string())
        })
    }

    async fn query(&self, query: &Query) -> Result<Vec<Value>> {
        let tree = self.tree(&query.collection)?;
        let query = query.clone();
        tokio::task::spawn_blocking(move || {
            let mut bad: Option<Error> = None;
            let values = tree.iter().map_while(|item| {
                let decoded = item.map_err(|e| sled_err("reading", e)).and_then(|(k, v)| {
                    serde_json::from_slice::<Value>(&v).map_err(|e| {
                        Error::invalid(
                            format!(
                                "stored {} entry {:?}",
                                query.collection,
                                String::from_utf8_lossy(&k)
                            ),
                            e.to_string(),
                        )
                    })
                });
                match decoded {
                    Ok(v) => Some(v),
                    Err(e) => {
                        bad = Some(e);
                        None
                    }
                }
            });
            let out = apply_query(values, &query);
            match bad {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
        .await
        .map_err(|e| {
            Error::other(
                ire_core::ErrorClass::Fatal,
                "sled query task",
                Some(e.into()),
            )
        })?
    }

    async fn delete(&self, collection: &str, key: &str) -> Result<()> {
        let tree = self.tree(collection)?;
        tree.remove(key.as_bytes())
            .map_err(|e| sled_err("deleting", e))?;
        self.flush().await
    }

    async fn close(&self) -> Result<()> {
        self.flush().await
    }
}
