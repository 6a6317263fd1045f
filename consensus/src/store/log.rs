//! The raft log in sled: entries keyed by big-endian index, plus the vote, the committed
//! log id and the last purged log id.
//!
//! Durability: an append is reported to openraft (`LogFlushed`) only once it is durable, and
//! `save_vote` returns only then (`DbSync`: sled's flush, then by default `fdatasync` of
//! the data file and of new blob files). Truncation needs no sync of its own: sled persists
//! writes in order, so a later sync (the next append) covers it.
//!
//! Purge: openraft purges the log below a snapshot right after asking the state machine to
//! install it, without waiting for the install. Removing those entries before the state
//! machine's database durably covers them would leave, after a crash in between, a node
//! whose log starts above its applied state: it could not restart. So a purge is recorded at
//! once (openraft never reads below it again) and carried out by `Purger` only up to what
//! the state machine reports durable (`Purger::covered`), on a blocking thread: raft's core
//! task, which asked for it, is not held up by deleting thousands of entries.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};

use super::codec::{decode, encode, index_key};
use super::durable::DbSync;
use crate::error::{StoreError, StoreResult};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// Entries removed per sled batch when purging.
const PURGE_BATCH: usize = 1024;

/// The raft log store. Clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    sync: Arc<DbSync>,
    log: sled::Tree,
    meta: sled::Tree,
    purger: Arc<Purger>,
}

/// Carries out purges of the log up to what the state machine durably covers (see the
/// module docs). Shared by the log store and the state machine store.
pub(crate) struct Purger {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    state: Mutex<PurgeState>,
}

#[derive(Default)]
struct PurgeState {
    /// The highest purge openraft asked for: nothing at or below it is read again.
    requested: Option<LogId>,
    /// The highest log index the state machine's database durably covers.
    covered: Option<u64>,
    /// What has been removed (and recorded as `last_purged`) so far.
    done: Option<LogId>,
    /// A purge is running on a blocking thread.
    running: bool,
}

impl PurgeState {
    /// The next purge point: the request, or below it the last entry the state machine
    /// durably covers.
    fn target(&self, log: &sled::Tree) -> StoreResult<Option<LogId>> {
        let (Some(requested), Some(covered)) = (self.requested, self.covered) else {
            return Ok(None);
        };
        let target = if requested.index <= covered {
            Some(requested)
        } else {
            match log
                .range(..=index_key(covered))
                .next_back()
                .transpose()
                .map_err(StoreError::sled("read log"))?
            {
                Some((_, v)) => Some(*decode::<Entry>("log entry", &v)?.get_log_id()),
                None => None,
            }
        };
        Ok(target.filter(|t| Some(t.index) > self.done.map(|d| d.index)))
    }
}

impl Purger {
    /// Records openraft's purge request and carries out what is covered.
    fn request(self: &Arc<Self>, upto: LogId) {
        {
            let mut st = self.lock();
            if st.requested.is_some_and(|r| r.index >= upto.index) {
                return;
            }
            st.requested = Some(upto);
        }
        self.kick();
    }

    /// The state machine's database durably covers the log up to `index` (flushed, and
    /// synced in [`Durability::Sync`](super::Durability::Sync)).
    pub(crate) fn covered(self: &Arc<Self>, index: Option<u64>) {
        let Some(index) = index else { return };
        {
            let mut st = self.lock();
            if st.covered.is_some_and(|c| c >= index) {
                return;
            }
            st.covered = Some(index);
        }
        self.kick();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PurgeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The purge point openraft asked for (what it will never read again).
    fn requested(&self) -> Option<LogId> {
        self.lock().requested
    }

    /// Starts the purge worker unless it runs already (it re-checks before it stops).
    fn kick(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.running {
                return;
            }
            st.running = true;
        }
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || this.work());
            }
            Err(_) => this.work(),
        }
    }

    fn work(&self) {
        loop {
            let target = {
                let mut st = self.lock();
                match st.target(&self.log) {
                    Ok(Some(t)) => t,
                    Ok(None) => {
                        st.running = false;
                        return;
                    }
                    Err(e) => {
                        st.running = false;
                        tracing::error!(component = "consensus", error = %e, "log purge failed");
                        return;
                    }
                }
            };
            if let Err(e) = self.purge_to(target) {
                self.lock().running = false;
                tracing::error!(component = "consensus", error = %e, "log purge failed");
                return;
            }
            self.lock().done = Some(target);
        }
    }

    /// Removes the entries up to `upto`, recording the purge point first (sled persists
    /// writes in order: entries at or below it are never read again, even if the removal is
    /// cut short).
    fn purge_to(&self, upto: LogId) -> StoreResult<()> {
        self.meta
            .insert(LAST_PURGED, encode("last purged log id", &upto)?)
            .map_err(StoreError::sled("purge log"))?;
        // In bounded batches: one huge sled batch holds every removed page in memory.
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.log.range(..=index_key(upto.index)).take(PURGE_BATCH) {
                let (k, _) = kv.map_err(StoreError::sled("purge log"))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.log
                .apply_batch(batch)
                .map_err(StoreError::sled("purge log"))?;
            if n == PURGE_BATCH {
                // sled keeps written pages in memory until they are flushed.
                self.db.flush().map_err(StoreError::sled("purge log"))?;
            }
        }
    }
}

fn io<E: std::error::Error + 'static>(
    f: fn(AnyError) -> StorageIOError<u64>,
) -> impl FnOnce(E) -> StorageError {
    move |e| f(AnyError::new(&e)).into()
}

impl LogStore {
    pub(crate) fn open(db: sled::Db, sync: DbSync) -> StoreResult<Self> {
        let log = db
            .open_tree("raft_log")
            .map_err(StoreError::sled("open tree"))?;
        let meta = db
            .open_tree("raft_meta")
            .map_err(StoreError::sled("open tree"))?;
        let done = match meta
            .get(LAST_PURGED)
            .map_err(StoreError::sled("read raft meta"))?
        {
            Some(v) => Some(decode::<LogId>("last purged log id", &v)?),
            None => None,
        };
        let purger = Arc::new(Purger {
            db: db.clone(),
            log: log.clone(),
            meta: meta.clone(),
            state: Mutex::new(PurgeState {
                requested: done,
                done,
                ..PurgeState::default()
            }),
        });
        Ok(LogStore {
            sync: Arc::new(sync),
            log,
            meta,
            purger,
            db,
        })
    }

    /// The purger the state machine reports its durable progress to.
    pub(crate) fn purger(&self) -> Arc<Purger> {
        self.purger.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match self
            .meta
            .get(key)
            .map_err(StoreError::sled("read raft meta"))?
        {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The purge point openraft knows: entries at or below it may still be on disk, waiting
    /// for the state machine to cover them, but are never read.
    fn last_purged(&self) -> StoreResult<Option<LogId>> {
        let stored: Option<LogId> = self.get_meta("last purged log id", LAST_PURGED)?;
        Ok(stored.max(self.purger.requested()))
    }

    fn entries(&self, from: Bound<u64>, to: Bound<u64>) -> StoreResult<Vec<Entry>> {
        // Nothing at or below the purge point is returned, removed yet or not.
        let floor = self.purger.requested().map_or(0, |p| p.index + 1);
        let start = match from {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = Bound::Included(start.max(floor));
        let map = |b: Bound<u64>| match b {
            Bound::Included(i) => Bound::Included(index_key(i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range::<[u8; 8], _>((map(from), map(to))) {
            let (_, v) = kv.map_err(StoreError::sled("read log"))?;
            out.push(decode::<Entry>("log entry", &v)?);
        }
        Ok(out)
    }

    /// Makes every write so far durable ([`DbSync::sync`]).
    ///
    /// Runs on the calling task: raft waits for it before doing anything else (openraft 0.9
    /// awaits every append and vote in its core task), so handing it to another thread would
    /// only add two thread hops to every commit. But a device flush takes milliseconds, so
    /// the worker hands its other tasks over meanwhile ([`super::durable::blocking`]): on 2
    /// workers, a blocked one left everything else (heartbeats, other requests) to one.
    fn make_durable(&self) -> std::io::Result<()> {
        super::durable::blocking(|| self.sync.sync())
    }

    /// Flushes the log's database to disk (for an orderly shutdown: truncations, purges and
    /// the committed id are otherwise made durable by the next append).
    pub async fn flush(&self) -> StoreResult<()> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(StoreError::sled("flush"))
    }

    /// How many entries the log holds (after purges).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// True when the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Bytes the log's sled database occupies on disk.
    pub fn disk_size(&self) -> StoreResult<u64> {
        self.db
            .size_on_disk()
            .map_err(StoreError::sled("size on disk"))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(io(StorageIOError::read_logs))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged().map_err(io(StorageIOError::read_logs))?;
        let last = match self.log.last().map_err(io(StorageIOError::read_logs))? {
            Some((_, v)) => Some(
                *decode::<Entry>("log entry", &v)
                    .map_err(io(StorageIOError::read_logs))?
                    .get_log_id(),
            ),
            None => None,
        };
        // Entries waiting to be removed below the purge point do not count.
        let last = last.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode("vote", vote).map_err(io(StorageIOError::write_vote))?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(io(StorageIOError::write_vote))?;
        // A vote must survive a crash before it is acted on.
        self.make_durable()
            .map_err(io(StorageIOError::write_vote))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta("vote", VOTE)
            .map_err(io(StorageIOError::read_vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode("committed log id", &committed).map_err(io(StorageIOError::write))?;
        self.meta
            .insert(COMMITTED, bytes)
            .map_err(io(StorageIOError::write))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>("committed log id", COMMITTED)
            .map_err(io(StorageIOError::read))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One insert per entry, not a sled batch: a batch takes sled's process-wide write
        // lock (waiting for any flush in progress) and writes out the I/O buffer twice. A
        // crash before the flush below keeps at most a prefix of these entries (sled
        // recovers writes in order), and none of them was acknowledged.
        for e in entries {
            let bytes = encode("log entry", &e).map_err(io(StorageIOError::write_logs))?;
            self.log
                .insert(index_key(e.log_id.index), bytes)
                .map_err(io(StorageIOError::write_logs))?;
        }
        // Acknowledged only once on disk: this is what lets a leader count this node in a
        // quorum.
        callback.log_io_completed(self.make_durable());
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One batch: a truncation is all or nothing.
        let mut batch = sled::Batch::default();
        for kv in self.log.range(index_key(log_id.index)..) {
            let (k, _) = kv.map_err(io(StorageIOError::write_logs))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(io(StorageIOError::write_logs))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Recorded now, carried out once the state machine durably covers it (module docs).
        self.purger.request(log_id);
        Ok(())
    }
}
