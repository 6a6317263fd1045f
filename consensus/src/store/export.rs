//! Snapshots taken while applies go on: copy-on-write before-images.
//!
//! A snapshot must be one consistent state, but scanning a large state takes seconds, and
//! holding applies out meanwhile stops every lease renewal (and, on 2 cores, the tokio
//! workers that wait for them). So an export starts at a point between two batches
//! (`BeforeImages::start`, under the state machine's gate, for a moment), and from then on
//! every apply records the value each key had *before* its first change
//! ([`TxTree::insert`] and [`TxTree::remove`] get the old value from sled anyway). The
//! exporter walks each tree in key order, merged with the recorded keys: a key with a
//! before-image is exported as that image (or skipped, if it did not exist at the start),
//! any other key as the tree holds it, which is unchanged since the start.
//!
//! Why a key is decided right: an apply records a key's image inside its transaction,
//! before the commit makes the new value visible, so whenever the exporter sees a changed
//! value, the image is already there (the exporter reads the value, then looks for an
//! image). A key first changed after the exporter passed it was decided with its value at
//! the start. Memory: one entry per key changed during the export (the image, or none for a
//! key created meanwhile).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sled::transaction::{TransactionalTree, UnabortableTransactionError};
use sled::IVec;

use crate::error::{StoreError, StoreResult};

/// One tree's before-images: key -> value at the export's start (`None`: absent then).
type Images = BTreeMap<Vec<u8>, Option<IVec>>;

/// The before-images of the export in progress, one map per data tree.
#[derive(Default)]
pub struct BeforeImages {
    active: AtomicBool,
    trees: Mutex<Vec<Images>>,
}

impl std::fmt::Debug for BeforeImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeforeImages")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BeforeImages {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Images>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts recording for an export of `trees` data trees. The caller holds applies out
    /// while it calls this (the export's starting point is between two batches).
    pub(crate) fn start(&self, trees: usize) {
        *self.lock() = vec![Images::new(); trees];
        self.active.store(true, Ordering::SeqCst);
    }

    /// Stops recording and frees the images.
    pub(crate) fn stop(&self) {
        self.active.store(false, Ordering::SeqCst);
        self.lock().clear();
    }

    /// Records `key`'s value before its first change since the export started.
    fn record(&self, tree: usize, key: &[u8], before: &Option<IVec>) {
        if !self.active.load(Ordering::SeqCst) {
            return;
        }
        if let Some(images) = self.lock().get_mut(tree) {
            images.entry(key.to_vec()).or_insert_with(|| before.clone());
        }
    }

    /// The image of `key`, if it changed since the export started.
    fn image(&self, tree: usize, key: &[u8]) -> Option<Option<IVec>> {
        self.lock().get(tree)?.get(key).cloned()
    }

    /// The first recorded key after `after` (from the start when `None`), with its image.
    fn next_after(&self, tree: usize, after: Option<&[u8]>) -> Option<(Vec<u8>, Option<IVec>)> {
        let trees = self.lock();
        let images = trees.get(tree)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        images
            .range::<[u8], _>((lower, Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Calls `emit(key, value)` for every key of `tree` (data tree number `index`) as it was
    /// when the export started, in key order.
    pub(crate) fn export_tree(
        &self,
        index: usize,
        tree: &sled::Tree,
        mut emit: impl FnMut(&[u8], &[u8]) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut rows = tree.iter();
        let mut row = rows
            .next()
            .transpose()
            .map_err(StoreError::sled("snapshot scan"))?;
        // The last key decided: later images of keys at or below it are ignored.
        let mut pos: Option<Vec<u8>> = None;
        loop {
            let image = self.next_after(index, pos.as_deref());
            match (row.take(), image) {
                (None, None) => return Ok(()),
                // The tree's next key comes first (or no recorded key follows).
                (Some((k, v)), image)
                    if image
                        .as_ref()
                        .is_none_or(|(ik, _)| k.as_ref() < ik.as_slice()) =>
                {
                    // Read the value, then look for an image: a change after the read has
                    // recorded one by now.
                    match self.image(index, &k) {
                        Some(Some(before)) => emit(&k, &before)?,
                        Some(None) => {}
                        None => emit(&k, &v)?,
                    }
                    pos = Some(k.to_vec());
                    row = rows
                        .next()
                        .transpose()
                        .map_err(StoreError::sled("snapshot scan"))?;
                }
                // The same key in both: the image wins.
                (Some((k, _)), Some((ik, before))) if k.as_ref() == ik.as_slice() => {
                    if let Some(before) = before {
                        emit(&k, &before)?;
                    }
                    pos = Some(ik);
                    row = rows
                        .next()
                        .transpose()
                        .map_err(StoreError::sled("snapshot scan"))?;
                }
                // A recorded key the tree no longer holds (removed since the start) comes
                // first.
                (pending, Some((ik, before))) => {
                    if let Some(before) = before {
                        emit(&ik, &before)?;
                    }
                    pos = Some(ik);
                    row = pending;
                }
                (Some(_), None) => unreachable!("handled by the first arm"),
            }
        }
    }
}

/// One tree of an apply transaction. Writes return the old value, as sled's do, and record
/// it as a before-image while an export runs (see the module docs).
#[derive(Clone, Copy)]
pub struct TxTree<'a> {
    tree: &'a TransactionalTree,
    images: &'a BeforeImages,
    /// The data tree's number in the snapshot; `None` for trees a snapshot does not carry.
    index: Option<usize>,
}

/// The result of a write inside a transaction.
pub type TxWrite = Result<Option<IVec>, UnabortableTransactionError>;

impl<'a> TxTree<'a> {
    /// Wraps `tree`, the snapshot's data tree number `index` (or none).
    pub fn new(
        tree: &'a TransactionalTree,
        images: &'a BeforeImages,
        index: Option<usize>,
    ) -> Self {
        Self {
            tree,
            images,
            index,
        }
    }

    /// Reads a key (the transaction's own writes included).
    pub fn get(&self, key: impl AsRef<[u8]>) -> TxWrite {
        self.tree.get(key)
    }

    /// Sets a key; returns its previous value.
    pub fn insert(&self, key: impl AsRef<[u8]> + Into<IVec>, value: impl Into<IVec>) -> TxWrite {
        let k = key.as_ref().to_vec();
        let old = self.tree.insert(key, value)?;
        self.note(&k, &old);
        Ok(old)
    }

    /// Removes a key; returns its previous value.
    pub fn remove(&self, key: impl AsRef<[u8]> + Into<IVec>) -> TxWrite {
        let k = key.as_ref().to_vec();
        let old = self.tree.remove(key)?;
        self.note(&k, &old);
        Ok(old)
    }

    fn note(&self, key: &[u8], old: &Option<IVec>) {
        if let Some(i) = self.index {
            self.images.record(i, key, old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sled::Transactional;

    fn collect(images: &BeforeImages, tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        images
            .export_tree(0, tree, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        out
    }

    fn write(tree: &sled::Tree, images: &BeforeImages, ops: &[(&str, Option<&str>)]) {
        tree.transaction(|t| {
            let tx = TxTree::new(t, images, Some(0));
            for (k, v) in ops {
                match v {
                    Some(v) => tx.insert(k.as_bytes(), v.as_bytes())?,
                    None => tx.remove(k.as_bytes())?,
                };
            }
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
        })
        .unwrap();
    }

    #[test]
    fn an_export_sees_the_state_at_its_start_whatever_changes_meanwhile() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let images = BeforeImages::default();
        write(
            &tree,
            &images,
            &[("a", Some("1")), ("c", Some("3")), ("e", Some("5"))],
        );
        images.start(1);
        // Changed, created, removed, changed twice: all after the start.
        write(
            &tree,
            &images,
            &[
                ("a", Some("10")),
                ("b", Some("2")),
                ("c", None),
                ("e", Some("50")),
            ],
        );
        write(&tree, &images, &[("e", Some("500")), ("f", Some("6"))]);
        let at_start = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec()),
            (b"e".to_vec(), b"5".to_vec()),
        ];
        assert_eq!(collect(&images, &tree), at_start);
        images.stop();
        // Without an export, writes record nothing and the tree is read as it is.
        write(&tree, &images, &[("g", Some("7"))]);
        assert_eq!(collect(&images, &tree).len(), 5);
    }

    #[test]
    fn trees_a_snapshot_does_not_carry_record_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        let images = BeforeImages::default();
        images.start(1);
        (&a, &b)
            .transaction(|(ta, tb)| {
                TxTree::new(ta, &images, None).insert(b"k", b"v")?;
                TxTree::new(tb, &images, Some(0)).insert(b"k", b"v")?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        assert_eq!(images.image(0, b"k"), Some(None));
        assert_eq!(images.lock().len(), 1);
    }
}
