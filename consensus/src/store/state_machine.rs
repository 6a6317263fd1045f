//! The state machine store: applies committed entries to the sled tables, builds and
//! installs snapshots, and gives read access to the applied state.
//!
//! Snapshots: a build exports the state as it was at one point between two batches while
//! applies go on (copy-on-write before-images, [`super::export`]), on a blocking thread, so
//! neither lease renewals nor the tokio workers wait for it. Builds and installs are
//! serialized (one snapshot file is current; neither may remove the other's file or record
//! an older snapshot over a newer one). The log below a snapshot is removed only once this
//! database durably covers it (`Purger::covered`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, OptionalSend, RaftSnapshotBuilder, StorageIOError};

use super::codec::{decode, encode};
use super::durable::DbSync;
use super::export::BeforeImages;
use super::handoffs::HandOffs;
use super::log::Purger;
use super::snapshot;
use crate::error::{StoreError, StoreResult};
use crate::state::apply::apply_batch_recording;
use crate::state::{meta_keys, StateView, Tables};
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// What the meta tree remembers about the current snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

struct Inner {
    db: sled::Db,
    sync: DbSync,
    tables: Tables,
    dir: PathBuf,
    /// Applies and installs take it for writing, reads for reading (and a snapshot export
    /// for a moment, to start): a reader never sees half of a batch.
    gate: RwLock<()>,
    /// Before-images of the keys applies change while a snapshot export runs.
    images: BeforeImages,
    /// Held by a snapshot build or install for its whole duration.
    snapshots: Mutex<()>,
    /// Told how far this database durably covers the log.
    purger: Arc<Purger>,
    /// Local callers waiting in a key's queue.
    handoffs: Arc<HandOffs>,
}

impl Inner {
    fn read_gate(&self) -> RwLockReadGuard<'_, ()> {
        wait_for(|| self.gate.try_read().ok(), || self.gate.read())
    }

    fn write_gate(&self) -> RwLockWriteGuard<'_, ()> {
        wait_for(|| self.gate.try_write().ok(), || self.gate.write())
    }

    /// Makes every write to this database so far durable ([`DbSync::sync`]).
    fn make_durable(&self) -> StoreResult<()> {
        self.sync.sync().map_err(|source| StoreError::SnapshotIo {
            path: self.dir.clone(),
            source,
        })
    }

    /// Syncs the database and tells the purger how far it now covers the log.
    fn report_durable(&self) -> StoreResult<()> {
        let applied = StateView::new(self.tables.clone()).last_applied()?;
        self.make_durable()?;
        self.purger.covered(applied.map(|l| l.index));
        Ok(())
    }
}

/// Takes a lock: at once if it is free, else waiting in a way that does not stall a tokio
/// worker (a snapshot install holds the gate for seconds; on a multi-threaded runtime the
/// worker hands its other tasks over while it waits).
fn wait_for<G>(
    try_now: impl FnOnce() -> Option<G>,
    wait: impl FnOnce() -> Result<G, std::sync::PoisonError<G>>,
) -> G {
    if let Some(g) = try_now() {
        return g;
    }
    super::durable::blocking(|| wait().unwrap_or_else(|p| p.into_inner()))
}

/// Batches with at most this many commands are applied on the state machine's own task: a
/// small sled transaction costs less than the hop to a blocking thread and back.
const INLINE_APPLY_COMMANDS: usize = 16;

fn command_count(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| match &e.payload {
            openraft::EntryPayload::Normal(r) => match &r.command {
                crate::types::Command::Batch(c) => c.len(),
                _ => 1,
            },
            _ => 1,
        })
        .sum()
}

/// The state machine store. Clones share the same state; give one to `Raft::new` and keep
/// one for reads.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn sm_err<E: std::error::Error + 'static>(
    f: fn(AnyError) -> StorageIOError<u64>,
) -> impl FnOnce(E) -> StorageError {
    move |e| f(AnyError::new(&e)).into()
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Corrupt(format!("a store task failed: {e}"))
}

impl StateMachineStore {
    pub(crate) fn open(
        db: sled::Db,
        dir: PathBuf,
        sync: DbSync,
        purger: Arc<Purger>,
    ) -> StoreResult<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::SnapshotIo {
            path: dir.clone(),
            source,
        })?;
        let tables = Tables::open(&db)?;
        let sm = StateMachineStore {
            inner: Arc::new(Inner {
                db,
                sync,
                tables,
                dir,
                gate: RwLock::new(()),
                images: BeforeImages::default(),
                snapshots: Mutex::new(()),
                purger,
                handoffs: Arc::new(HandOffs::default()),
            }),
        };
        if sm
            .inner
            .tables
            .meta
            .contains_key(meta_keys::INSTALLING)
            .map_err(StoreError::sled("read meta"))?
        {
            let current = sm.current()?.ok_or_else(|| {
                StoreError::Corrupt("an install is marked but no snapshot is".into())
            })?;
            tracing::warn!(component = "consensus", snapshot = %current.meta.snapshot_id, "completing an interrupted snapshot install");
            sm.install_from_file(&current)?;
        }
        sm.remove_stale_files()?;
        // What was read back may sit in the page cache only (a process crash keeps it, a
        // power loss may not): sync once before the log may be purged against it.
        sm.inner.report_durable()?;
        Ok(sm)
    }

    /// Runs `f` on the applied state; no batch is half-applied while it runs.
    pub fn read<T>(&self, f: impl FnOnce(&StateView) -> T) -> T {
        let _g = self.inner.read_gate();
        f(&StateView::new(self.inner.tables.clone()))
    }

    /// The local callers waiting for a lease to be handed to them.
    pub fn hand_offs(&self) -> &Arc<HandOffs> {
        &self.inner.handoffs
    }

    /// The directory holding snapshot files.
    pub fn snapshot_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes the state machine's sled database occupies on disk.
    pub fn disk_size(&self) -> StoreResult<u64> {
        self.inner
            .db
            .size_on_disk()
            .map_err(StoreError::sled("size on disk"))
    }

    /// Flushes the database to disk (for an orderly shutdown).
    pub async fn flush(&self) -> StoreResult<()> {
        self.inner
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(StoreError::sled("flush"))
    }

    fn current(&self) -> StoreResult<Option<CurrentSnapshot>> {
        match self
            .inner
            .tables
            .meta
            .get(meta_keys::SNAPSHOT)
            .map_err(StoreError::sled("read meta"))?
        {
            Some(v) => decode("current snapshot", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the state with the snapshot file of `current`, which the meta tree already
    /// names as current, under the install marker.
    fn install_from_file(&self, current: &CurrentSnapshot) -> StoreResult<()> {
        let t = &self.inner.tables;
        let _g = self.inner.write_gate();
        let path = self.inner.dir.join(&current.file);
        let (meta, clock) = snapshot::import(t, &path)?;
        if meta.last_log_id != current.meta.last_log_id {
            return Err(StoreError::BadSnapshot(format!(
                "{} covers {:?}, expected {:?}",
                path.display(),
                meta.last_log_id,
                current.meta.last_log_id
            )));
        }
        let mut batch = sled::Batch::default();
        match &meta.last_log_id {
            Some(l) => batch.insert(meta_keys::LAST_APPLIED, encode("last applied", l)?),
            None => batch.remove(meta_keys::LAST_APPLIED),
        }
        batch.insert(
            meta_keys::MEMBERSHIP,
            encode("membership", &meta.last_membership)?,
        );
        match clock {
            Some(c) => batch.insert(meta_keys::CLOCK, encode("clock", &c)?),
            None => batch.remove(meta_keys::CLOCK),
        }
        batch.remove(meta_keys::INSTALLING);
        t.meta
            .apply_batch(batch)
            .map_err(StoreError::sled("install snapshot"))?;
        self.inner.make_durable()
    }

    /// Removes snapshot files other than the current one, and partial files (at open, when
    /// no build or install runs).
    fn remove_stale_files(&self) -> StoreResult<()> {
        let keep = self.current()?.map(|c| c.file);
        let entries =
            std::fs::read_dir(&self.inner.dir).map_err(|source| StoreError::SnapshotIo {
                path: self.inner.dir.clone(),
                source,
            })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if Some(&name) != keep.as_ref() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn next_snapshot_id(&self, last: Option<LogId>) -> StoreResult<String> {
        let seq = self
            .inner
            .tables
            .meta
            .update_and_fetch(meta_keys::SNAPSHOT_SEQ, |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(StoreError::sled("snapshot seq"))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(match last {
            Some(l) => format!(
                "{}-{}-{}-{seq}",
                l.leader_id.term, l.leader_id.node_id, l.index
            ),
            None => format!("0-0-0-{seq}"),
        })
    }

    fn build(&self) -> StoreResult<(SnapshotMeta, PathBuf)> {
        let _one = self
            .inner
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let view = StateView::new(self.inner.tables.clone());
        // The snapshot's point: between two batches, for as long as it takes to read the
        // meta tree and start recording before-images.
        let (last_log_id, last_membership, clock) = {
            let _g = self.inner.write_gate();
            let start = (view.last_applied()?, view.membership()?, view.clock()?);
            self.inner.images.start(Tables::DATA_NAMES.len());
            start
        };
        if let Some(current) = self.current()? {
            if current.meta.last_log_id >= last_log_id {
                // Nothing applied since (an install may have just brought a newer state).
                self.inner.images.stop();
                return Ok((current.meta.clone(), self.inner.dir.join(&current.file)));
            }
        }
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id: self.next_snapshot_id(last_log_id)?,
        };
        let path = snapshot::file_of(&self.inner.dir, &meta.snapshot_id);
        let rows = snapshot::export(&self.inner.tables, &self.inner.images, &meta, clock, &path);
        self.inner.images.stop();
        let rows = rows?;
        self.set_current(&meta, &path, false)?;
        // The log below the snapshot may go once this database durably covers it.
        self.inner.report_durable()?;
        tracing::info!(component = "consensus", snapshot = %meta.snapshot_id, rows, "snapshot built");
        Ok((meta, path))
    }

    /// Records `path` as the current snapshot (durably) and removes the previous one's
    /// file. The caller holds `snapshots`.
    fn set_current(&self, meta: &SnapshotMeta, path: &Path, installing: bool) -> StoreResult<()> {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let previous = self.current()?;
        if let Some(p) = &previous {
            if p.meta.last_log_id > meta.last_log_id {
                return Err(StoreError::BadSnapshot(format!(
                    "snapshot {} covers {:?}, older than the current {} ({:?})",
                    meta.snapshot_id, meta.last_log_id, p.meta.snapshot_id, p.meta.last_log_id
                )));
            }
        }
        let current = CurrentSnapshot {
            meta: meta.clone(),
            file,
        };
        let mut batch = sled::Batch::default();
        batch.insert(meta_keys::SNAPSHOT, encode("current snapshot", &current)?);
        if installing {
            batch.insert(meta_keys::INSTALLING, &[]);
        }
        self.inner
            .tables
            .meta
            .apply_batch(batch)
            .map_err(StoreError::sled("save snapshot meta"))?;
        self.inner.make_durable()?;
        if let Some(p) = previous.filter(|p| p.file != current.file) {
            let _ = std::fs::remove_file(self.inner.dir.join(p.file));
        }
        Ok(())
    }

    fn install(&self, meta: &SnapshotMeta, mut file: std::fs::File) -> StoreResult<()> {
        use std::io::Seek;
        let _one = self
            .inner
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        file.rewind().map_err(|source| StoreError::SnapshotIo {
            path: self.inner.dir.clone(),
            source,
        })?;
        let path = snapshot::file_of(&self.inner.dir, &meta.snapshot_id);
        let (header, _) = snapshot::receive(&mut file, Path::new("received snapshot"), &path)?;
        if header.last_log_id != meta.last_log_id {
            return Err(StoreError::BadSnapshot(format!(
                "received snapshot covers {:?}, the leader announced {:?}",
                header.last_log_id, meta.last_log_id
            )));
        }
        // From here a crash redoes the install at open: the database durably covers the log
        // up to the snapshot, which openraft is purging meanwhile.
        self.set_current(meta, &path, true)?;
        self.inner.purger.covered(meta.last_log_id.map(|l| l.index));
        let current = self.current()?.expect("just saved");
        self.install_from_file(&current)?;
        tracing::info!(component = "consensus", snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read(|v| Ok((v.last_applied()?, v.membership()?)))
            .map_err(sm_err::<StoreError>(StorageIOError::read_state_machine))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let run = |inner: &Inner, entries: &[Entry]| {
            let _g = inner.write_gate();
            apply_batch_recording(&inner.tables, entries, &inner.images)
        };
        let applied = if command_count(&entries) <= INLINE_APPLY_COMMANDS {
            run(&self.inner, &entries)
        } else {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || run(&inner, &entries))
                .await
                .map_err(join_err)
                .and_then(|r| r)
        }
        .map_err(sm_err::<StoreError>(StorageIOError::write_state_machine))?;
        // Applied (in memory, and durable through the log): wake the waiters it served.
        self.inner.handoffs.publish(&applied.handoffs);
        Ok(applied.responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let name = format!("incoming-{}.part", uuid::Uuid::new_v4());
        let path = self.inner.dir.join(name);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(sm_err(|e| StorageIOError::write_snapshot(None, e)))?;
        // Unlinked at once: the chunks go to an anonymous file that nothing else can
        // remove, and that disappears with its last handle (installed or abandoned).
        tokio::fs::remove_file(&path)
            .await
            .map_err(sm_err(|e| StorageIOError::write_snapshot(None, e)))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let file = snapshot.into_std().await;
        let this = self.clone();
        let m = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&m, file))
            .await
            .map_err(join_err)
            .and_then(|r| r)
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into()
            })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(current) = self.current().map_err(sm_err::<StoreError>(|e| {
            StorageIOError::read_snapshot(None, e)
        }))?
        else {
            return Ok(None);
        };
        let path = self.inner.dir.join(&current.file);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(current.meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        Ok(Some(Snapshot {
            meta: current.meta,
            snapshot: Box::new(file),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(join_err)
            .and_then(|r| r)
            .map_err(sm_err::<StoreError>(|e| {
                StorageIOError::write_snapshot(None, e)
            }))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}
