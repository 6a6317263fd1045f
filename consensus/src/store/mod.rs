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
pub mod handoffs;
pub mod log;
pub mod snapshot;
pub mod state_machine;

use std::path::Path;

pub use log::LogStore;
pub use state_machine::StateMachineStore;

use crate::error::{StoreError, StoreResult};

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache in bytes, shared by the two databases: a quarter for the log, the
    /// rest for the state machine (sled's own default is 1 GiB per database; ire's is 64 MiB
    /// in all).
    pub cache_capacity: u64,
    /// How often sled flushes in the background, in milliseconds (None: only the store's
    /// own flushes). Log appends and votes are flushed before they are acknowledged
    /// whatever this says.
    pub flush_every_ms: Option<u64>,
    /// After sled's flush of a log append or a vote, also `fdatasync` sled's data file.
    ///
    /// On Linux sled's flush writes with `sync_file_range`, which waits for the data to
    /// reach the device but neither flushes the device's write cache nor the file's
    /// metadata; sled's background flush (`flush_every_ms`) does a full `fsync`. With this
    /// set, an acknowledged append survives a power loss at once, at the price of one
    /// `fdatasync` per append batch (see `docs/benchmarks.md` for both figures).
    pub fsync_log: bool,
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
            fsync_log: false,
        }
    }
}

impl StoreOptions {
    /// Sets sled's cache capacity in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Sets whether log appends and votes are also `fdatasync`ed (see [`StoreOptions::fsync_log`]).
    pub fn fsync_log(mut self, yes: bool) -> Self {
        self.fsync_log = yes;
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
    let fsync = if opts.fsync_log {
        let file = dir.join(LOG_DB_DIR).join("db");
        // fsync acts on the file, whichever descriptor asks: this one flushes sled's writes.
        Some(
            std::fs::File::open(&file)
                .map_err(|source| StoreError::SnapshotIo { path: file, source })?,
        )
    } else {
        None
    };
    let log = LogStore::open(log_db, fsync)?;
    let sm = StateMachineStore::open(state_db, dir.join("snapshots"))?;
    Ok((log, sm))
}
