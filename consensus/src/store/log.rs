//! The raft log in sled: entries keyed by big-endian index, plus the vote, the committed
//! log id and the last purged log id.
//!
//! Durability: an append is reported to openraft (`LogFlushed`) only after sled's flush;
//! `save_vote` returns only after sled's flush. Truncation and purge need no flush of their
//! own: sled persists writes in order, so a later flush (the next append) covers them, and
//! a purge that is lost in a crash only leaves extra entries behind.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};

use super::codec::{decode, encode, index_key};
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
    /// sled's data file, when appends are also `fdatasync`ed.
    fsync: Option<std::sync::Arc<std::fs::File>>,
    log: sled::Tree,
    meta: sled::Tree,
}

fn io<E: std::error::Error + 'static>(
    f: fn(AnyError) -> StorageIOError<u64>,
) -> impl FnOnce(E) -> StorageError {
    move |e| f(AnyError::new(&e)).into()
}

impl LogStore {
    pub(crate) fn open(db: sled::Db, fsync: Option<std::fs::File>) -> StoreResult<Self> {
        Ok(LogStore {
            fsync: fsync.map(std::sync::Arc::new),
            log: db
                .open_tree("raft_log")
                .map_err(StoreError::sled("open tree"))?,
            meta: db
                .open_tree("raft_meta")
                .map_err(StoreError::sled("open tree"))?,
            db,
        })
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

    fn last_purged(&self) -> StoreResult<Option<LogId>> {
        self.get_meta("last purged log id", LAST_PURGED)
    }

    fn entries(&self, from: Bound<u64>, to: Bound<u64>) -> StoreResult<Vec<Entry>> {
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

    /// sled's flush, then (when configured) an `fdatasync` of its data file.
    ///
    /// Runs on the calling task: raft waits for it before doing anything else (openraft 0.9
    /// awaits every append and vote in its core task), so handing it to another thread would
    /// only add two thread hops to every commit.
    fn make_durable(&self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        if let Some(f) = &self.fsync {
            f.sync_data()?;
        }
        Ok(())
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
            None => last_purged_log_id,
        };
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
        // Record the purge point first: entries at or below it are never read again.
        let bytes =
            encode("last purged log id", &log_id).map_err(io(StorageIOError::write_logs))?;
        self.meta
            .insert(LAST_PURGED, bytes)
            .map_err(io(StorageIOError::write_logs))?;
        // In bounded batches: one huge sled batch holds every removed page in memory.
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.log.range(..=index_key(log_id.index)).take(PURGE_BATCH) {
                let (k, _) = kv.map_err(io(StorageIOError::write_logs))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.log
                .apply_batch(batch)
                .map_err(io(StorageIOError::write_logs))?;
            if n == PURGE_BATCH {
                self.db
                    .flush_async()
                    .await
                    .map_err(io(StorageIOError::write_logs))?;
            }
        }
        Ok(())
    }
}
