//! The sled store: the raft log ([`LogStore`]) and the state machine
//! ([`StateMachineStore`]), implementing openraft's storage-v2 traits directly.
//!
//! Each has its own sled database under the node's data directory (`<dir>/raft-log` and
//! `<dir>/state`); snapshots are files in `<dir>/snapshots`. See `docs/consensus.md` for the
//! trees, the durability points and the snapshot and purge policy.
//!
//! Why two databases: sled writes out (and `sync_file_range`s) its current I/O buffer twice
//! for every transaction or batch, before and after it, and a flush waits for every earlier
//! buffer of its database. In one database, the state machine's transaction for entry N put
//! two synchronous buffer writes ahead of the flush of entry N+1 on every node; apart, the log
//! flush waits for log writes only (measured in `docs/benchmarks.md`).

pub mod codec;
pub mod durable;
pub mod export;
pub mod handoffs;
pub mod log;
pub mod snapshot;
pub mod state_machine;

use std::path::Path;

pub use durable::Durability;
pub use log::LogStore;
pub use state_machine::StateMachineStore;

use crate::error::{StoreError, StoreResult};
use durable::DbSync;

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache in bytes, shared by the two databases: a quarter for the log, the
    /// rest for the state machine (sled's own default is 1 GiB per database; ire's is 64 MiB
    /// in all).
    pub cache_capacity: u64,
    /// How often sled flushes in the background, in milliseconds (None: only the store's
    /// own flushes). Log appends and votes are made durable before they are acknowledged
    /// whatever this says.
    pub flush_every_ms: Option<u64>,
    /// What an acknowledged log append or vote survives, and what the state machine's
    /// database is synced to before the log below a snapshot is removed.
    ///
    /// [`Durability::Sync`] (the default): sled's flush, then `fdatasync` of sled's data file
    /// and of the blob files it wrote: survives a power loss. [`Durability::Relaxed`]:
    /// sled's flush only (`pwrite` + `sync_file_range` on Linux): survives a process crash,
    /// not a power loss. See `docs/consensus.md` ("Durability") and `docs/benchmarks.md`
    /// for the cost.
    pub durability: Durability,
}

/// The raft log's sled database, under the data directory.
pub const LOG_DB_DIR: &str = "raft-log";
/// The state machine's sled database, under the data directory.
pub const STATE_DB_DIR: &str = "state";
/// Where earlier builds kept both in one database.
const OLD_DB_DIR: &str = "sled";

/// ire's default sled cache: small, the state machine's tables live on disk.
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            flush_every_ms: Some(500),
            durability: Durability::Sync,
        }
    }
}

impl StoreOptions {
    /// Sets sled's cache capacity in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Sets what an acknowledged append survives (see [`StoreOptions::durability`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// Opens (or creates) the store in `dir`: the raft log and the state machine.
///
/// A snapshot install interrupted by a crash is completed here, from the snapshot file.
/// Only one process may have a directory open; the handles are cheap to clone and each
/// database closes when the last handle on it is dropped. A directory in the layout of
/// earlier builds (one `sled/` database) is refused with [`StoreError::OldLayout`].
pub fn open(dir: &Path, opts: StoreOptions) -> StoreResult<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::SnapshotIo {
        path: dir.to_owned(),
        source,
    })?;
    if dir.join(OLD_DB_DIR).exists() {
        return Err(StoreError::OldLayout {
            path: dir.to_owned(),
        });
    }
    // One cache budget for both: the log is read near its tail (replication, recent
    // entries), the state machine's tables everywhere.
    let log_cache = opts.cache_capacity / 4;
    let open_db = |name: &str, cache: u64| {
        sled::Config::new()
            .path(dir.join(name))
            .cache_capacity(cache)
            .flush_every_ms(opts.flush_every_ms)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.join(name),
                source,
            })
    };
    let log_db = open_db(LOG_DB_DIR, log_cache)?;
    let state_db = open_db(STATE_DB_DIR, opts.cache_capacity - log_cache)?;
    let syncer = |db: &sled::Db, name: &str| {
        let path = dir.join(name);
        DbSync::new(db.clone(), &path, opts.durability)
            .map_err(|source| StoreError::SnapshotIo { path, source })
    };
    let log = LogStore::open(log_db.clone(), syncer(&log_db, LOG_DB_DIR)?)?;
    let sm = StateMachineStore::open(
        state_db.clone(),
        dir.join("snapshots"),
        syncer(&state_db, STATE_DB_DIR)?,
        log.purger(),
    )?;
    Ok((log, sm))
}
